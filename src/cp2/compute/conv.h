// Which algorithm runs each convolution of a model (train.conv_algorithm, issue 11). First,
// on any device, dtype and algorithm: a 3×3 with dilation d and padding d on a map no larger
// than d in a dimension runs without its outer taps in that dimension, which only ever read
// zero padding (ASPP's rate 18 on 224 px crops' 14×14 maps, every rate at 96 px). Otherwise
// the module's own forward (PyTorch's direct convolution) unless a WinogradScope enabled the
// fast algorithms on this thread and the convolution qualifies:
// - 3×3, stride 1, padding 1: Winograd (compute/winograd.h);
// - 3×3 with dilation d and padding d where only part of the products read the image (at
//   most kTapGemmShare*, ASPP's branches): one GEMM per tap over the pixels it reads the
//   image for (compute/dilated.h);
// - other 3×3 with dilation d and padding d (ResNet's dilated stages): Winograd over the d²
//   interleaved sub-grids (any map size: 769² crops' 49×49 maps too); before the tap GEMMs where
//   cp2's tiles over the sub-grids multiply kSubgridsOverTaps times less than they would
//   (ASPP's rates 6 and 12 on 512 px crops' 32×32 maps);
// - 1×1, stride 1, no padding, on channels-last input (ResNet-50's conv1 / conv3, its stride-1
//   shortcuts, ASPP's 1×1 branch) where oneDNN runs AVX-512 kernels: three GEMMs over the NHWC
//   memory (compute/pointwise.h).
// Only fp32 CPU tensors outside autocast, without bias or groups.
#pragma once
#include <vector>

namespace torch::nn {
class Conv2dImpl;
}
namespace at {
class Tensor;
}

namespace cp2::compute {

// Tap GEMMs take a dilated convolution when at most this share of the full 3×3's products
// read the image (dilated_taps_kept): kTapGemmShareNhwc for channels-last input,
// kTapGemmShareNchw otherwise (layout copies, and the forward pass by GEMMs too). Timed
// forward + both gradients against the direct convolution with `cp2 bench conv` (AMD Zen 4,
// 2 threads, 2048→512 channels; docs/benchmarks.md), channels-last / NCHW: share 0.25 (rate
// 24 on 32², batch 2) 3.3× / 2.7×; 0.18 (rate 12 on 14², batch 8) 3.0× / 2.1×; 0.56 (rate 12
// on 32²) 1.8× / 1.1×; 0.51 (rate 6 on 14²) 1.25× / 0.91×; 0.77 (rate 12 on 64²) 1.38× /
// not taken. ResNet's rate 2 (0.92 on 32²) stays with Winograd over sub-grids.
constexpr double kTapGemmShareNhwc = 0.8;
constexpr double kTapGemmShareNchw = 0.5;
// ... unless cp2's Winograd over the sub-grids multiplies this many times less than the taps
// (products per output pixel: 9 · kept against the tiles', every phase tiled as the largest
// sub-grid). Forward + both gradients, 2048→512 channels-last, Intel Xeon (Emerald Rapids), 2
// threads (docs/benchmarks.md), taps' time / Winograd's against the ratio of products: rate 6
// on 32² (1.96) 1.38–1.43× (batch 2), rate 12 on 64² (1.96) 1.65–1.75× and rate 18 (2.07)
// 1.6× (batch 1), rate 18 on 49² (1.52) 1.2–1.4×, rate 12 on 32² (1.44) 1.06–1.09× (batch 2),
// 1.23× (batch 4); but rate 12 on 49² (1.05) 0.80–0.93× and rate 6 on 14² (1.0) 0.80×.
constexpr double kSubgridsOverTaps = 1.3;

// What conv2d does with `conv` on `x` on this thread (WinogradScope): the centre row, column
// or tap alone, the module's forward, tap GEMMs, Winograd, Winograd over the d² sub-grids
// (where winograd_runs() says the kernels run Winograd for the shape, compute/winograd.h), or
// a 1×1 as GEMMs.
enum class ConvPath { centre_taps, module, taps, winograd, winograd_subgrids, gemm_1x1 };
ConvPath conv_path(torch::nn::Conv2dImpl& conv, const at::Tensor& x);
// "centre taps", "direct", "tap GEMMs", "Winograd", "Winograd sub-grids", "1x1 GEMMs"
const char* conv_path_name(ConvPath p);

at::Tensor conv2d(torch::nn::Conv2dImpl& conv, const at::Tensor& x);

// ASPP's bottleneck (models/aspp.cpp): `conv` (3×3, padding 1) over the channels [v upsampled
// to the map, rest...], where v (N,Cp,1,1) is the image-pool branch, constant over the map
// once upsampled from 1×1. Whether conv2d_pooled runs it as cp2's Winograd tiles with v's
// channels made once per image (compute/winograd_tiles.h: tiles_conv3x3_pooled): under the
// fast algorithms (fast paths winograd and aspp-pool on), where conv2d would run cp2's tiles
// on the concatenated input. Elsewhere the caller concatenates and calls conv2d, as before.
bool pooled_runs(torch::nn::Conv2dImpl& conv, const at::Tensor& v, const std::vector<at::Tensor>& rest);
// Throws where pooled_runs is false.
at::Tensor conv2d_pooled(torch::nn::Conv2dImpl& conv, const at::Tensor& v, const std::vector<at::Tensor>& rest);

}  // namespace cp2::compute
