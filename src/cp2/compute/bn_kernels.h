// The loops of compute/bn_act.h for AVX2 + FMA CPUs: batch norm's statistics, its
// normalisation (with a residual sum and a ReLU folded in) and its two backward passes over
// fp32 maps: channels-last ones as [P][C] matrices (P = N·H·W pixels, C channels, a multiple of
// 8), run in parallel over pixel ranges [p0, p1); NCHW ones plane by plane (one image's channel,
// H·W contiguous values, any count; the `plane_` functions). Plain float buffers, no LibTorch.
// Call only after cpu_supported().
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

// The same four over one plane of n values of a channel whose shift / mean, scale, bias and
// a, b, d are scalars; the sums go to the channel's *s1, *s2 (*sg, *sgx) in double across
// blocks of 256 values summed in 8 fp32 lanes (32 values a lane, as the pixels' blocks above).
void plane_shifted_sums(const float* x, int64_t n, float shift, double* s1, double* s2);
void plane_normalize(const float* x, const float* r, float* y, int64_t n, float mean, float scale, float bias,
                     bool relu);
void plane_grad_sums(const float* dy, const float* y, const float* x, int64_t n, float mean, double* sg, double* sgx,
                     float* g_out);
void plane_grad_input(const float* dy, const float* y, const float* x, float* dx, int64_t n, float mean, float a,
                      float b, float d);

}  // namespace cp2::compute::bnk
