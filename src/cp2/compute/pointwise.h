// 1×1 convolutions (stride 1, no padding, groups or bias: ResNet-50's conv1 / conv3, the
// stride-1 shortcuts, ASPP's 1×1 branch) on channels-last input as three GEMMs over the same
// memory: an NHWC map is an [N·H·W, C] matrix, so y = x·wᵀ, dx = dy·w, dw = dyᵀ·x with no copy
// (compute/gemm.h's sgemm: oneDNN's). oneDNN's own 1×1 convolution runs the forward pass at
// about the same rate but its backward passes slower: on an Intel Xeon (Emerald Rapids,
// AVX-512, 2 threads) forward + both gradients of R50's layer-4 1×1s (2048↔512 on 14², batch
// 8) 1.12-1.20× faster as GEMMs, the smaller ones 1.01-1.08× (`cp2 bench conv --kernel 1`); in
// the whole step, steps alternated in one process, R50-ASPP@224 pretraining 1.04-1.08× and
// R50 512² finetuning 1.07× (medians of 12 pairs; docs/benchmarks.md). Capped to AVX2 the two
// ran within ±3 % of each other, so compute/conv.h takes this path only where oneDNN runs
// AVX-512. The sums run in another order than PyTorch's convolution (fp32 round-off), so it
// runs with the fast algorithms (`train.conv_algorithm: winograd|auto`), never under `direct`.
#pragma once

namespace at {
class Tensor;
}

namespace cp2::compute {

// The 1×1 convolution of fp32 CPU tensors x (N,C,H,W, channels-last memory) and weight
// (O,C,1,1), with gradients for both; the result in channels-last memory, the weight gradient
// in the weight's. Throws, naming what it found, when given anything else.
at::Tensor conv1x1_gemm(const at::Tensor& x, const at::Tensor& weight);

}  // namespace cp2::compute
