// `cp2 bench conv`: one 3×3 convolution (stride 1, padding = dilation, no bias, fp32 on the
// CPU), or one 1×1 (stride 1, no padding), timed alone, forward and forward + both gradients,
// through PyTorch's direct algorithm and through the algorithm compute/conv.h picks under
// train.conv_algorithm: winograd (the shape-level evidence behind its rules;
// docs/benchmarks.md).
#pragma once
#include <cstdint>
#include <string>

namespace cp2::compute {

struct ConvBenchOptions {
  int64_t batch = 2, in = 2048, out = 512, size = 32, dilation = 24;
  int64_t kernel = 3;  // 3, or 1 (a 1×1: dilation and kernels play no part)
  bool channels_last = false;
  // Winograd kernels: best (as train.conv_algorithm picks them), onednn, or tiles (cp2's,
  // also where compute/winograd_tiles.h's pay-off rule would run the convolution direct).
  std::string kernels = "best";
  int rounds = 3;  // best of, after one untimed call
  void validate() const;  // names the option and the value
};

struct ConvBenchResult {
  double direct_fwd_s = 0, direct_step_s = 0, fast_fwd_s = 0, fast_step_s = 0;
  std::string fast;  // compute::conv2d's pick: "tap GEMMs", "Winograd (oneDNN)", "direct", ...
};

ConvBenchResult bench_conv(const ConvBenchOptions& o, bool verbose);

}  // namespace cp2::compute
