// AVX2 + FMA throughout (compute/bn_kernels.h); called only after cpu_supported(). No
// standard-library headers here (see compute/winograd_avx2.cpp).
#include "cp2/compute/bn_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CP2_BN_AVX2 1
#pragma GCC target("avx2,fma")
#include <immintrin.h>
#endif

namespace cp2::compute::bnk {

#ifndef CP2_BN_AVX2

bool cpu_supported() { return false; }
void shifted_sums(const float*, int64_t, int64_t, int64_t, const float*, double*, double*, float*) {}
void normalize(const float*, const float*, float*, int64_t, int64_t, int64_t, const float*, const float*,
               const float*, bool) {}
void grad_sums(const float*, const float*, const float*, int64_t, int64_t, int64_t, const float*, double*, double*,
               float*, float*) {}
void grad_input(const float*, const float*, const float*, float*, int64_t, int64_t, int64_t, const float*,
                const float*, const float*, const float*) {}

#else

bool cpu_supported() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

namespace {

constexpr int64_t kBlock = 32;  // pixels summed in fp32 before their sums go to double

// acc[c] (double) += blk[c] (float), blk zeroed.
inline void flush(float* blk, double* acc, int64_t c) {
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t k = 0; k < c; k += 8) {
    const __m256 v = _mm256_loadu_ps(blk + k);
    _mm256_storeu_pd(acc + k, _mm256_add_pd(_mm256_loadu_pd(acc + k), _mm256_cvtps_pd(_mm256_castps256_ps128(v))));
    _mm256_storeu_pd(acc + k + 4,
                     _mm256_add_pd(_mm256_loadu_pd(acc + k + 4), _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1))));
    _mm256_storeu_ps(blk + k, zero);
  }
}

inline void zero(float* p, int64_t n) {
  for (int64_t k = 0; k < n; k += 8) _mm256_storeu_ps(p + k, _mm256_setzero_ps());
}

// The gradient that reaches the batch norm's output: dy, or 0 where the ReLU's output was 0.
inline __m256 masked(const float* dy, const float* y, int64_t i) {
  const __m256 g = _mm256_loadu_ps(dy + i);
  return y ? _mm256_and_ps(g, _mm256_cmp_ps(_mm256_loadu_ps(y + i), _mm256_setzero_ps(), _CMP_GT_OQ)) : g;
}

// Per-channel sums over the pixels [p0, p1): `row(o, b1, b2)` adds the terms of the pixel at
// offset o to the fp32 block sums b1, b2, which go to the double sums s1, s2 every kBlock
// pixels. `scratch`: 2·c floats.
template <class Row>
inline void block_sums(int64_t p0, int64_t p1, int64_t c, double* s1, double* s2, float* scratch, const Row& row) {
  float* b1 = scratch;
  float* b2 = scratch + c;
  zero(scratch, 2 * c);
  for (int64_t p = p0; p < p1;) {
    const int64_t end = p + kBlock < p1 ? p + kBlock : p1;
    for (; p < end; ++p) row(p * c, b1, b2);
    flush(b1, s1, c);
    flush(b2, s2, c);
  }
}

}  // namespace

void shifted_sums(const float* x, int64_t p0, int64_t p1, int64_t c, const float* shift, double* s1, double* s2,
                  float* scratch) {
  block_sums(p0, p1, c, s1, s2, scratch, [&](int64_t o, float* b1, float* b2) {
    for (int64_t k = 0; k < c; k += 8) {
      const __m256 v = _mm256_sub_ps(_mm256_loadu_ps(x + o + k), _mm256_loadu_ps(shift + k));
      _mm256_storeu_ps(b1 + k, _mm256_add_ps(_mm256_loadu_ps(b1 + k), v));
      _mm256_storeu_ps(b2 + k, _mm256_fmadd_ps(v, v, _mm256_loadu_ps(b2 + k)));
    }
  });
}

void normalize(const float* x, const float* r, float* y, int64_t p0, int64_t p1, int64_t c, const float* mean,
               const float* scale, const float* bias, bool relu) {
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t o = p * c;
    for (int64_t k = 0; k < c; k += 8) {
      __m256 v = _mm256_fmadd_ps(_mm256_sub_ps(_mm256_loadu_ps(x + o + k), _mm256_loadu_ps(mean + k)),
                                 _mm256_loadu_ps(scale + k), _mm256_loadu_ps(bias + k));
      if (r) v = _mm256_add_ps(v, _mm256_loadu_ps(r + o + k));
      if (relu) v = _mm256_max_ps(v, zero);
      _mm256_storeu_ps(y + o + k, v);
    }
  }
}

void grad_sums(const float* dy, const float* y, const float* x, int64_t p0, int64_t p1, int64_t c, const float* mean,
               double* sg, double* sgx, float* scratch, float* g_out) {
  block_sums(p0, p1, c, sg, sgx, scratch, [&](int64_t o, float* b1, float* b2) {
    for (int64_t k = 0; k < c; k += 8) {
      const __m256 g = masked(dy, y, o + k);
      if (g_out) _mm256_storeu_ps(g_out + o + k, g);
      const __m256 xm = _mm256_sub_ps(_mm256_loadu_ps(x + o + k), _mm256_loadu_ps(mean + k));
      _mm256_storeu_ps(b1 + k, _mm256_add_ps(_mm256_loadu_ps(b1 + k), g));
      _mm256_storeu_ps(b2 + k, _mm256_fmadd_ps(g, xm, _mm256_loadu_ps(b2 + k)));
    }
  });
}

void grad_input(const float* dy, const float* y, const float* x, float* dx, int64_t p0, int64_t p1, int64_t c,
                const float* mean, const float* a, const float* b, const float* d) {
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t o = p * c;
    for (int64_t k = 0; k < c; k += 8) {
      const __m256 g = masked(dy, y, o + k);
      const __m256 xm = _mm256_sub_ps(_mm256_loadu_ps(x + o + k), _mm256_loadu_ps(mean + k));
      const __m256 v = _mm256_fmadd_ps(xm, _mm256_loadu_ps(b + k), _mm256_fmadd_ps(g, _mm256_loadu_ps(a + k),
                                                                                 _mm256_loadu_ps(d + k)));
      _mm256_storeu_ps(dx + o + k, v);
    }
  }
}

#endif

}  // namespace cp2::compute::bnk
