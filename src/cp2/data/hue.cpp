#include "cp2/data/hue.h"

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <memory>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "cp2/data/augment.h"
#include "cp2/data/simd.h"

namespace cp2::data {

namespace {

int clip8(int v) { return v < 0 ? 0 : (v > 255 ? 255 : v); }
int iround(double v) { return static_cast<int>(v + 0.5); }  // v >= 0: C's round()
// The 8-bit value of a channel in [0, 1], rounded (clamped first, NaN as 1: as min then max
// with the SIMD instructions below, whose result is their second operand where one is NaN).
int to_u8(float v) {
  float c = v < 1.f ? v : 1.f;
  c = c > 0.f ? c : 0.f;
  return static_cast<int>(c * 255.f + 0.5f);
}

// rgb2hsv's hue byte, before the shift, of a pixel that is not grey (mx > mn). It depends on
// the channels' distances below the maximum only, not on the maximum itself: the tables
// below are filled from pixels whose maximum is 255.
uint8_t hue_byte(int r, int g, int b, int mx, int mn) {
  const float cr = static_cast<float>(mx - mn);
  const float rc = (mx - r) / cr, gc = (mx - g) / cr, bc = (mx - b) / cr;
  float h = r == mx ? bc - gc : (g == mx ? 2.0f + rc - bc : 4.0f + gc - rc);
  const double hd = h / 6.0 + 1.0;  // in (0, 2): fmod(hd, 1) without the libm call
  h = static_cast<float>(hd >= 1.0 ? hd - 1.0 : hd);
  return static_cast<uint8_t>(clip8(static_cast<int>(h * 255.0)));
}

// rgb2hsv's saturation byte of a pixel that is not grey.
uint8_t saturation_byte(int mx, int mn) {
  const float s = static_cast<float>(mx - mn) / static_cast<float>(mx);
  return static_cast<uint8_t>(clip8(static_cast<int>(s * 255.0)));
}

// hsv2rgb's sector of the hue circle and position in it, and the saturation as a fraction.
int hue_sector(uint8_t uh) { return static_cast<int>(static_cast<float>(uh) * 6.0 / 255.0); }  // >= 0: floor
float hue_frac(uint8_t uh) {
  return static_cast<float>(static_cast<float>(uh) * 6.0 / 255.0 - hue_sector(uh));
}
float saturation_frac(int us) { return us / 255.0f; }

// hsv2rgb's four candidate bytes for value v and a saturation byte > 0 (as a fraction fs),
// at position f within the hue's case: {v, p, q, t}.
std::array<uint8_t, 4> hsv_candidates(int v, float f, float fs) {
  return {static_cast<uint8_t>(v), static_cast<uint8_t>(clip8(iround(v * (1.0 - fs)))),
          static_cast<uint8_t>(clip8(iround(v * (1.0 - fs * f)))),
          static_cast<uint8_t>(clip8(iround(v * (1.0 - fs * (1.0 - f)))))};
}

// hsv2rgb's choice among them by the hue's case, written as PIL's switch (the reference).
std::array<uint8_t, 3> hsv_to_rgb(int v, int sector, float f, float fs) {
  const auto [V, p, q, t] = hsv_candidates(v, f, fs);
  switch (sector % 6) {
    case 0: return {V, t, p};
    case 1: return {q, V, p};
    case 2: return {p, V, t};
    case 3: return {p, q, V};
    case 4: return {t, p, V};
    default: return {V, p, q};
  }
}

// The per-pixel work that does not depend on the shift, looked up instead of computed (its
// divisions were most of the op's time, and the op ~45 % of a loader thread's at 224 px):
// 0.25 MiB, filled once from the functions above.
struct HueTables {
  // Hue byte by which channel rgb2hsv found at the maximum (r, else g, else b) and the
  // distances below it of the other two, in the order its formula reads them:
  // [0][mx-g][mx-b], [1][mx-r][mx-b], [2][mx-g][mx-r].
  uint8_t hue[3][256][256];
  uint8_t sat[256][256];  // [mx][mx - mn]
  int sector[256];        // hsv2rgb's case (0-5) by hue byte
  float frac[256];        // by hue byte
  float fs[256];          // by saturation byte
  float out[256];         // byte / 255
};

std::unique_ptr<HueTables> make_tables() {
  auto t = std::make_unique<HueTables>();
  for (int d1 = 0; d1 < 256; ++d1)
    for (int d2 = 0; d2 < 256; ++d2) {
      const int mn = 255 - std::max(d1, d2);
      // Where a channel below the maximum sits at distance 0 (the maximum is shared), an
      // earlier channel in the order of tests is the maximum: the entry is never read.
      t->hue[0][d1][d2] = mn < 255 ? hue_byte(255, 255 - d1, 255 - d2, 255, mn) : 0;
      t->hue[1][d1][d2] = mn < 255 && d1 > 0 ? hue_byte(255 - d1, 255, 255 - d2, 255, mn) : 0;
      t->hue[2][d1][d2] = mn < 255 && d1 > 0 && d2 > 0 ? hue_byte(255 - d2, 255 - d1, 255, 255, mn) : 0;
      t->sat[d1][d2] = d2 > 0 && d2 <= d1 ? saturation_byte(d1, d1 - d2) : 0;
    }
  for (int k = 0; k < 256; ++k) {
    t->sector[k] = hue_sector(static_cast<uint8_t>(k)) % 6;  // 6 at byte 255: hsv2rgb's case 0
    t->frac[k] = hue_frac(static_cast<uint8_t>(k));
    t->fs[k] = saturation_frac(k);
    t->out[k] = static_cast<float>(k) / 255.f;
  }
  return t;
}

const HueTables& tables() {
  static const std::unique_ptr<HueTables> t = make_tables();  // thread-safe once (C++11 statics)
  return *t;
}

// hsv2rgb's six cases as which of (v, p, q, t) each channel takes: an index, not a branch
// whose outcome changes with the pixel's hue.
constexpr uint8_t kPick[6][3] = {{0, 3, 1}, {2, 0, 1}, {1, 0, 3}, {1, 2, 0}, {3, 1, 0}, {0, 1, 2}};

// The op on pixels [from, n) of three channel planes, one at a time: the tables read, p, q
// and t computed, the case picked by index.
void hue_pixels(const HueTables& T, float* R, float* G, float* B, int64_t from, int64_t n, uint8_t dh) {
  for (int64_t i = from; i < n; ++i) {
    const int r = to_u8(R[i]), g = to_u8(G[i]), b = to_u8(B[i]);
    const int mx = std::max({r, g, b}), mn = std::min({r, g, b});
    const int us = T.sat[mx][mx - mn];  // 0 for a grey pixel, and for some nearly grey ones
    const int c = r == mx ? 0 : (g == mx ? 1 : 2);
    const uint8_t h = T.hue[c][c == 1 ? mx - r : mx - g][c == 2 ? mx - r : mx - b];
    const auto uh = static_cast<uint8_t>(h + dh);
    const auto o = hsv_candidates(mx, T.frac[uh], T.fs[us]);
    const uint8_t* k = kPick[T.sector[uh]];
    const bool grey = us == 0;
    R[i] = T.out[grey ? mx : o[k[0]]];
    G[i] = T.out[grey ? mx : o[k[1]]];
    B[i] = T.out[grey ? mx : o[k[2]]];
  }
}

#if defined(__x86_64__)
// The 8-bit values of eight channels in [0, 1] (to_u8).
CP2_AVX2 inline __m256i u8x8(__m256 v) {
  const __m256 c = _mm256_max_ps(_mm256_min_ps(v, _mm256_set1_ps(1.f)), _mm256_setzero_ps());
  return _mm256_cvttps_epi32(_mm256_add_ps(_mm256_mul_ps(c, _mm256_set1_ps(255.f)), _mm256_set1_ps(0.5f)));
}

// clip8(iround(v * x)) on four lanes in double, as hsv_candidates.
CP2_AVX2 inline __m128i round_times(__m256d v, __m256d x) {
  const __m128i r = _mm256_cvttpd_epi32(_mm256_add_pd(_mm256_mul_pd(v, x), _mm256_set1_pd(0.5)));
  return _mm_min_epi32(_mm_max_epi32(r, _mm_setzero_si128()), _mm_set1_epi32(255));
}

// Lane k's half (k = 0: lanes 0-3) of eight floats or ints.
CP2_AVX2 inline __m128 half_ps(__m256 x, int k) { return k ? _mm256_extractf128_ps(x, 1) : _mm256_castps256_ps128(x); }
CP2_AVX2 inline __m128i half_si(__m256i x, int k) {
  return k ? _mm256_extracti128_si256(x, 1) : _mm256_castsi256_si128(x);
}

// The channel's byte by hsv2rgb's case: by_case[k] where the lane's case is k.
CP2_AVX2 inline __m256i by_case(const __m256i (&c)[6], const __m256i (&is)[6]) {
  __m256i o = c[5];
  for (int k = 0; k < 5; ++k) o = _mm256_blendv_epi8(o, c[k], is[k]);
  return o;
}

// hue_pixels eight at a time, the same operations lane by lane (IEEE-exact: the products,
// sums, conversions and the division by 255 round as the scalar ones; no FMA in this target,
// so none is contracted). Returns how many pixels it did (a multiple of 8).
CP2_AVX2 int64_t hue_pixels_avx2(const HueTables& T, float* R, float* G, float* B, int64_t n, uint8_t dh) {
  const __m256i byte = _mm256_set1_epi32(0xFF), z = _mm256_setzero_si256(), ones = _mm256_cmpeq_epi32(z, z);
  const __m256d one = _mm256_set1_pd(1.0);
  // The byte tables are read 4 bytes at a time; what follows each in HueTables pads it.
  const auto* hue = reinterpret_cast<const int*>(&T.hue[0][0][0]);
  const auto* sat = reinterpret_cast<const int*>(&T.sat[0][0]);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i r = u8x8(_mm256_loadu_ps(R + i)), g = u8x8(_mm256_loadu_ps(G + i)), b = u8x8(_mm256_loadu_ps(B + i));
    const __m256i mx = _mm256_max_epi32(_mm256_max_epi32(r, g), b), mn = _mm256_min_epi32(_mm256_min_epi32(r, g), b);
    const __m256i us = _mm256_and_si256(
        _mm256_i32gather_epi32(sat, _mm256_add_epi32(_mm256_slli_epi32(mx, 8), _mm256_sub_epi32(mx, mn)), 1), byte);
    // Which channel rgb2hsv finds at the maximum, and the table's distances (hue_pixels' c, d1, d2).
    const __m256i is_r = _mm256_cmpeq_epi32(r, mx);
    const __m256i is_g = _mm256_andnot_si256(is_r, _mm256_cmpeq_epi32(g, mx));
    const __m256i is_b = _mm256_andnot_si256(_mm256_or_si256(is_r, is_g), ones);
    const __m256i d1 = _mm256_blendv_epi8(_mm256_sub_epi32(mx, g), _mm256_sub_epi32(mx, r), is_g);
    const __m256i d2 = _mm256_blendv_epi8(_mm256_sub_epi32(mx, b), _mm256_sub_epi32(mx, r), is_b);
    const __m256i c = _mm256_or_si256(_mm256_and_si256(is_g, _mm256_set1_epi32(1 << 16)),
                                      _mm256_and_si256(is_b, _mm256_set1_epi32(2 << 16)));
    const __m256i h = _mm256_and_si256(
        _mm256_i32gather_epi32(hue, _mm256_add_epi32(c, _mm256_add_epi32(_mm256_slli_epi32(d1, 8), d2)), 1), byte);
    const __m256i uh = _mm256_and_si256(_mm256_add_epi32(h, _mm256_set1_epi32(dh)), byte);
    const __m256i sector = _mm256_i32gather_epi32(T.sector, uh, 4);
    const __m256 f = _mm256_i32gather_ps(T.frac, uh, 4), fs = _mm256_i32gather_ps(T.fs, us, 4);
    const __m256 fsf = _mm256_mul_ps(fs, f);  // in float, as hsv_candidates' fs * f
    __m128i p[2], q[2], t[2];
    for (int k = 0; k < 2; ++k) {
      const __m256d v = _mm256_cvtepi32_pd(half_si(mx, k)), fsd = _mm256_cvtps_pd(half_ps(fs, k));
      p[k] = round_times(v, _mm256_sub_pd(one, fsd));
      q[k] = round_times(v, _mm256_sub_pd(one, _mm256_cvtps_pd(half_ps(fsf, k))));
      t[k] = round_times(v, _mm256_sub_pd(one, _mm256_mul_pd(fsd, _mm256_sub_pd(one, _mm256_cvtps_pd(half_ps(f, k))))));
    }
    const __m256i P = _mm256_setr_m128i(p[0], p[1]), Q = _mm256_setr_m128i(q[0], q[1]),
                  Tt = _mm256_setr_m128i(t[0], t[1]);
    __m256i is[6];
    for (int k = 0; k < 6; ++k) is[k] = _mm256_cmpeq_epi32(sector, _mm256_set1_epi32(k));
    // kPick's columns: R takes (v, q, p, p, t, v) by case, G (t, v, v, q, p, p), B (p, p, t, v, v, q).
    const __m256i cr[6] = {mx, Q, P, P, Tt, mx}, cg[6] = {Tt, mx, mx, Q, P, P}, cb[6] = {P, P, Tt, mx, mx, Q};
    const __m256i grey = _mm256_cmpeq_epi32(us, z);
    const __m256 d255 = _mm256_set1_ps(255.f);
    _mm256_storeu_ps(R + i, _mm256_div_ps(_mm256_cvtepi32_ps(_mm256_blendv_epi8(by_case(cr, is), mx, grey)), d255));
    _mm256_storeu_ps(G + i, _mm256_div_ps(_mm256_cvtepi32_ps(_mm256_blendv_epi8(by_case(cg, is), mx, grey)), d255));
    _mm256_storeu_ps(B + i, _mm256_div_ps(_mm256_cvtepi32_ps(_mm256_blendv_epi8(by_case(cb, is), mx, grey)), d255));
  }
  return i;
}

#endif

}  // namespace

