// The loops of compute/bn_act.h for AVX2 + FMA CPUs: batch norm's statistics, its
// normalisation (with a residual sum and a ReLU folded in) and its two backward passes over
// channels-last fp32 maps, i.e. [P][C] matrices (P = N·H·W pixels, C channels, a multiple of
// 8). Plain float buffers, no LibTorch: the caller runs them in parallel over pixel ranges
// [p0, p1). Call only after cpu_supported().
#pragma once
#include <cstdint>

namespace cp2::compute::bnk {

bool cpu_supported();

// s1[c] += Σ (x - shift[c]), s2[c] += Σ (x - shift[c])² over pixels [p0, p1), in double
// across blocks of 32 pixels summed in fp32 (shifting by a sample of the channel keeps the
// variance's E[x²] - E[x]² from cancelling where |mean| ≫ std). `scratch`: 2·c floats.
void shifted_sums(const float* x, int64_t p0, int64_t p1, int64_t c, const float* shift, double* s1, double* s2,
                  float* scratch);

// y = (x - mean)·scale + bias (+ r where r is given), then max(·, 0) where `relu`.
void normalize(const float* x, const float* r, float* y, int64_t p0, int64_t p1, int64_t c, const float* mean,
               const float* scale, const float* bias, bool relu);

// With g = dy where y > 0 (y given: the ReLU's mask) or dy (y null): sg[c] += Σ g,
// sgx[c] += Σ g·(x - mean[c]), summed as shifted_sums does; g stored to `g_out` where given
// (the residual's gradient, which grad_input then reads as its dy, without y). `scratch`: 2·c
// floats.
void grad_sums(const float* dy, const float* y, const float* x, int64_t p0, int64_t p1, int64_t c, const float* mean,
               double* sg, double* sgx, float* scratch, float* g_out);

// dx = g·a + (x - mean)·b + d, with g as in grad_sums.
void grad_input(const float* dy, const float* y, const float* x, float* dx, int64_t p0, int64_t p1, int64_t c,
                const float* mean, const float* a, const float* b, const float* d);

}  // namespace cp2::compute::bnk
