// compute/bn_act.h: batch norm + residual + ReLU in one pass each way, against PyTorch's ops
// in double precision; where it is taken; thread-count independence; the module's use of it.
#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cp2/compute/bn_act.h"
#include "cp2/compute/bn_bench.h"
#include "cp2/compute/bn_kernels.h"
#include "cp2/compute/op_profile.h"
#include "cp2/compute/precision.h"
#include "cp2/compute/winograd.h"
#include "cp2/models/batchnorm.h"
#include "../helpers.h"

using namespace cp2;
using cp2::test::max_rel;

namespace {

const auto kCl = at::MemoryFormat::ChannelsLast;
const auto kNchw = at::MemoryFormat::Contiguous;

// Whether bn_act runs on this CPU: every x86-64 CPU CI and benchmarks ran on has AVX2 + FMA, so
// there it must; elsewhere it is never taken (TakenOnlyWhereItQualifies checks that).
bool fast_here() {
#if defined(__x86_64__)
  EXPECT_TRUE(compute::bnk::cpu_supported()) << "an x86-64 CPU without AVX2 + FMA";
#endif
  return compute::bnk::cpu_supported();
}

struct Case {
  std::vector<int64_t> shape;
  bool residual, relu, affine;
  double offset;  // added to x: a channel mean far from zero against its spread
};

// relu(batch_norm(x) + r) and the gradients of sum(y·g) for x, w, b, r; then the running
// statistics: {y, dx, dw, db, dr, running_mean, running_var} (undefined where absent). Maps in
// `layout`.
std::vector<at::Tensor> run_case(const Case& k, at::ScalarType dtype, bool fused, at::MemoryFormat layout = kCl) {
  torch::manual_seed(7);
  const int64_t c = k.shape[1];
  auto x = (torch::randn(k.shape) * 3 + k.offset).contiguous(layout);
  auto r = k.residual ? torch::randn(k.shape).contiguous(layout) : at::Tensor();
  auto g = torch::randn(k.shape).contiguous(layout);
  auto w = torch::rand({c}) + 0.5, b = torch::randn({c});
  auto rm = torch::randn({c}), rv = torch::rand({c}) + 0.5;
  auto cast = [&](at::Tensor t) {
    return !t.defined() ? t : t.dim() == 4 ? t.to(dtype).contiguous(layout).detach() : t.to(dtype).detach();
  };
  x = cast(x).requires_grad_(true), g = cast(g), rm = cast(rm), rv = cast(rv);
  if (r.defined()) r = cast(r).requires_grad_(true);
  if (k.affine) w = cast(w).requires_grad_(true), b = cast(b).requires_grad_(true);
  else w = at::Tensor(), b = at::Tensor();
  at::Tensor y;
  if (fused) {
    EXPECT_TRUE(compute::bn_act_applies(x, r, true));
    y = compute::bn_act(x, w, b, rm, rv, true, 0.1, 1e-5, r, k.relu);
  } else {
    y = torch::batch_norm(x, w, b, rm, rv, true, 0.1, 1e-5, false);
    if (r.defined()) y = y + r;
    if (k.relu) y = y.relu();
  }
  std::vector<at::Tensor> in{x};
  if (k.affine) in.push_back(w), in.push_back(b);
  if (r.defined()) in.push_back(r);
  auto grads = torch::autograd::grad({y}, in, {g});
  std::vector<at::Tensor> out{y.detach(), grads[0]};
  out.push_back(k.affine ? grads[1] : at::Tensor());
  out.push_back(k.affine ? grads[2] : at::Tensor());
  out.push_back(r.defined() ? grads.back() : at::Tensor());
  out.push_back(rm);
  out.push_back(rv);
  return out;
}

}  // namespace

TEST(BnAct, MatchesPyTorchsOpsInDoubleForwardGradientsAndRunningStats) {
  if (!fast_here()) return;
  compute::WinogradScope on(true);
  const std::vector<Case> cases = {
      {{3, 16, 5, 7}, false, true, true, 0.0},     // conv → BN → ReLU
      {{2, 64, 4, 4}, true, true, true, 0.0},      // a block's last: + shortcut, ReLU
      {{2, 24, 6, 3}, false, false, true, 0.0},    // the shortcut's own BN: no ReLU
      {{4, 8, 1, 1}, false, true, true, 0.0},      // ASPP's image pool: 1×1 maps
      {{2, 32, 9, 9}, false, true, false, 0.0},    // affine = false
      {{2, 16, 40, 40}, true, true, true, 100.0},  // mean 100 against std 3, and several summing chunks
  };
  // NCHW planes too: these and channel counts that are not a multiple of 8, planes shorter than
  // a vector (2x3) and with a tail (5x7 = 35 values), 1600-value planes (several 256-value blocks).
  std::vector<std::pair<Case, at::MemoryFormat>> runs;
  for (const auto& k : cases) runs.emplace_back(k, kCl);
  for (const auto& k : cases) runs.emplace_back(k, kNchw);
  for (const Case& k : {Case{{3, 12, 5, 7}, true, true, true, 0.0}, Case{{2, 5, 2, 3}, false, true, true, 0.0},
                        Case{{3, 3, 40, 40}, true, false, true, 100.0}})
    runs.emplace_back(k, kNchw);
  const char* names[] = {"y", "dx", "dw", "db", "dr", "running_mean", "running_var"};
  for (const auto& [k, layout] : runs) {
    SCOPED_TRACE(::testing::Message() << "shape " << k.shape << " residual " << k.residual << " relu " << k.relu
                                      << " affine " << k.affine << " offset " << k.offset
                                      << (layout == kCl ? " channels-last" : " NCHW"));
    const auto got = run_case(k, at::kFloat, true, layout), ref = run_case(k, at::kDouble, false, layout);
    ASSERT_EQ(got.size(), ref.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      ASSERT_EQ(got[i].defined(), ref[i].defined()) << names[i];
      if (!ref[i].defined()) continue;
      EXPECT_EQ(got[i].scalar_type(), at::kFloat) << names[i];
      // fp32 against fp64: ≤ 1.1e-6 measured (the statistics summed in double across 32-pixel
      // blocks); without the shift by a sample, 2.2e-5 at the offset of 100.
      EXPECT_LT(max_rel(got[i], ref[i]), 5e-6) << names[i];
    }
    EXPECT_TRUE(got[0].is_contiguous(layout));
    EXPECT_TRUE(got[1].is_contiguous(layout));
    if (k.residual) EXPECT_TRUE(got[4].is_contiguous(layout));
  }
}

