// Kernels of winograd_avx2.h, written with GCC/Clang vector extensions (8 floats = one
// AVX register) and compiled for AVX2 + FMA by the target pragma below; they are called
// only after cpu_supported(). No standard-library headers here: inline functions compiled
// for AVX2 must not be merged with the generic copies other files use (the compiler's own
// <immintrin.h>, for streaming stores, has no generic copies).
#include "cp2/compute/winograd_avx2.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CP2_WINO_AVX2 1
#pragma GCC target("avx2,fma")
#include <immintrin.h>
#endif

namespace cp2::compute::wino43 {

#ifndef CP2_WINO_AVX2

bool cpu_supported() { return false; }
void input_tiles(const float*, const Geometry&, int64_t, float*, int64_t, int64_t, int64_t) {}
void output_tiles(const float*, int64_t, const Geometry&, int64_t, float*, int64_t, int64_t) {}
void grad_output_tiles(const float*, const Geometry&, int64_t, float*, int64_t, int64_t, int64_t) {}
void weight_tiles(const float*, bool, int64_t, int64_t, bool, float*, int64_t, int64_t, int64_t) {}
void weight_grad(const float*, int64_t, int64_t, int64_t, float*, bool, int64_t, int64_t) {}

#else

namespace {

typedef float v8 __attribute__((vector_size(32), aligned(4)));  // unaligned loads and stores

inline v8 load(const float* p) { return *reinterpret_cast<const v8*>(p); }
inline void store(float* p, v8 v) { *reinterpret_cast<v8*>(p) = v; }
inline v8 splat(float f) { return v8{f, f, f, f, f, f, f, f}; }

// The filters' Winograd domain and the weight gradient are written once and read once,
// later, by another pass: past this size they go to memory by streaming stores, past the
// caches (at 2560→512 channels the domain is 189 MB; with ordinary stores its transform ran
// at a third of the memory's write bandwidth, AMD Zen 4: 31 → 11 ms).
constexpr double kStreamBytes = 8.0 * (1 << 20);

inline bool aligned32(const float* p) { return reinterpret_cast<uintptr_t>(p) % 32 == 0; }
inline void store_nt(float* p, v8 v) { _mm256_stream_ps(p, reinterpret_cast<__m256>(v)); }
inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// Bᵀ applied to six values: the input transform along one axis.
inline void bt(const v8 d[6], v8 r[6]) {
  const v8 k4 = splat(4.f), k5 = splat(5.f), k2 = splat(2.f);
  r[0] = k4 * d[0] - k5 * d[2] + d[4];
  r[1] = -k4 * (d[1] + d[2]) + d[3] + d[4];
  r[2] = k4 * (d[1] - d[2]) - d[3] + d[4];
  r[3] = k2 * (d[3] - d[1]) - d[2] + d[4];
  r[4] = k2 * (d[1] - d[3]) - d[2] + d[4];
  r[5] = k4 * d[1] - k5 * d[3] + d[5];
}

// Aᵀ applied to six values: four outputs.
inline void at(const v8 m[6], v8 o[4]) {
  const v8 k2 = splat(2.f), k4 = splat(4.f), k8 = splat(8.f);
  const v8 p12 = m[1] + m[2], m12 = m[1] - m[2], p34 = m[3] + m[4], m34 = m[3] - m[4];
  o[0] = m[0] + p12 + p34;
  o[1] = m12 + k2 * m34;
  o[2] = p12 + k4 * p34;
  o[3] = m12 + k8 * m34 + m[5];
}

// A applied to four values: six outputs (the transpose of at()).
inline void a(const v8 g[4], v8 z[6]) {
  const v8 k2 = splat(2.f), k4 = splat(4.f), k8 = splat(8.f);
  const v8 p02 = g[0] + g[2], p13 = g[1] + g[3];
  const v8 q02 = g[0] + k4 * g[2], q13 = k2 * g[1] + k8 * g[3];
  z[0] = g[0];
  z[1] = p02 + p13;
  z[2] = p02 - p13;
  z[3] = q02 + q13;
  z[4] = q02 - q13;
  z[5] = g[3];
}

// G applied to three values: six outputs (the filter transform along one axis).
inline void gm(const v8 g[3], v8 r[6]) {
  const v8 k4 = splat(1.f / 4), k6 = splat(1.f / 6), k12 = splat(1.f / 12), k24 = splat(1.f / 24);
  const v8 p = k24 * g[0] + k6 * g[2], q = k6 * (g[0] + g[2]);
  r[0] = k4 * g[0];
  r[1] = -q - k6 * g[1];
  r[2] = -q + k6 * g[1];
  r[3] = p + k12 * g[1];
  r[4] = p - k12 * g[1];
  r[5] = g[2];
}

// Gᵀ applied to six values: three outputs (the transpose of gm()).
inline void gt(const v8 d[6], v8 s[3]) {
  const v8 k4 = splat(1.f / 4), k6 = splat(1.f / 6), k12 = splat(1.f / 12), k24 = splat(1.f / 24);
  const v8 p34 = d[3] + d[4], m34 = d[3] - d[4], p12 = d[1] + d[2];
  s[0] = k4 * d[0] - k6 * p12 + k24 * p34;
  s[1] = k6 * (d[2] - d[1]) + k12 * m34;
  s[2] = k6 * (p34 - p12) + d[5];
}

struct Tile {
  int64_t b, y0, x0;
};

inline Tile tile_of(const Geometry& g, int64_t t) {
  const int64_t tw = g.tiles_w(), th = g.tiles_h();
  return {t / (th * tw), (t / tw) % th * 4, t % tw * 4};
}

}  // namespace

bool cpu_supported() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

void input_tiles(const float* x, const Geometry& g, int64_t c, float* v, int64_t plane, int64_t t0, int64_t t1) {
  const v8 zero = splat(0.f);
  for (int64_t t = t0; t < t1; ++t) {
    const Tile tl = tile_of(g, t);
    const float* img = x + tl.b * g.h * g.w * c;
    float* out = v + t * c;
    for (int64_t c0 = 0; c0 < c; c0 += 8) {
      v8 tmp[6][6];  // tmp[i][j] = (Bᵀ d)[i][j]
      for (int j = 0; j < 6; ++j) {
        const int64_t xx = tl.x0 - 1 + j;
        v8 col[6];
        for (int i = 0; i < 6; ++i) {
          const int64_t yy = tl.y0 - 1 + i;
          col[i] = (yy >= 0 && yy < g.h && xx >= 0 && xx < g.w) ? load(img + (yy * g.w + xx) * c + c0) : zero;
        }
        v8 r[6];
        bt(col, r);
        for (int i = 0; i < 6; ++i) tmp[i][j] = r[i];
      }
      for (int i = 0; i < 6; ++i) {
        v8 r[6];
        bt(tmp[i], r);
        for (int j = 0; j < 6; ++j) store(out + (6 * i + j) * plane + c0, r[j]);
      }
    }
  }
}

void output_tiles(const float* m, int64_t plane, const Geometry& g, int64_t k, float* y, int64_t t0, int64_t t1) {
  for (int64_t t = t0; t < t1; ++t) {
    const Tile tl = tile_of(g, t);
    float* img = y + tl.b * g.h * g.w * k;
    const float* in = m + t * k;
    for (int64_t k0 = 0; k0 < k; k0 += 8) {
      v8 tmp[4][6];  // tmp[i][j] = (Aᵀ M)[i][j]
      for (int j = 0; j < 6; ++j) {
        v8 col[6], r[4];
        for (int i = 0; i < 6; ++i) col[i] = load(in + (6 * i + j) * plane + k0);
        at(col, r);
        for (int i = 0; i < 4; ++i) tmp[i][j] = r[i];
      }
      for (int i = 0; i < 4; ++i) {
        const int64_t yy = tl.y0 + i;
        if (yy >= g.h) break;
        v8 r[4];
        at(tmp[i], r);
        for (int j = 0; j < 4 && tl.x0 + j < g.w; ++j) store(img + (yy * g.w + tl.x0 + j) * k + k0, r[j]);
      }
    }
  }
}

void grad_output_tiles(const float* dy, const Geometry& g, int64_t k, float* z, int64_t plane, int64_t t0,
                       int64_t t1) {
  const v8 zero = splat(0.f);
  for (int64_t t = t0; t < t1; ++t) {
    const Tile tl = tile_of(g, t);
    const float* img = dy + tl.b * g.h * g.w * k;
    float* out = z + t * k;
    for (int64_t k0 = 0; k0 < k; k0 += 8) {
      v8 tmp[6][4];  // tmp[i][j] = (A dY)[i][j]
      for (int j = 0; j < 4; ++j) {
        const int64_t xx = tl.x0 + j;
        v8 col[4], r[6];
        for (int i = 0; i < 4; ++i) {
          const int64_t yy = tl.y0 + i;
          col[i] = (yy < g.h && xx < g.w) ? load(img + (yy * g.w + xx) * k + k0) : zero;
        }
        a(col, r);
        for (int i = 0; i < 6; ++i) tmp[i][j] = r[i];
      }
      for (int i = 0; i < 6; ++i) {
        v8 r[6];
        a(tmp[i], r);
        for (int j = 0; j < 6; ++j) store(out + (6 * i + j) * plane + k0, r[j]);
      }
    }
  }
}

void weight_tiles(const float* w, bool ohwi, int64_t o, int64_t c, bool flip, float* u, int64_t plane, int64_t o0,
                  int64_t o1) {
  (void)o;
  // 64 channels at a time into a buffer, then to the 36 planes as runs of 4 cache lines:
  // 36 interleaved streams of one 32-byte store each wrote at a third of the bandwidth.
  constexpr int64_t kBlock = 64;
  alignas(64) float buf[36][kBlock];
  alignas(64) float taps[9][kBlock];  // OIHW filters of the block, turned to [tap][channel]
  const bool nt = 36.0 * plane * sizeof(float) > kStreamBytes && aligned32(u) && plane % 8 == 0;
  for (int64_t oi = o0; oi < o1; ++oi)
    for (int64_t cb = 0; cb < c; cb += kBlock) {
      const int64_t n = min64(kBlock, c - cb);
      if (!ohwi) {
        const float* f = w + (oi * c + cb) * 9;  // n filters of 9 taps, in a row
        for (int64_t k = 0; k < n; ++k)
          for (int tap = 0; tap < 9; ++tap) taps[tap][k] = f[k * 9 + tap];
      }
      for (int64_t k = 0; k < n; k += 8) {
        v8 g[3][3];  // g[a][b], lane l = input channel cb + k + l
        for (int tap = 0; tap < 9; ++tap) {
          const int src = flip ? 8 - tap : tap;
          g[tap / 3][tap % 3] = ohwi ? load(w + (oi * 9 + src) * c + cb + k) : load(&taps[src][k]);
        }
        v8 tmp[6][3];  // (G g)[i][b]
        for (int b = 0; b < 3; ++b) {
          const v8 col[3] = {g[0][b], g[1][b], g[2][b]};
          v8 r[6];
          gm(col, r);
          for (int i = 0; i < 6; ++i) tmp[i][b] = r[i];
        }
        for (int i = 0; i < 6; ++i) {
          v8 r[6];
          gm(tmp[i], r);
          for (int j = 0; j < 6; ++j) store(&buf[6 * i + j][k], r[j]);
        }
      }
      for (int x = 0; x < 36; ++x) {
        float* p = u + x * plane + oi * c + cb;
        if (nt)
          for (int64_t k = 0; k < n; k += 8) store_nt(p + k, load(&buf[x][k]));
        else
          for (int64_t k = 0; k < n; k += 8) store(p + k, load(&buf[x][k]));
      }
    }
  if (nt) _mm_sfence();  // the GEMMs on other threads read u next
}

void weight_grad(const float* du, int64_t plane, int64_t o, int64_t c, float* dw, bool ohwi, int64_t o0, int64_t o1) {
  // 256 channels of each of the 36 planes read into a buffer as runs of 16 cache lines, then
  // transformed: 30 → 25 ms at 2560→512 channels (AMD Zen 4, 2 threads); still a third of
  // the read bandwidth (36 streams), and storing dU as [O][36][C] instead did not time faster
  // in the whole convolution.
  constexpr int64_t kBlock = 256;
  alignas(64) float buf[36][kBlock];
  alignas(64) float out[9 * kBlock];  // OIHW: the block's filters as [channel][tap] (OHWI is written in place)
  const bool nt = 9.0 * o * c * sizeof(float) > kStreamBytes && aligned32(dw);
  auto put = [nt](float* p, v8 v) {
    if (nt)
      store_nt(p, v);
    else
      store(p, v);
  };
  for (int64_t oi = o0; oi < o1; ++oi)
    for (int64_t cb = 0; cb < c; cb += kBlock) {
      const int64_t n = min64(kBlock, c - cb);
      for (int x = 0; x < 36; ++x) {
        const float* p = du + x * plane + oi * c + cb;
        for (int64_t k = 0; k < n; k += 8) store(&buf[x][k], load(p + k));
      }
      for (int64_t k = 0; k < n; k += 8) {
        v8 tmp[3][6];  // (Gᵀ dU)[a][j]
        for (int j = 0; j < 6; ++j) {
          v8 col[6], r[3];
          for (int i = 0; i < 6; ++i) col[i] = load(&buf[6 * i + j][k]);
          gt(col, r);
          for (int a = 0; a < 3; ++a) tmp[a][j] = r[a];
        }
        for (int a = 0; a < 3; ++a) {
          v8 r[3];
          gt(tmp[a], r);
          for (int b = 0; b < 3; ++b) {
            if (ohwi)
              put(dw + (oi * 9 + 3 * a + b) * c + cb + k, r[b]);
            else
              for (int l = 0; l < 8; ++l) out[(k + l) * 9 + 3 * a + b] = r[b][l];
          }
        }
      }
      if (!ohwi) {
        float* p = dw + (oi * c + cb) * 9;  // n filters of 9 taps, in a row (n·9 a multiple of 8)
        for (int64_t i = 0; i < n * 9; i += 8) put(p + i, load(out + i));
      }
    }
  if (nt) _mm_sfence();
}

#endif

}  // namespace cp2::compute::wino43
