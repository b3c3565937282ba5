// Winograd F(4×4, 3×3) tile transforms for AVX2 + FMA CPUs, where oneDNN 2.6 has no
// Winograd kernels (compute/winograd.h). Plain float buffers, no LibTorch: the caller
// (winograd.cpp) runs the transforms in parallel over tile ranges and the 36 products in
// the Winograd domain as batched GEMMs. Matrices as in Lavin & Gray, "Fast Algorithms for
// Convolutional Neural Networks" (2016), points 0, ±1, ±2, ∞.
//
// Layouts: images are NHWC with the channel count a multiple of 8; a tile is 4×4 output
// pixels, tiles numbered t = (b·th + ty)·tw + tx with th = ⌈h/4⌉, tw = ⌈w/4⌉; a transformed
// buffer is [36][tiles][channels] (ξ = 6·i + j outermost, so each ξ is one GEMM operand),
// its 36 planes `plane` floats apart (the caller pads it off powers of two: 36 streams whose
// addresses differ by a power of two share cache sets and evict each other).
#pragma once
#include <cstdint>

namespace cp2::compute::wino43 {

struct Geometry {
  int64_t n, h, w;  // batch and image size (input = output size: stride 1, padding 1)
  int64_t tiles_h() const { return (h + 3) / 4; }
  int64_t tiles_w() const { return (w + 3) / 4; }
  int64_t tiles() const { return n * tiles_h() * tiles_w(); }
};

// Whether this CPU runs these kernels (AVX2 and FMA).
bool cpu_supported();

// v[ξ][t][c] = (Bᵀ d B)[ξ] for the 6×6 input patch d of tile t (rows 4ty−1 … 4ty+4, zero
// outside the image), tiles [t0, t1).
void input_tiles(const float* x, const Geometry& g, int64_t c, float* v, int64_t plane, int64_t t0, int64_t t1);

// y = Aᵀ m A for each tile's 6×6 products, the 4×4 pixels inside the image written to y
// (NHWC, k channels); tiles [t0, t1).
void output_tiles(const float* m, int64_t plane, const Geometry& g, int64_t k, float* y, int64_t t0, int64_t t1);

// z[ξ][t][k] = (A dY Aᵀ)[ξ] for the 4×4 output-gradient tile dY (zero outside the image):
// the gradient of output_tiles, for the weight gradient; tiles [t0, t1).
void grad_output_tiles(const float* dy, const Geometry& g, int64_t k, float* z, int64_t plane, int64_t t0, int64_t t1);

// u[ξ][o][c] = (G g Gᵀ)[ξ] for the filters g = w[o][c] of w (O,C,3,3), each turned 180° when
// `flip` (the input gradient's filters); w in OIHW memory, or OHWI (channels-last weights)
// when `ohwi`; output channels [o0, o1); C a multiple of 8.
void weight_tiles(const float* w, bool ohwi, int64_t o, int64_t c, bool flip, float* u, int64_t plane, int64_t o0,
                  int64_t o1);

// dw[o][c] = Gᵀ du[·][o][c] G: the weight gradient (O,C,3,3) back from the Winograd domain
// du [36][O][C], written in OIHW memory, or OHWI when `ohwi`; output channels [o0, o1); C a
// multiple of 8.
void weight_grad(const float* du, int64_t plane, int64_t o, int64_t c, float* dw, bool ohwi, int64_t o0, int64_t o1);

}  // namespace cp2::compute::wino43
