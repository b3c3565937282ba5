// Winograd tile transforms for AVX2 + FMA CPUs (compute/winograd.h), in two sizes: F(4×4, 3×3)
// (6×6 input patches, 36 products for 16 outputs; points 0, ±1, ±2, ∞ as in Lavin & Gray,
// "Fast Algorithms for Convolutional Neural Networks", 2016) and F(3×3, 3×3) (5×5 patches, 25
// products for 9 outputs; points 0, ±1, 2, ∞). The smaller tile fits maps of 3, 6, 9 … pixels
// that the larger one fills half (at 96 px and output stride 16, ResNet's layer3 runs on 6×6
// maps and layer4's rate-2 convolutions on 3×3 sub-grids of them). Plain float buffers, no
// LibTorch: the caller (winograd_tiles.cpp) runs the transforms in parallel over tile ranges
// and the products in the Winograd domain as batched GEMMs.
//
// Layouts: images are NHWC with the channel count a multiple of 8; a tile is m×m output
// pixels (m = 4 or 3) of one sub-grid (Geometry), tiles numbered t = (((b·d + py)·d + px)·th +
// ty)·tw + tx for phase (py, px), with th = ⌈⌈h/d⌉/m⌉, tw = ⌈⌈w/d⌉/m⌉; a
// transformed buffer is [P][tiles][channels] with P = (m+2)² (ξ = (m+2)·i + j outermost, so
// each ξ is one GEMM operand), its P planes `plane` floats apart (the caller pads it off
// powers of two: streams whose addresses differ by a power of two share cache sets and evict
// each other).
#pragma once
#include <cstdint>

namespace cp2::compute {

// The side of a map's largest sub-grid at dilation d: ⌈side/d⌉. Where d does not divide the
// side, the phases' sub-grids differ by a pixel, and each is taken as the largest, its pixels
// past the map being the zero padding they stand for (Geometry below; compute/winograd.h).
inline int64_t subgrid_side(int64_t side, int64_t d) { return (side + d - 1) / d; }

}  // namespace cp2::compute

namespace cp2::compute::wino {

// A dilated convolution (rate d, padding d) reads, for an output pixel in phase (i mod d,
// j mod d), only inputs of the same phase: it is d² undilated convolutions over the sub-grids
// of about h/d × w/d pixels, which the kernels tile in place (no copies of the sub-grids).
// Where d does not divide a side, the phases' sub-grids differ by a pixel; every phase is
// tiled as the largest, ⌈h/d⌉ × ⌈w/d⌉, and the pixels past the image are the zero padding
// they stand for (read as zeros, never written).
struct Geometry {
  int64_t n, h, w;  // batch and image size (input = output size: stride 1, padding d)
  int64_t m = 4;    // output tile size: 4 or 3
  int64_t d = 1;    // dilation
  int64_t sub_h() const { return subgrid_side(h, d); }
  int64_t sub_w() const { return subgrid_side(w, d); }
  int64_t tiles_h() const { return (sub_h() + m - 1) / m; }
  int64_t tiles_w() const { return (sub_w() + m - 1) / m; }
  int64_t tiles() const { return n * d * d * tiles_h() * tiles_w(); }
  int64_t points() const { return m + 2; }  // the input patch's side
  int64_t planes() const { return points() * points(); }
};

// Whether this CPU runs these kernels (AVX2 and FMA).
bool cpu_supported();

// v[ξ][t][c] = (Bᵀ d B)[ξ] for the (m+2)×(m+2) input patch d of tile t (sub-grid rows
// m·ty−1 … m·ty+m, zero outside the image), tiles [t0, t1).
void input_tiles(const float* x, const Geometry& g, int64_t c, float* v, int64_t plane, int64_t t0, int64_t t1);

// y = Aᵀ M A for each tile's products, the m×m pixels inside the image written to y (NHWC,
// k channels); tiles [t0, t1).
void output_tiles(const float* m, int64_t plane, const Geometry& g, int64_t k, float* y, int64_t t0, int64_t t1);

// z[ξ][t][k] = (A dY Aᵀ)[ξ] for the m×m output-gradient tile dY (zero outside the image):
// the gradient of output_tiles, for the weight gradient; tiles [t0, t1).
void grad_output_tiles(const float* dy, const Geometry& g, int64_t k, float* z, int64_t plane, int64_t t0, int64_t t1);

// u[ξ][o][c] = (G g Gᵀ)[ξ] for the filters g = w[o][c] of w (O,C,3,3), each turned 180° when
// `flip` (the input gradient's filters), for tiles of size m; w in OIHW memory, or OHWI
// (channels-last weights) when `ohwi`; output channels [o0, o1); C a multiple of 8.
void weight_tiles(int64_t m, const float* w, bool ohwi, int64_t c, bool flip, float* u, int64_t plane, int64_t o0,
                  int64_t o1);

// dw[o][c] = Gᵀ du[·][o][c] G: the weight gradient (O,C,3,3) back from the Winograd domain
// du [P][O][C] of tiles of size m, written in OIHW memory, or OHWI when `ohwi`; output
// channels [o0, o1); C a multiple of 8.
void weight_grad(int64_t m, const float* du, int64_t plane, int64_t o, int64_t c, float* dw, bool ohwi, int64_t o0,
                 int64_t o1);

}  // namespace cp2::compute::wino
