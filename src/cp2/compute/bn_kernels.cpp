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
void plane_shifted_sums(const float*, int64_t, float, double*, double*) {}
void plane_normalize(const float*, const float*, float*, int64_t, float, float, float, bool) {}
void plane_grad_sums(const float*, const float*, const float*, int64_t, float, double*, double*, float*) {}
void plane_grad_input(const float*, const float*, const float*, float*, int64_t, float, float, float, float) {}

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

namespace {

// The gradient at one value, as `masked` gives eight: dy, or 0 where the ReLU's output y was 0.
inline float masked1(const float* dy, const float* y, int64_t i) { return y && !(y[i] > 0.f) ? 0.f : dy[i]; }

// The sum of v's 8 lanes, in double.
inline double lanes_sum(__m256 v) {
  const __m256d s =
      _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
  const __m128d h = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
  return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
}

// A plane's sums: `terms(i, t1, t2)` adds the terms of values [i, i+8) to the lanes t1, t2,
// which go to *s1, *s2 every kBlock vectors; `tail(i, u1, u2)` adds value i's (the last < 8
// values) to fp32 sums that go to *s1, *s2 at the end.
template <class Terms, class Tail>
inline void plane_block_sums(int64_t n, double* s1, double* s2, const Terms& terms, const Tail& tail) {
  const int64_t full = n - n % 8;
  for (int64_t i = 0; i < full;) {
    __m256 t1 = _mm256_setzero_ps(), t2 = _mm256_setzero_ps();
    const int64_t end = i + 8 * kBlock < full ? i + 8 * kBlock : full;
    for (; i < end; i += 8) terms(i, t1, t2);
    *s1 += lanes_sum(t1);
    *s2 += lanes_sum(t2);
  }
  float u1 = 0, u2 = 0;
  for (int64_t i = full; i < n; ++i) tail(i, u1, u2);
  *s1 += u1;
  *s2 += u2;
}

}  // namespace

void plane_shifted_sums(const float* x, int64_t n, float shift, double* s1, double* s2) {
  const __m256 sh = _mm256_set1_ps(shift);
  plane_block_sums(
      n, s1, s2,
      [&](int64_t i, __m256& t1, __m256& t2) {
        const __m256 v = _mm256_sub_ps(_mm256_loadu_ps(x + i), sh);
        t1 = _mm256_add_ps(t1, v);
        t2 = _mm256_fmadd_ps(v, v, t2);
      },
      [&](int64_t i, float& u1, float& u2) {
        const float v = x[i] - shift;
        u1 += v;
        u2 += v * v;
      });
}

void plane_normalize(const float* x, const float* r, float* y, int64_t n, float mean, float scale, float bias,
                     bool relu) {
  const __m256 m = _mm256_set1_ps(mean), s = _mm256_set1_ps(scale), b = _mm256_set1_ps(bias);
  const __m256 zero = _mm256_setzero_ps();
  const int64_t full = n - n % 8;
  for (int64_t i = 0; i < full; i += 8) {
    __m256 v = _mm256_fmadd_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), m), s, b);
    if (r) v = _mm256_add_ps(v, _mm256_loadu_ps(r + i));
    if (relu) v = _mm256_max_ps(v, zero);
    _mm256_storeu_ps(y + i, v);
  }
  for (int64_t i = full; i < n; ++i) {
    float v = (x[i] - mean) * scale + bias;
    if (r) v += r[i];
    y[i] = relu && !(v > 0.f) ? 0.f : v;
  }
}

void plane_grad_sums(const float* dy, const float* y, const float* x, int64_t n, float mean, double* sg, double* sgx,
                     float* g_out) {
  const __m256 m = _mm256_set1_ps(mean);
  plane_block_sums(
      n, sg, sgx,
      [&](int64_t i, __m256& t1, __m256& t2) {
        const __m256 g = masked(dy, y, i);
        if (g_out) _mm256_storeu_ps(g_out + i, g);
        t1 = _mm256_add_ps(t1, g);
        t2 = _mm256_fmadd_ps(g, _mm256_sub_ps(_mm256_loadu_ps(x + i), m), t2);
      },
      [&](int64_t i, float& u1, float& u2) {
        const float g = masked1(dy, y, i);
        if (g_out) g_out[i] = g;
        u1 += g;
        u2 += g * (x[i] - mean);
      });
}

void plane_grad_input(const float* dy, const float* y, const float* x, float* dx, int64_t n, float mean, float a,
                      float b, float d) {
  const __m256 m = _mm256_set1_ps(mean), va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b), vd = _mm256_set1_ps(d);
  const int64_t full = n - n % 8;
  for (int64_t i = 0; i < full; i += 8) {
    const __m256 g = masked(dy, y, i);
    const __m256 xm = _mm256_sub_ps(_mm256_loadu_ps(x + i), m);
    _mm256_storeu_ps(dx + i, _mm256_fmadd_ps(xm, vb, _mm256_fmadd_ps(g, va, vd)));
  }
  for (int64_t i = full; i < n; ++i) {
    const float g = masked1(dy, y, i);
    dx[i] = (x[i] - mean) * b + (g * a + d);
  }
}

#endif

}  // namespace cp2::compute::bnk
