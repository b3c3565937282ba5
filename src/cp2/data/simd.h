// The view ops' two builds of their loops (hue.cpp, resize.cpp, augment.cpp): the baseline's and
// AVX2's, the same operations lane by lane, so the same bits (those files are compiled with
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

// A function compiled for the baseline and for AVX2, the CPU picking one when the program loads
// (GCC's target_clones; elsewhere the baseline alone).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CP2_AVX2_CLONE __attribute__((target_clones("avx2", "default")))
#else
#define CP2_AVX2_CLONE
#endif
