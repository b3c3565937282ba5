// Compiled with -ffp-contract=off (CMakeLists.txt): the product buf·momentum must be rounded
// before the sum, as ATen's mul_ then add_; the fused steps are the explicit fmadd calls.
// No standard-library headers here (see compute/winograd_avx2.cpp).
#include "cp2/train/sgd_fma.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CP2_SGD_FMA 1
#pragma GCC target("avx2,fma")
#include <immintrin.h>
#endif

namespace cp2::train::sgd_fma {

#ifndef CP2_SGD_FMA

bool cpu_supported() { return false; }
void update(float*, const float*, float*, int64_t, int64_t, float, float, bool, float) {}
void blend(float*, const float*, int64_t, int64_t, float, float) {}

#else

bool cpu_supported() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}

namespace {

// One element as ATen computes it (scalar fused multiply-adds where ATen's kernels fuse).
inline void one(float* p, const float* g, float* buf, int64_t i, float wd, float m, bool momentum, bool first,
                float neg_lr) {
  float d = wd != 0.f ? __builtin_fmaf(p[i], wd, g[i]) : g[i];
  if (momentum) {
    d = first ? d : buf[i] * m + d;
    buf[i] = d;
  }
  p[i] = __builtin_fmaf(d, neg_lr, p[i]);
}

}  // namespace

void update(float* p, const float* g, float* buf, int64_t begin, int64_t end, float wd, float momentum, bool first,
            float neg_lr) {
  const bool mom = momentum != 0.f, decay = wd != 0.f;
  const __m256 vwd = _mm256_set1_ps(wd), vm = _mm256_set1_ps(momentum), vlr = _mm256_set1_ps(neg_lr);
  int64_t i = begin;
  for (; i + 8 <= end; i += 8) {
    const __m256 vp = _mm256_loadu_ps(p + i);
    __m256 d = _mm256_loadu_ps(g + i);
    if (decay) d = _mm256_fmadd_ps(vp, vwd, d);
    if (mom) {
      if (!first) d = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(buf + i), vm), d);
      _mm256_storeu_ps(buf + i, d);
    }
    _mm256_storeu_ps(p + i, _mm256_fmadd_ps(d, vlr, vp));
  }
  for (; i < end; ++i) one(p, g, buf, i, wd, momentum, mom, first, neg_lr);
}

void blend(float* k, const float* q, int64_t begin, int64_t end, float m, float alpha) {
  const __m256 vm = _mm256_set1_ps(m), va = _mm256_set1_ps(alpha);
  int64_t i = begin;
  for (; i + 8 <= end; i += 8)
    _mm256_storeu_ps(k + i, _mm256_fmadd_ps(_mm256_loadu_ps(q + i), va, _mm256_mul_ps(_mm256_loadu_ps(k + i), vm)));
  for (; i < end; ++i) k[i] = __builtin_fmaf(q[i], alpha, k[i] * m);
}

#endif

}  // namespace cp2::train::sgd_fma
