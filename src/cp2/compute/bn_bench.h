// `cp2 bench norm`: one training-mode batch norm with its ReLU (and, with --residual, the
// shortcut's sum before it) on an fp32 channels-last (or, with --nchw, NCHW) map, timed alone,
// forward and forward + the gradients of input, weight, bias (and residual): PyTorch's ops (batch_norm, `+=`,
// relu_) against compute/bn_act.h's one pass per direction (the shape-level evidence behind
// it; docs/benchmarks.md).
#pragma once
#include <cstdint>
#include <string>

namespace cp2::compute {

struct NormBenchOptions {
  int64_t batch = 8, channels = 256, size = 56;
  bool residual = false;
  bool nchw = false;  // NCHW memory instead of channels-last
  int rounds = 5;  // best of, after one untimed call
  void validate() const;  // names the option and the value
};

struct NormBenchResult {
  double torch_fwd_s = 0, torch_step_s = 0, fused_fwd_s = 0, fused_step_s = 0;
  bool fused = false;  // whether bn_act took the map (AVX2 + FMA; channels-last: channels a multiple of 8)
};

NormBenchResult bench_norm(const NormBenchOptions& o, bool verbose);

}  // namespace cp2::compute
