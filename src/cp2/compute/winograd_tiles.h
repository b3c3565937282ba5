// cp2's own Winograd F(4×4, 3×3) and F(3×3, 3×3) convolutions for AVX2 + FMA CPUs (issue 11:
// ≥ 1.5× the PyTorch pipeline in fp32 on any x86-64 CPU, AVX2 only included), where oneDNN 2.6
// has no Winograd kernels; F(3×3) on AVX-512 CPUs too, where oneDNN has no such tiles. The
// tile transforms are winograd_avx2.h's; the 36 (25) products per tile are batched GEMMs,
// through oneDNN's sgemm where cp2 links oneDNN (its AVX2 GEMM runs at 120–180 GFLOP/s on 2
// threads of an AMD Zen 4 capped to AVX2, OpenBLAS's at 90–145), else
// LibTorch's bmm. The gradients: the input gradient is the same convolution of the output
// gradient by the flipped, transposed weights; the weight gradient is Gᵀ [Σ_tiles
// (A dY Aᵀ) ⊙ (Bᵀ d B)] G, the exact gradient of the forward's arithmetic.
//
// Internal to compute/winograd.cpp, which picks these kernels or oneDNN's.
#pragma once
#include <cstdint>
#include <string>

namespace at {
class Tensor;
}

namespace cp2::compute {

// Whether this CPU runs the kernels (AVX2 and FMA); when not, `why` says so.
bool tiles_available(std::string* why = nullptr);

// The kernels work on 8 channels at a time: input and output channels multiples of 8.
bool tiles_fit(int64_t in_channels, int64_t out_channels);

// Where they beat the direct convolution (forward + both gradients timed alone with `cp2
// bench conv --kernels tiles`, 2 threads, oneDNN capped to AVX2: AMD Zen 4, and since their
// transforms run on every thread (OpenMP), Intel Xeon; docs/benchmarks.md):
// - at least 32 tiles in the batch: the filters' transforms (4× the weights in size, made
//   every call) are shared by fewer tiles below (16 tiles of 2560→512: 1.12–1.44× over
//   three runs, too close to call; 8 tiles lost, 0.57–0.91×);
// - tiles at least 75 % full with at least 128 channels in and out (1.25–1.72× at 32 tiles),
//   or 64 channels with at least 64 tiles (Xeon: 1.34–2.2× at 64–2048 tiles, 1.0–1.18× at
//   32; serial transforms on Zen 4 had made 64 channels lose, 0.85–1.14×);
// - half-full tiles with at least 256 channels (6×6 and 3×3 maps fill 56 % of their 4×4 tiles:
//   4 products per pixel instead of 2.25; 256: 1.09–1.26×, 512: 1.21–1.50×, 2560→512: 1.78×;
//   128: 1.01–1.22×, left direct). Such maps now take F(3×3) (tiles3_pay_off); this applies
//   to those 4×4 tiles still fit better, e.g. 10×10 (69 % full).
bool tiles_pay_off(int64_t n, int64_t in_channels, int64_t out_channels, int64_t h, int64_t w);

// Where oneDNN's AVX-512 Winograd runs, whether cp2's F(4×4) beats it on an undilated
// convolution (both where tiles_pay_off): forward + both gradients timed alone with `cp2 bench
// conv --kernels onednn|tiles` on an Intel Xeon (Emerald Rapids, 2 threads; docs/benchmarks.md),
// oneDNN's time ÷ cp2's: NCHW 8×8 maps 256→256, 512→512, 2560→512 1.30×, 1.36×, 1.41×,
// 16×16 128→128 even, 32×32 64→64 and 24×24 0.68–0.72×; channels-last 14-64 px maps with
// 128-2560 channels 1.05–1.25×, 56×56 64→64 even, 128×128 64→64 0.87×.
bool tiles_beat_onednn(int64_t in_channels, int64_t out_channels, bool channels_last);
// Its line: the fewer of the in and out channels at least this many (NCHW, channels-last).
inline constexpr int64_t kTilesBeatOnednnChannels = 256;
inline constexpr int64_t kTilesBeatOnednnChannelsCl = 128;

// The fewest F(4×4, 3×3) tiles (n·⌈h/4⌉·⌈w/4⌉) for which any Winograd kernels, cp2's or
// oneDNN's, are chosen as the best at hand: both transform the filters on every call (36·C·O
// floats, 38 MB at 512→512), which fewer tiles do not repay. oneDNN's on an Intel Xeon,
// forward + both gradients against direct: 4–16 tiles 0.30–0.71×, 32 tiles 1.06–1.07×, 64
// tiles 1.37–1.64× (docs/benchmarks.md); batches of training steps pass it, batch-1
// evaluation of small images does not everywhere.
inline constexpr int64_t kMinWinogradTiles = 32;
int64_t winograd_tiles(int64_t n, int64_t h, int64_t w);

// The output tile size, 4 or 3, that computes fewer products over an h×w map ((m+2)² per
// tile): 3 for maps of 1, 2, 3, 5, 6 or 9 pixels, which 4×4 tiles fill half or less (at 96 px,
// ResNet's layer3 on 6×6 maps and layer4's rate 2 on 3×3 sub-grids of them), 4 elsewhere.
int64_t tiles_size(int64_t h, int64_t w);
// Multiplications per output pixel and channel pair of F(m×m, 3×3) tiles over an h×w map
// ((m+2)² per tile, partial tiles included; the direct convolution's: 9).
double tiles_products(int64_t h, int64_t w, int64_t m);

// Where F(3×3, 3×3) tiles are the better tiling (tiles_size) and beat the direct
// convolution, forward + both gradients (`cp2 bench conv --kernels tiles-f3`, 6×6 and 3×3
// sub-grids of 12×12 maps, Intel Xeon, 2 threads; docs/benchmarks.md):
// - where oneDNN runs AVX-512 (its direct kernels skip the padding): ≥ 64 tiles with ≥ 256
//   channels (1.06–1.28× at 64 tiles, 1.4–2.2× at batch 32), or ≥ 256 tiles with ≥ 128
//   (1.08–1.27×; 128 tiles 0.97–1.28×, too close to call);
// - elsewhere (oneDNN's AVX2 kernels): ≥ kMinWinogradTiles tiles with ≥ 64 channels
//   (capped to AVX2: 1.6–2.7× from 32 tiles; 16 tiles 0.84–1.08×).
// oneDNN's F(4×4) fills half of such maps' tiles and lost to direct there (0.46–0.95× on the
// Xeon), so where these do not pay the convolution runs direct.
bool tiles3_pay_off(int64_t n, int64_t in_channels, int64_t out_channels, int64_t h, int64_t w);

// 3×3 convolution, stride 1, padding and dilation `dilation` ≥ 1 (any map size), no bias, of
// fp32 CPU tensors (N,C,H,W) by (O,C,3,3), in output tiles of `tile` pixels (4 or 3; 0:
// tiles_size of the sub-grids), with gradients for both; output in the input's memory
// layout. The caller checks tiles_available() and tiles_fit().
at::Tensor tiles_conv3x3(const at::Tensor& x, const at::Tensor& weight, int64_t tile = 0, int64_t dilation = 1);

// The same convolution (undilated, padding 1) of the channels [v, x]: v (N,Cp,1,1) stands for
// Cp channels constant over x's h×w map (ASPP's image-pool branch, its 1×1 map upsampled;
// compute/conv.h's conv2d_pooled), weight (O,Cp+Cr,3,3). A constant channel's input tiles are
// its value times a few fixed tiles (those of a map of ones), so its products with the
// filters' tiles are made once per image, not once per tile: at 49 tiles an image (ASPP on
// 224 px crops' 28×28 maps), the fifth of its bottleneck's products they were becomes 0.4 %. Gradients for all
// three, the exact gradients of this arithmetic; output in x's memory layout. Channel counts
// multiples of 8 (tiles_fit), `tile` 4 or 3.
at::Tensor tiles_conv3x3_pooled(const at::Tensor& v, const at::Tensor& x, const at::Tensor& weight, int64_t tile);

}  // namespace cp2::compute
