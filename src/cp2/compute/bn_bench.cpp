#include "cp2/compute/bn_bench.h"

#include <torch/torch.h>

#include <cstdio>

#include "cp2/common.h"
#include "cp2/compute/bench_timing.h"
#include "cp2/compute/bn_act.h"
#include "cp2/compute/winograd.h"
#include "cp2/cpu_allocator.h"

namespace cp2::compute {

void NormBenchOptions::validate() const {
  require_positive("batch", batch);
  require_positive("channels", channels);
  require_positive("size", size);
  require_positive("rounds", rounds);
  if (batch * size * size < 2)
    throw Error("--batch, --size: expected more than one value per channel (training-mode batch norm), found " +
                std::to_string(batch * size * size));
}

NormBenchResult bench_norm(const NormBenchOptions& o, bool verbose) {
  o.validate();
  install_caching_cpu_allocator();  // as in training: no fresh mmap per map
  const auto layout = o.nchw ? at::MemoryFormat::Contiguous : at::MemoryFormat::ChannelsLast;
  const int64_t c = o.channels;
  const auto x = (torch::randn({o.batch, c, o.size, o.size}) * 2 + 0.5).contiguous(layout).requires_grad_(true);
  const auto r = o.residual ? torch::randn_like(x).requires_grad_(true) : torch::Tensor();
  const auto g = torch::randn_like(x);
  const auto w = (torch::rand({c}) + 0.5).requires_grad_(true), b = torch::randn({c}).requires_grad_(true);
  auto rm = torch::zeros({c}), rv = torch::ones({c});
  NormBenchResult res;
  {
    WinogradScope on(true);
    res.fused = bn_act_applies(x, r, true);
  }
  // The model's code path (models/batchnorm.cpp): cp2's pass where it applies, else PyTorch's ops.
  auto run = [&](bool fused) {
    WinogradScope s(fused);
    if (fused && res.fused) return bn_act(x, w, b, rm, rv, true, 0.1, 1e-5, r, true);
    auto y = torch::batch_norm(x, w, b, rm, rv, true, 0.1, 1e-5, false);
    if (r.defined()) y += r;
    return y.relu_();
  };
  auto fwd = [&](bool fused) {
    torch::NoGradGuard ng;
    run(fused);
  };
  auto step = [&](bool fused) {
    auto y = run(fused);
    std::vector<at::Tensor> in{x, w, b};
    if (r.defined()) in.push_back(r);
    torch::autograd::grad({y}, in, {g});
  };
  res.torch_fwd_s = best_of(o.rounds, [&] { fwd(false); });
  res.fused_fwd_s = best_of(o.rounds, [&] { fwd(true); });
  res.torch_step_s = best_of(o.rounds, [&] { step(false); });
  res.fused_step_s = best_of(o.rounds, [&] { step(true); });
  if (verbose) {
    const auto ll = [](int64_t v) { return static_cast<long long>(v); };
    const double mb = 4.0 * x.numel() / 1e6;
    std::printf("shape          x [%lld, %lld, %lld, %lld], %s, %.1f MB%s\n", ll(o.batch), ll(c), ll(o.size),
                ll(o.size), o.nchw ? "NCHW" : "channels-last", mb, o.residual ? ", + residual" : "");
    std::printf("pytorch        forward %.4f s, forward + gradients %.4f s (batch_norm, %srelu_)\n", res.torch_fwd_s,
                res.torch_step_s, o.residual ? "+=, " : "");
    if (res.fused)
      std::printf("cp2            one pass: forward %.4f s, forward + gradients %.4f s (%.2fx, %.2fx pytorch)\n",
                  res.fused_fwd_s, res.fused_step_s, res.torch_fwd_s / res.fused_fwd_s,
                  res.torch_step_s / res.fused_step_s);
    else
      std::printf("cp2            not taken here (needs AVX2 + FMA; channels-last: channels a multiple of 8): "
                  "PyTorch's ops\n");
  }
  return res;
}

}  // namespace cp2::compute