TEST(BnAct, EvaluationUsesTheRunningStatistics) {
  if (!fast_here()) return;
  compute::WinogradScope on(true);
  for (const auto layout : {kCl, kNchw}) {
    SCOPED_TRACE(layout == kCl ? "channels-last" : "NCHW");
    torch::manual_seed(3);
    const auto x = torch::randn({2, 16, 5, 5}).contiguous(layout), r = torch::randn({2, 16, 5, 5}).contiguous(layout);
    const auto w = torch::rand({16}) + 0.5, b = torch::randn({16});
    const auto rm = torch::randn({16}), rv = torch::rand({16}) + 0.1;
    torch::NoGradGuard ng;
    ASSERT_TRUE(compute::bn_act_applies(x, r, false));
    const auto rm0 = rm.clone(), rv0 = rv.clone();
    const auto got = compute::bn_act(x, w, b, rm, rv, false, 0.1, 1e-5, r, true);
    const auto ref = (torch::batch_norm(x.to(at::kDouble), w.to(at::kDouble), b.to(at::kDouble), rm.to(at::kDouble),
                                        rv.to(at::kDouble), false, 0.1, 1e-5, false) +
                      r.to(at::kDouble))
                         .relu();
    EXPECT_LT(max_rel(got, ref), 1e-6);
    EXPECT_TRUE(got.is_contiguous(layout));
    EXPECT_TRUE(torch::equal(rm, rm0));  // untouched
    EXPECT_TRUE(torch::equal(rv, rv0));
  }
}

TEST(BnAct, TakenOnlyWhereItQualifies) {
  const bool here = compute::bnk::cpu_supported();
  const auto x = torch::randn({2, 16, 4, 4}).contiguous(kCl);
  {
    compute::WinogradScope off(false);  // train.conv_algorithm: direct: PyTorch's ops
    EXPECT_FALSE(compute::bn_act_applies(x, at::Tensor(), true));
  }
  compute::WinogradScope on(true);
  EXPECT_EQ(compute::bn_act_applies(x, at::Tensor(), true), here);
  EXPECT_EQ(compute::bn_act_applies(x, x.clone(), true), here);
  EXPECT_EQ(compute::bn_act_applies(torch::randn({3, 8, 1, 1}), at::Tensor(), true), here);  // 1×1 maps
  // NCHW: as planes, any channel count, with an NCHW residual only; other strides: PyTorch's.
  const auto xn = torch::randn({2, 12, 4, 4});
  EXPECT_EQ(compute::bn_act_applies(xn, at::Tensor(), true), here);
  EXPECT_EQ(compute::bn_act_applies(xn, xn.clone(), true), here);
  EXPECT_FALSE(compute::bn_act_applies(xn, xn.contiguous(kCl), true));
  EXPECT_FALSE(compute::bn_act_applies(torch::randn({2, 4, 4, 12}).permute({0, 3, 2, 1}), at::Tensor(), true));
  EXPECT_FALSE(compute::bn_act_applies(torch::randn({2, 12, 4, 8}).slice(3, 0, 4), at::Tensor(), true));
  EXPECT_FALSE(compute::bn_act_applies(torch::randn({2, 12, 4, 4}).contiguous(kCl), at::Tensor(), true));  // C % 8
  EXPECT_FALSE(compute::bn_act_applies(x.to(at::kBFloat16), at::Tensor(), true));
  EXPECT_FALSE(compute::bn_act_applies(x.to(at::kDouble), at::Tensor(), true));
  EXPECT_FALSE(compute::bn_act_applies(torch::randn({1, 8, 1, 1}), at::Tensor(), true));  // one value per channel
  EXPECT_FALSE(compute::bn_act_applies(x, torch::randn({2, 16, 4, 4}), true));            // NCHW residual
  EXPECT_FALSE(compute::bn_act_applies(x, torch::randn({2, 16, 4, 2}).contiguous(kCl), true));
  EXPECT_FALSE(compute::bn_act_applies(x, at::Tensor(), false));  // running statistics with gradients
  {
    torch::NoGradGuard ng;
    EXPECT_EQ(compute::bn_act_applies(x, at::Tensor(), false), here);
  }
  {
    compute::AutocastScope bf16(true, false);
    EXPECT_FALSE(compute::bn_act_applies(x, at::Tensor(), true));
  }
}

