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

namespace cp2::compute::wino {

#ifndef CP2_WINO_AVX2

bool cpu_supported() { return false; }
void input_tiles(const float*, const Geometry&, int64_t, float*, int64_t, int64_t, int64_t) {}
void output_tiles(const float*, int64_t, const Geometry&, int64_t, float*, int64_t, int64_t) {}
void grad_output_tiles(const float*, const Geometry&, int64_t, float*, int64_t, int64_t, int64_t) {}
void weight_tiles(int64_t, const float*, bool, int64_t, bool, float*, int64_t, int64_t, int64_t) {}
void weight_grad(int64_t, const float*, int64_t, int64_t, int64_t, float*, bool, int64_t, int64_t) {}

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

// F(4×4, 3×3): Bᵀ (input, 6 → 6), Aᵀ (output, 6 → 4), A (its transpose, 4 → 6), G (filter,
// 3 → 6) and Gᵀ (its transpose, 6 → 3) along one axis.
struct F43 {
  static constexpr int M = 4, N = 6;
  // Bᵀ applied to six values: the input transform along one axis.
  static void bt(const v8* d, v8* r) {
    const v8 k4 = splat(4.f), k5 = splat(5.f), k2 = splat(2.f);
    r[0] = k4 * d[0] - k5 * d[2] + d[4];
    r[1] = -k4 * (d[1] + d[2]) + d[3] + d[4];
    r[2] = k4 * (d[1] - d[2]) - d[3] + d[4];
    r[3] = k2 * (d[3] - d[1]) - d[2] + d[4];
    r[4] = k2 * (d[1] - d[3]) - d[2] + d[4];
    r[5] = k4 * d[1] - k5 * d[3] + d[5];
  }

  // Aᵀ applied to six values: four outputs.
  static void at(const v8* m, v8* o) {
    const v8 k2 = splat(2.f), k4 = splat(4.f), k8 = splat(8.f);
    const v8 p12 = m[1] + m[2], m12 = m[1] - m[2], p34 = m[3] + m[4], m34 = m[3] - m[4];
    o[0] = m[0] + p12 + p34;
    o[1] = m12 + k2 * m34;
    o[2] = p12 + k4 * p34;
    o[3] = m12 + k8 * m34 + m[5];
  }

