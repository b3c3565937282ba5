// The loop of compute/pool.h for AVX2 CPUs: ResNet's stem max pool (3×3, stride 2, padding 1)
// over one H×W plane of fp32 values, with PyTorch's indices. Plain buffers, no LibTorch; call
// only after cpu_supported().
#pragma once
#include <cstdint>

namespace cp2::compute::poolk {

bool cpu_supported();

// y (ho × wo, ho = (h - 1) / 2 + 1, wo likewise) = the maximum of each 3×3 window at stride 2
// over x (h × w) padded by 1; where idx is given, the position (r·w + c) of each maximum in x
// as PyTorch's CPU kernel picks it: scanning the window row by row, a value replaces the
// maximum where it is greater or NaN (so the first of equal maxima, the last NaN).
void max_pool3x3s2(const float* x, int64_t h, int64_t w, float* y, int64_t* idx);

}  // namespace cp2::compute::poolk
