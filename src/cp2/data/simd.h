// The view ops' two builds of their loops (hue.cpp, resize.cpp, augment.cpp's blur): the
// baseline's and AVX2's, picked by a `simd` argument and the CPU (so tests run both on an AVX2
// CPU). The same operations lane by lane, so the same bits (those files are compiled with
// -ffp-contract=off: no multiply-add is contracted where a baseline has FMA). AVX2 without FMA,
// unlike compute/'s kernels, which need both.
#pragma once

#if defined(__x86_64__)
// A function compiled for AVX2, called only where has_avx2().
#define CP2_AVX2 __attribute__((target("avx2")))

namespace cp2::data {
// Whether this CPU runs AVX2 code (read once).
inline bool has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2");
  return yes;
}
}  // namespace cp2::data
#endif
