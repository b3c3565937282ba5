// Weight initialisation as mmsegmentation's, and BN randomisation for parity checks.
#pragma once
#include <torch/nn/module.h>

#include <cstdint>

namespace cp2::models {

// mmsegmentation's init: Kaiming-normal convs (fan_out, ReLU), BN weight 1 / bias 0,
// the last BN of every residual block zeroed (zero_init_residual), conv_seg normal
// std 0.01 / bias 0. The CP² projection keeps PyTorch's default Conv2d init, as the
// authors' plain nn.Conv2d layers do. Deterministic for a given seed.
void init_weights(torch::nn::Module& m, uint64_t seed);

// Random BN weights, biases and running statistics. Zero-initialised last BNs hide
// every error inside residual branches, so parity checks call this first (SPEC §2).
void randomize_bn(torch::nn::Module& m, uint64_t seed);

}  // namespace cp2::models