TEST(BnAct, SameBitsWhateverTheThreadCount) {
  if (!fast_here()) return;
  compute::WinogradScope on(true);
  const int threads = at::get_num_threads();
  const Case k{{3, 32, 33, 33}, true, true, true, 1.0};  // 3267 pixels: 7 summing chunks
  for (const auto layout : {kCl, kNchw}) {
    at::set_num_threads(1);
    const auto one = run_case(k, at::kFloat, true, layout);
    at::set_num_threads(std::max(2, threads));
    const auto many = run_case(k, at::kFloat, true, layout);
    at::set_num_threads(threads);
    for (size_t i = 0; i < one.size(); ++i)
      EXPECT_TRUE(torch::equal(one[i], many[i])) << "tensor " << i << (layout == kCl ? " channels-last" : " NCHW");
  }
}

TEST(BnAct, TheModuleTakesItWithTheFastAlgorithmsAndMatchesItsOwnOpsWithout) {
  torch::manual_seed(11);
  models::SyncableBatchNorm2d bn(32);
  {
    torch::NoGradGuard ng;
    bn->weight.uniform_(0.5, 1.5);
    bn->bias.normal_();
  }
  for (const auto layout : {kCl, kNchw}) {
    SCOPED_TRACE(layout == kCl ? "channels-last" : "NCHW");
    const auto x0 = torch::randn({2, 32, 6, 6}).contiguous(layout), r0 = torch::randn({2, 32, 6, 6}).contiguous(layout);
    // Also counts the calls that took bn_act (training and evaluation: 2 with the fast algorithms).
    auto run = [&](bool fast, int64_t* taken) {
      auto m = std::dynamic_pointer_cast<models::SyncableBatchNorm2dImpl>(bn->clone());
      compute::WinogradScope scope(fast);
      compute::OpProfiler profiler;
      auto x = x0.clone().requires_grad_(true), r = r0.clone().requires_grad_(true);
      auto y = m->forward_relu(x, r);
      y.pow(2).sum().backward();
      m->eval();
      at::Tensor e;
      {
        torch::NoGradGuard ng;
        e = m->forward_relu(x0);
      }
      for (const auto& op : profiler.result())
        if (op.name == "cp2::bn_act") *taken = op.calls;
      return std::vector<at::Tensor>{y.detach(), x.grad(), r.grad(), m->weight.grad(), m->bias.grad(),
                                     m->running_mean, m->running_var, m->num_batches_tracked, e};
    };
    int64_t direct_taken = 0, fast_taken = 0;
    const auto direct = run(false, &direct_taken), fast = run(true, &fast_taken);
    EXPECT_EQ(direct_taken, 0);
    EXPECT_EQ(fast_taken, fast_here() ? 2 : 0);
    // Without the fast algorithms: exactly PyTorch's ops, as the module ran them before.
    {
      auto m = std::dynamic_pointer_cast<models::SyncableBatchNorm2dImpl>(bn->clone());
      auto x = x0.clone().requires_grad_(true), r = r0.clone().requires_grad_(true);
      auto y = m->forward(x);
      y += r;
      y.relu_();
      EXPECT_TRUE(torch::equal(y.detach(), direct[0]));
      EXPECT_TRUE(torch::equal(m->running_var, direct[6]));
    }
    for (size_t i = 0; i < direct.size(); ++i) EXPECT_LT(max_rel(fast[i], direct[i]), 1e-5) << "tensor " << i;
    EXPECT_EQ(fast[7].item<int64_t>(), 1);
  }
}

TEST(BnAct, NormBenchTimesBothAndRefusesBadSizes) {
  compute::NormBenchOptions o;
  o.batch = 2, o.channels = 16, o.size = 6, o.rounds = 1, o.residual = true;
  const auto r = compute::bench_norm(o, false);
  EXPECT_EQ(r.fused, compute::bnk::cpu_supported());
  for (double t : {r.torch_fwd_s, r.torch_step_s, r.fused_fwd_s, r.fused_step_s}) EXPECT_GT(t, 0);
  o.nchw = true, o.channels = 12;  // NCHW planes: any channel count
  EXPECT_EQ(compute::bench_norm(o, false).fused, compute::bnk::cpu_supported());
  o.channels = 0;
  cp2::test::expect_error([&] { compute::bench_norm(o, false); }, {"--channels", "expected a positive value", "0"});
  o.channels = 8, o.batch = 1, o.size = 1;
  cp2::test::expect_error([&] { compute::bench_norm(o, false); }, {"more than one value per channel", "found 1"});
}
