// Batch norm with its ReLU (and a residual sum before it) as one pass over the map per
// direction, for fp32 channels-last and NCHW maps on AVX2 + FMA CPUs (issue 11). PyTorch runs
// them as separate ops, each a pass over memory: batch norm's statistics and its normalisation,
// the ReLU in place; backward the ReLU's mask, then batch norm's two passes. Those passes are
// memory-bound (a 26 MB map normalises at a third of a copy's rate on a Xeon, 2 threads), and
// ResNet-50's batch norms and ReLUs took ~11 % of an R50-ASPP@224 pretraining step once its
// convolutions ran as GEMMs and Winograd (docs/benchmarks.md). Here: forward one pass for the
// statistics, one that normalises, adds and clamps; backward one for the two sums (the mask
// read from the saved output, as ReLU's backward does), one for the input's (and residual's)
// gradient. Channels-last maps sum over pixels in fixed chunks, then in chunk order; NCHW ones
// channel by channel over their planes in order: the bits do not depend on the thread count.
// The statistics and gradients sum in another order than PyTorch's (fp32 round-off), so this
// runs with the fast algorithms (`train.conv_algorithm: winograd|auto`, compute/conv.h), never
// under `direct`.
#pragma once

namespace at {
class Tensor;
}

namespace cp2::compute {

// Whether bn_act takes `x` (N,C,H,W) with `residual` (undefined or x's shape and memory order)
// here: fp32 CPU maps in channels-last memory (any 1×1 map) with C a multiple of 8, or dense
// NCHW ones (ResNet-18's under train.channels_last: auto) with any C, on a CPU with AVX2 + FMA,
// fast algorithms on this thread (WinogradScope), no autocast; with batch statistics
// (`batch_stats`) more than one value per channel (PyTorch's error otherwise), with running
// statistics only without gradients (evaluation).
bool bn_act_applies(const at::Tensor& x, const at::Tensor& residual, bool batch_stats);

// relu(batch_norm(x) + residual) (relu, residual optional), as torch::batch_norm then `+=`
// then relu_ compute it: with `batch_stats` the batch's mean and biased variance normalise and
// the running ones (where defined) move by `momentum` towards the mean and the unbiased
// variance, with gradients for x, weight, bias and residual; otherwise the running statistics
// normalise. weight / bias may be undefined (affine = false). Call where bn_act_applies.
at::Tensor bn_act(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                  const at::Tensor& running_mean, const at::Tensor& running_var, bool batch_stats, double momentum,
                  double eps, const at::Tensor& residual, bool relu);

}  // namespace cp2::compute