  // A applied to four values: six outputs (the transpose of at()).
  static void a(const v8* g, v8* z) {
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
  static void gm(const v8* g, v8* r) {
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
  static void gt(const v8* d, v8* s) {
    const v8 k4 = splat(1.f / 4), k6 = splat(1.f / 6), k12 = splat(1.f / 12), k24 = splat(1.f / 24);
    const v8 p34 = d[3] + d[4], m34 = d[3] - d[4], p12 = d[1] + d[2];
    s[0] = k4 * d[0] - k6 * p12 + k24 * p34;
    s[1] = k6 * (d[2] - d[1]) + k12 * m34;
    s[2] = k6 * (p34 - p12) + d[5];
  }
};

// F(3×3, 3×3), points 0, 1, −1, 2, ∞: Bᵀ, Aᵀ, A, G, Gᵀ as above (derived as Lavin & Gray's
// construction; exact in rationals, checked on random integers).
struct F33 {
  static constexpr int M = 3, N = 5;
  static void bt(const v8* d, v8* r) {
    const v8 k2 = splat(2.f), k3 = splat(3.f);
    r[0] = k2 * (d[0] - d[2]) - d[1] + d[3];
    r[1] = -k2 * d[1] - d[2] + d[3];
    r[2] = k2 * d[1] - k3 * d[2] + d[3];
    r[3] = d[3] - d[1];
    r[4] = k2 * (d[1] - d[3]) - d[2] + d[4];
  }
  static void at(const v8* m, v8* o) {
    const v8 k2 = splat(2.f), k4 = splat(4.f);
    const v8 p12 = m[1] + m[2];
    o[0] = m[0] + p12 + m[3];
    o[1] = m[1] - m[2] + k2 * m[3];
    o[2] = p12 + k4 * m[3] + m[4];
  }
  static void a(const v8* g, v8* z) {
    const v8 k2 = splat(2.f), k4 = splat(4.f);
    const v8 p02 = g[0] + g[2];
    z[0] = g[0];
    z[1] = p02 + g[1];
    z[2] = p02 - g[1];
    z[3] = g[0] + k2 * g[1] + k4 * g[2];
    z[4] = g[2];
  }
  static void gm(const v8* g, v8* r) {
    const v8 k2 = splat(1.f / 2), k6 = splat(1.f / 6), k3 = splat(1.f / 3), k23 = splat(2.f / 3);
    r[0] = k2 * g[0];
    r[1] = -k2 * (g[0] + g[1] + g[2]);
    r[2] = k6 * (g[1] - g[0] - g[2]);
    r[3] = k6 * g[0] + k3 * g[1] + k23 * g[2];
    r[4] = g[2];
  }
  static void gt(const v8* d, v8* s) {
    const v8 k2 = splat(1.f / 2), k6 = splat(1.f / 6), k3 = splat(1.f / 3), k23 = splat(2.f / 3);
    s[0] = k2 * (d[0] - d[1]) + k6 * (d[3] - d[2]);
    s[1] = k6 * d[2] - k2 * d[1] + k3 * d[3];
    s[2] = k23 * d[3] - k2 * d[1] - k6 * d[2] + d[4];
  }
};

// A tile: its image, phase (py, px) and first output pixel (y0, x0) in sub-grid coordinates.
struct Tile {
  int64_t b, py, px, y0, x0;
};

inline Tile tile_of(const Geometry& g, int64_t t) {
  const int64_t tw = g.tiles_w(), th = g.tiles_h();
  const int64_t s = t / (th * tw);  // (b·d + py)·d + px
  return {s / (g.d * g.d), s / g.d % g.d, s % g.d, (t / tw) % th * g.m, t % tw * g.m};
}

// The offsets in floats (c channels a pixel) from the image's first of tile tl's K×K sub-grid
// pixels from (y0 + off, x0 + off), −1 for those outside the image: made once per tile, read
// for each group of 8 channels.
template <int K>
void patch_offsets(const Geometry& g, const Tile& tl, int64_t off, int64_t c, int64_t (&ofs)[K][K]) {
  for (int i = 0; i < K; ++i)
    for (int j = 0; j < K; ++j) {
      const int64_t yy = tl.y0 + off + i, xx = tl.x0 + off + j;
      // Inside the image, not only the sub-grid: a phase may have a row or column less.
      const bool inside = yy >= 0 && yy * g.d + tl.py < g.h && xx >= 0 && xx * g.d + tl.px < g.w;
      ofs[i][j] = inside ? ((yy * g.d + tl.py) * g.w + xx * g.d + tl.px) * c : -1;
    }
}

// The K×K patches of image x (NHWC, c channels) that begin `off` pixels before each tile,
// zero outside the image, through the 1-D transform `f` (K → N values) along both axes: the
// N² planes of v. Inputs (Bᵀ d B: K = N, off −1) and output gradients (A dY Aᵀ: K = M, off 0).
template <int K, int N, class F>
void patch_tiles(const float* x, const Geometry& g, int64_t c, int64_t off, F f, float* v, int64_t plane, int64_t t0,
                 int64_t t1) {
  const v8 zero = splat(0.f);
  for (int64_t t = t0; t < t1; ++t) {
    const Tile tl = tile_of(g, t);
    const float* img = x + tl.b * g.h * g.w * c;
    int64_t ofs[K][K];
    patch_offsets(g, tl, off, c, ofs);
    float* out = v + t * c;
    for (int64_t c0 = 0; c0 < c; c0 += 8) {
      v8 tmp[N][K];  // tmp[i][j] = (f along the columns)[i][j]
      for (int j = 0; j < K; ++j) {
        v8 col[K], r[N];
        for (int i = 0; i < K; ++i) col[i] = ofs[i][j] >= 0 ? load(img + ofs[i][j] + c0) : zero;
        f(col, r);
        for (int i = 0; i < N; ++i) tmp[i][j] = r[i];
      }
      for (int i = 0; i < N; ++i) {
        v8 r[N];
        f(tmp[i], r);
        for (int j = 0; j < N; ++j) store(out + (N * i + j) * plane + c0, r[j]);
      }
    }
  }
}

template <class S>
void input_tiles_t(const float* x, const Geometry& g, int64_t c, float* v, int64_t plane, int64_t t0, int64_t t1) {
  // A lambda (its own type) rather than a function pointer, so that the transform inlines.
  patch_tiles<S::N, S::N>(x, g, c, -1, [](const v8* d, v8* r) { S::bt(d, r); }, v, plane, t0, t1);
}

template <class S>
void output_tiles_t(const float* m, int64_t plane, const Geometry& g, int64_t k, float* y, int64_t t0, int64_t t1) {
  constexpr int N = S::N, M = S::M;
  for (int64_t t = t0; t < t1; ++t) {
    const Tile tl = tile_of(g, t);
    float* img = y + tl.b * g.h * g.w * k;
    int64_t ofs[M][M];
    patch_offsets(g, tl, 0, k, ofs);
    const float* in = m + t * k;
    for (int64_t k0 = 0; k0 < k; k0 += 8) {
      v8 tmp[M][N];  // tmp[i][j] = (Aᵀ M)[i][j]
      for (int j = 0; j < N; ++j) {
        v8 col[N], r[M];
        for (int i = 0; i < N; ++i) col[i] = load(in + (N * i + j) * plane + k0);
        S::at(col, r);
        for (int i = 0; i < M; ++i) tmp[i][j] = r[i];
      }
      for (int i = 0; i < M; ++i) {
        if (ofs[i][0] < 0) break;  // the tile's rows past the image
        v8 r[M];
        S::at(tmp[i], r);
        for (int j = 0; j < M && ofs[i][j] >= 0; ++j) store(img + ofs[i][j] + k0, r[j]);
      }
    }
  }
}

template <class S>
void grad_output_tiles_t(const float* dy, const Geometry& g, int64_t k, float* z, int64_t plane, int64_t t0,
                         int64_t t1) {
  patch_tiles<S::M, S::N>(dy, g, k, 0, [](const v8* d, v8* r) { S::a(d, r); }, z, plane, t0, t1);
}

template <class S>
void weight_tiles_t(const float* w, bool ohwi, int64_t c, bool flip, float* u, int64_t plane, int64_t o0, int64_t o1) {
  constexpr int N = S::N, P = N * N;
  // 64 channels at a time into a buffer, then to the P planes as runs of 4 cache lines:
  // 36 interleaved streams of one 32-byte store each wrote at a third of the bandwidth.
  constexpr int64_t kBlock = 64;
  alignas(64) float buf[P][kBlock];
  alignas(64) float taps[9][kBlock];  // OIHW filters of the block, turned to [tap][channel]
  const bool nt = double(P) * plane * sizeof(float) > kStreamBytes && aligned32(u) && plane % 8 == 0;
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
        v8 tmp[N][3];  // (G g)[i][b]
        for (int b = 0; b < 3; ++b) {
          const v8 col[3] = {g[0][b], g[1][b], g[2][b]};
          v8 r[N];
          S::gm(col, r);
          for (int i = 0; i < N; ++i) tmp[i][b] = r[i];
        }
        for (int i = 0; i < N; ++i) {
          v8 r[N];
          S::gm(tmp[i], r);
          for (int j = 0; j < N; ++j) store(&buf[N * i + j][k], r[j]);
        }
      }
      for (int x = 0; x < P; ++x) {
        float* p = u + x * plane + oi * c + cb;
        if (nt)
          for (int64_t k = 0; k < n; k += 8) store_nt(p + k, load(&buf[x][k]));
        else
          for (int64_t k = 0; k < n; k += 8) store(p + k, load(&buf[x][k]));
      }
    }
  if (nt) _mm_sfence();  // the GEMMs on other threads read u next
}

template <class S>
void weight_grad_t(const float* du, int64_t plane, int64_t o, int64_t c, float* dw, bool ohwi, int64_t o0,
                   int64_t o1) {
  constexpr int N = S::N, P = N * N;
  // 256 channels of each of the P planes read into a buffer as runs of 16 cache lines, then
  // transformed: 30 → 25 ms at 2560→512 channels (F(4×4), AMD Zen 4, 2 threads); still a
  // third of the read bandwidth (36 streams), and storing dU as [O][36][C] instead did not
  // time faster in the whole convolution.
  constexpr int64_t kBlock = 256;
  alignas(64) float buf[P][kBlock];
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
      for (int x = 0; x < P; ++x) {
        const float* p = du + x * plane + oi * c + cb;
        for (int64_t k = 0; k < n; k += 8) store(&buf[x][k], load(p + k));
      }
      for (int64_t k = 0; k < n; k += 8) {
        v8 tmp[3][N];  // (Gᵀ dU)[a][j]
        for (int j = 0; j < N; ++j) {
          v8 col[N], r[3];
          for (int i = 0; i < N; ++i) col[i] = load(&buf[N * i + j][k]);
          S::gt(col, r);
          for (int a = 0; a < 3; ++a) tmp[a][j] = r[a];
        }
        for (int a = 0; a < 3; ++a) {
          v8 r[3];
          S::gt(tmp[a], r);
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

}  // namespace

bool cpu_supported() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

// Each entry point runs the transforms of its tile size (Geometry::m, or `m`).
void input_tiles(const float* x, const Geometry& g, int64_t c, float* v, int64_t plane, int64_t t0, int64_t t1) {
  (g.m == 3 ? input_tiles_t<F33> : input_tiles_t<F43>)(x, g, c, v, plane, t0, t1);
}

void output_tiles(const float* m, int64_t plane, const Geometry& g, int64_t k, float* y, int64_t t0, int64_t t1) {
  (g.m == 3 ? output_tiles_t<F33> : output_tiles_t<F43>)(m, plane, g, k, y, t0, t1);
}

void grad_output_tiles(const float* dy, const Geometry& g, int64_t k, float* z, int64_t plane, int64_t t0,
                       int64_t t1) {
  (g.m == 3 ? grad_output_tiles_t<F33> : grad_output_tiles_t<F43>)(dy, g, k, z, plane, t0, t1);
}

void weight_tiles(int64_t m, const float* w, bool ohwi, int64_t c, bool flip, float* u, int64_t plane, int64_t o0,
                  int64_t o1) {
  (m == 3 ? weight_tiles_t<F33> : weight_tiles_t<F43>)(w, ohwi, c, flip, u, plane, o0, o1);
}

void weight_grad(int64_t m, const float* du, int64_t plane, int64_t o, int64_t c, float* dw, bool ohwi, int64_t o0,
                 int64_t o1) {
  (m == 3 ? weight_grad_t<F33> : weight_grad_t<F43>)(du, plane, o, c, dw, ohwi, o0, o1);
}

#endif

}  // namespace cp2::compute::wino