uint8_t hue_shift_byte(double shift) { return static_cast<uint8_t>(static_cast<int>(shift * 255.0) & 0xFF); }

std::array<uint8_t, 3> pil_hue_shift(int r, int g, int b, uint8_t dh) {
  const int mx = std::max({r, g, b}), mn = std::min({r, g, b});
  const auto V = static_cast<uint8_t>(mx);
  if (mx == mn) return {V, V, V};
  const auto uh = static_cast<uint8_t>(hue_byte(r, g, b, mx, mn) + dh);
  const int us = saturation_byte(mx, mn);
  if (us == 0) return {V, V, V};
  return hsv_to_rgb(mx, hue_sector(uh), hue_frac(uh), saturation_frac(us));
}

void hue_shift_pixels(float* R, float* G, float* B, int64_t n, double shift, bool simd) {
  const auto& T = tables();
  const uint8_t dh = hue_shift_byte(shift);
  int64_t done = 0;
#if defined(__x86_64__)
  if (simd && has_avx2()) done = hue_pixels_avx2(T, R, G, B, n, dh);
#else
  (void)simd;
#endif
  hue_pixels(T, R, G, B, done, n, dh);
}

void adjust_hue(at::Tensor& img, double shift) {
  check_float_image(img);
  const int64_t n = img.size(1) * img.size(2);
  float* R = img.data_ptr<float>();
  hue_shift_pixels(R, R + n, R + 2 * n, n, shift, /*simd=*/true);
}

}  // namespace cp2::data
