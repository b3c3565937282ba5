// ResNet's stem max pool (3×3, stride 2, padding 1) over fp32 NCHW maps through an AVX2 loop
// (compute/pool_kernels.h): Debian's LibTorch 1.13 runs it one scalar window at a time, ~14 ms
// a [32, 64, 48, 48] map, 4 % of an R18-ASPP@96 pretraining step on a Xeon with 2 threads
// (docs/benchmarks.md). The maxima and their positions are PyTorch's bit for bit (first of
// equal maxima in the window's row-by-row scan, the last NaN), and the backward is PyTorch's
// max_pool2d_with_indices_backward over those positions. It still runs only with the fast
// algorithms (`train.conv_algorithm: winograd|auto`), so `direct` stays PyTorch's ops
// throughout and `cp2 bench --alternate max-pool` can time it against PyTorch's.
#pragma once

namespace torch::nn {
class MaxPool2dImpl;
}
namespace at {
class Tensor;
}

namespace cp2::compute {

// Whether max_pool2d takes `x` here: `pool` is 3×3, stride 2, padding 1, dilation 1, floor
// mode; x an fp32 CPU NCHW-contiguous (N, C, H, W) map with H·W < 2^31, fast algorithms on
// this thread (WinogradScope) with the max-pool path on, a CPU with AVX2, no autocast.
bool max_pool_applies(const torch::nn::MaxPool2dImpl& pool, const at::Tensor& x);

// pool(x): cp2's loop where max_pool_applies (positions kept for the backward only where x
// needs a gradient), else the module's forward.
at::Tensor max_pool2d(torch::nn::MaxPool2dImpl& pool, const at::Tensor& x);

}  // namespace cp2::compute
