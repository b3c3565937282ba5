#include "cp2/compute/conv_bench.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "cp2/common.h"
#include "cp2/compute/bench_timing.h"
#include "cp2/cpu_allocator.h"
#include "cp2/compute/conv.h"
#include "cp2/compute/dilated.h"
#include "cp2/compute/winograd.h"

namespace cp2::compute {

void ConvBenchOptions::validate() const {
  require_positive("batch", batch);
  require_positive("in", in);
  require_positive("out", out);
  require_positive("size", size);
  require_positive("dilation", dilation);
  require_positive("rounds", rounds);
  if (kernel != 1 && kernel != 3) throw Error("--kernel: expected 1 or 3, found " + std::to_string(kernel));
  if (kernels != "best" && kernels != "onednn" && kernels != "tiles" && kernels != "tiles-f4" && kernels != "tiles-f3")
    throw Error("--kernels: expected best, onednn, tiles, tiles-f4 or tiles-f3, found '" + kernels + "'");
}

ConvBenchResult bench_conv(const ConvBenchOptions& o, bool verbose) {
  o.validate();
  // As in training (seg/bench.cpp, the trainers): without it every large buffer is a fresh
  // mmap and page faults, which weighs on the Winograd domain's filters most.
  install_caching_cpu_allocator();
  const bool pointwise = o.kernel == 1;
  const int64_t d = pointwise ? 1 : o.dilation;
  torch::nn::Conv2d conv(
      torch::nn::Conv2dOptions(o.in, o.out, o.kernel).padding(pointwise ? 0 : d).dilation(d).bias(false));
  const auto fmt = o.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  conv->weight.set_data(conv->weight.detach().contiguous(fmt));
  const auto x = torch::randn({o.batch, o.in, o.size, o.size}).contiguous(fmt).requires_grad_(true);
  const auto g = torch::randn({o.batch, o.out, o.size, o.size}).contiguous(fmt);
  const auto kernels = o.kernels == "onednn" ? WinogradKernels::onednn
                       : o.kernels == "tiles"    ? WinogradKernels::tiles
                       : o.kernels == "tiles-f4" ? WinogradKernels::tiles_f4
                       : o.kernels == "tiles-f3" ? WinogradKernels::tiles_f3
                                                 : WinogradKernels::best;
  // A named set that cannot run here is an error, not a silent "direct" (the point of naming
  // it is to time those kernels).
  if (std::string why; o.kernels != "best" && !winograd_kernels_available(kernels, &why))
    throw Error("--kernels " + o.kernels + ": not available here: " + why);
  ConvBenchResult r;
  {
    WinogradScope on(true, kernels);
    const auto path = conv_path(*conv, x);
    r.fast = conv_path_name(path);
    if (path == ConvPath::winograd || path == ConvPath::winograd_subgrids) {
      const auto plan = winograd_plan_for(x, o.out, path == ConvPath::winograd ? 1 : d);
      r.fast += std::string(" (") + winograd_kernels_name(plan.kernels) +
                (plan.kernels == WinogradKernels::tiles ? ", F(" + std::to_string(plan.tile) + "x" +
                                                              std::to_string(plan.tile) + ")"
                                                        : std::string()) +
                ")";
    }
  }
  auto fwd = [&](bool fast) {
    torch::NoGradGuard ng;
    WinogradScope s(fast, kernels);
    conv2d(*conv, x);
  };
  auto step = [&](bool fast) {
    WinogradScope s(fast, kernels);
    auto y = conv2d(*conv, x);
    torch::autograd::grad({y}, {x, conv->weight}, {g});
  };
  r.direct_fwd_s = best_of(o.rounds, [&] { fwd(false); });
  r.fast_fwd_s = best_of(o.rounds, [&] { fwd(true); });
  r.direct_step_s = best_of(o.rounds, [&] { step(false); });
  r.fast_step_s = best_of(o.rounds, [&] { step(true); });
  if (verbose) {
    const double full = 2.0 * o.batch * o.in * o.out * o.kernel * o.kernel * o.size * o.size;  // one pass, every tap
    const auto ll = [](int64_t v) { return static_cast<long long>(v); };
    if (pointwise)
      std::printf("shape          x [%lld, %lld, %lld, %lld] * w [%lld, %lld, 1, 1], %s; %.2f GFLOP per pass\n",
                  ll(o.batch), ll(o.in), ll(o.size), ll(o.size), ll(o.out), ll(o.in),
                  o.channels_last ? "channels-last" : "NCHW", full / 1e9);
    else
      std::printf("shape          x [%lld, %lld, %lld, %lld] * w [%lld, %lld, 3, 3], dilation %lld, %s; %.2f GFLOP per "
                  "pass (all 9 taps), %.0f %% of them read the image\n",
                  ll(o.batch), ll(o.in), ll(o.size), ll(o.size), ll(o.out), ll(o.in), ll(d),
                  o.channels_last ? "channels-last" : "NCHW", full / 1e9, 100 * dilated_taps_kept(o.size, o.size, d));
    std::printf("direct         forward %.4f s, forward + both gradients %.4f s\n", r.direct_fwd_s, r.direct_step_s);
    std::printf("fast           %s: forward %.4f s, forward + both gradients %.4f s (%.2fx, %.2fx direct)\n",
                r.fast.c_str(), r.fast_fwd_s, r.fast_step_s, r.direct_fwd_s / r.fast_fwd_s,
                r.direct_step_s / r.fast_step_s);
  }
  return r;
}

}  // namespace cp2::compute
