// AVX2 throughout (compute/pool_kernels.h); called only after cpu_supported(). No
// standard-library headers here (see compute/winograd_avx2.cpp).
#include "cp2/compute/pool_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CP2_POOL_AVX2 1
#pragma GCC target("avx2")
#include <immintrin.h>
#endif

namespace cp2::compute::poolk {

#ifndef CP2_POOL_AVX2

bool cpu_supported() { return false; }
void max_pool3x3s2(const float*, int64_t, int64_t, float*, int64_t*) {}

#else

bool cpu_supported() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2");
}

namespace {

// PyTorch's scan (aten/src/ATen/native/cpu/MaxPoolKernel.cpp, cpu_max_pool): the maximum
// starts at -inf with the window's first position, and a value takes it where it is greater
// or NaN.
inline bool takes(float v, float m) { return v > m || v != v; }

// The rows (or columns) [b, e) of n that output o's window reads: 2·o - 1 .. 2·o + 1, clipped.
inline void window(int64_t o, int64_t n, int64_t& b, int64_t& e) {
  b = o * 2 - 1 < 0 ? 0 : o * 2 - 1;
  e = o * 2 + 2 < n ? o * 2 + 2 : n;
}

// One output (oh, ow) the scalar way: the image's edges, and the columns no vector block covers.
inline void one(const float* x, int64_t h, int64_t w, int64_t oh, int64_t ow, float* y, int64_t* idx) {
  int64_t r0, r1, c0, c1;
  window(oh, h, r0, r1);
  window(ow, w, c0, c1);
  float m = -__builtin_inff();
  int64_t at = r0 * w + c0;
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t c = c0; c < c1; ++c)
      if (takes(x[r * w + c], m)) {
        m = x[r * w + c];
        at = r * w + c;
      }
  *y = m;
  if (idx) *idx = at;
}

// The even- and odd-indexed values of p[0..15], 8 each in order.
inline __m256 evens(const float* p) {
  const __m256 t = _mm256_shuffle_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8), _MM_SHUFFLE(2, 0, 2, 0));
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), _MM_SHUFFLE(3, 1, 2, 0)));
}
inline __m256 odds(const float* p) {
  const __m256 t = _mm256_shuffle_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8), _MM_SHUFFLE(3, 1, 3, 1));
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), _MM_SHUFFLE(3, 1, 2, 0)));
}

// Where v takes the maximum m (greater, or NaN), m and its position i follow it.
inline void take(__m256 v, __m256i vi, __m256& m, __m256i& i) {
  const __m256 t = _mm256_or_ps(_mm256_cmp_ps(v, m, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  m = _mm256_blendv_ps(m, v, t);
  i = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(i), _mm256_castsi256_ps(vi), t));
}

// Outputs ow0..ow0+7 of row oh (ow0 >= 1, columns 2·ow0 - 1 .. 2·ow0 + 15 inside the row):
// each row's window columns in scan order (2·ow - 1, 2·ow, 2·ow + 1), then the rows in order,
// so the first of equal maxima and the last NaN win as in the scalar scan.
inline void block(const float* x, int64_t h, int64_t w, int64_t oh, int64_t ow0, float* y, int64_t* idx) {
  int64_t r0, r1;
  window(oh, h, r0, r1);
  const __m256i lanes = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14), one = _mm256_set1_epi32(1);
  __m256 m = _mm256_set1_ps(-__builtin_inff());
  __m256i at = _mm256_setzero_si256();
  for (int64_t r = r0; r < r1; ++r) {
    const float* row = x + r * w + ow0 * 2;
    const __m256i base = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(r * w + ow0 * 2)), lanes);
    __m256 rm = evens(row - 1);
    __m256i ri = _mm256_sub_epi32(base, one);
    take(evens(row), base, rm, ri);
    take(odds(row), _mm256_add_epi32(base, one), rm, ri);
    if (r == r0) {
      m = rm;
      at = ri;
    } else {
      take(rm, ri, m, at);
    }
  }
  _mm256_storeu_ps(y + ow0, m);
  if (idx) {
    auto* out = reinterpret_cast<__m256i*>(idx + ow0);
    _mm256_storeu_si256(out, _mm256_cvtepi32_epi64(_mm256_castsi256_si128(at)));
    _mm256_storeu_si256(out + 1, _mm256_cvtepi32_epi64(_mm256_extracti128_si256(at, 1)));
  }
}

}  // namespace

void max_pool3x3s2(const float* x, int64_t h, int64_t w, float* y, int64_t* idx) {
  const int64_t ho = (h - 1) / 2 + 1, wo = (w - 1) / 2 + 1;
  // Vector blocks start at 1 (column -1 is padding) and end where their 16 + 1 columns fit:
  // the last at `last`, overlapping the one before it (the same values written twice).
  const int64_t last = (w - 16) / 2;
  for (int64_t oh = 0; oh < ho; ++oh) {
    float* yr = y + oh * wo;
    int64_t* ir = idx ? idx + oh * wo : nullptr;
    int64_t done = 0;  // outputs [0, done) of the row written
    if (w >= 18) {
      for (int64_t ow0 = 1;; ow0 += 8) {
        const int64_t b = ow0 < last ? ow0 : last;
        block(x, h, w, oh, b, yr, ir);
        done = b + 8;
        if (b == last) break;
      }
    }
    one(x, h, w, oh, 0, yr, ir);
    for (int64_t ow = done > 1 ? done : 1; ow < wo; ++ow) one(x, h, w, oh, ow, yr + ow, ir ? ir + ow : nullptr);
  }
}

#endif

}  // namespace cp2::compute::poolk
