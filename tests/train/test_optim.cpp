// SGD / AdamW against torch.optim (tools/make_parity_fixtures.py::optim_fixture), the
// cosine schedule, and optimizer state round trips.
#include <torch/torch.h>

#include <cmath>
#include <map>

#include "../helpers.h"
#include "cp2/common.h"
#include "cp2/train/optim.h"
#include "cp2/train/sgd_fma.h"

namespace cp2::test {
namespace {

using namespace cp2::train;

TEST(OptimParity, SgdAndAdamWMatchTorchOptim) {
  auto ref = load_tensors(fixture("optim_ref.pt"));
  auto lrs = ref.at("lr");
  for (std::string name : {"sgd", "adamw"}) {
    OptimOptions o;
    o.name = name;
    o.weight_decay = name == "sgd" ? 1e-4 : 0.01;
    NamedTensors ps;
    for (int i = 0; i < 2; ++i)
      ps.emplace_back("p" + std::to_string(i), ref.at("p0." + std::to_string(i)).clone().set_requires_grad(true));
    Optimizer opt(ps, o);
    for (int s = 0; s < 3; ++s) {
      for (int i = 0; i < 2; ++i) ps[i].second.mutable_grad() = ref.at("grad." + std::to_string(s) + "." + std::to_string(i)).clone();
      opt.step(lrs[s].item<double>());
    }
    for (int i = 0; i < 2; ++i) {
      double e = max_rel(ps[i].second.detach(), ref.at(name + "." + std::to_string(i)));
      std::printf("[optim parity] %s param %d: max rel error %.2e (tol 1e-6)\n", name.c_str(), i, e);
      EXPECT_LE(e, 1e-6) << name << " " << i;
    }
  }
}

// The multi-tensor SGD against torch.optim.SGD's per-tensor form (_single_tensor_sgd), bit for
// bit: weight decay on and off, momentum on and off, a channels-last parameter, and a
// parameter whose gradient appears only from the second step (its buffer starts there while
// the others' continue).
TEST(Optim, SgdMultiTensorEqualsPerTensorBitForBit) {
  for (double wd : {1e-4, 0.0})
    for (double momentum : {0.9, 0.0}) {
      OptimOptions o;
      o.name = "sgd";
      o.weight_decay = wd;
      o.momentum = momentum;
      torch::manual_seed(7);
      // p4: large enough for several threads' chunks and a ragged end; p5: its gradient comes in
      // another layout than the parameter (the multi-tensor ops take it, not the one pass).
      std::vector<at::Tensor> init{torch::randn({8, 3, 3, 3}), torch::randn({8, 4, 2, 3}), torch::randn({5}),
                                   torch::randn({3, 7}),       torch::randn({100003}),      torch::randn({6, 5, 2, 2})};
      init[1] = init[1].contiguous(at::MemoryFormat::ChannelsLast);
      NamedTensors ps;
      std::vector<at::Tensor> ref, buf(init.size());
      for (size_t i = 0; i < init.size(); ++i) {
        ps.emplace_back("p" + std::to_string(i), init[i].clone(init[i].suggest_memory_format()).set_requires_grad(true));
        ref.push_back(init[i].clone(init[i].suggest_memory_format()));
      }
      Optimizer opt(ps, o);
      for (int s = 0; s < 4; ++s) {
        const double lr = 0.1 / (s + 1);
        for (size_t i = 0; i < init.size(); ++i) {
          if (i == 3 && s == 0) continue;  // no gradient yet
          auto g = torch::randn_like(init[i]);
          ps[i].second.mutable_grad() =
              i == 5 ? g.contiguous(at::MemoryFormat::ChannelsLast) : g.clone(g.suggest_memory_format());
          // The per-tensor update, written out.
          if (wd != 0) g = g.add(ref[i], wd);
          if (momentum != 0) {
            buf[i] = buf[i].defined() ? buf[i].mul_(momentum).add_(g) : g.clone();
            g = buf[i];
          }
          ref[i].add_(g, -lr);
        }
        opt.step(lr);
        opt.zero_grad();
      }
      for (size_t i = 0; i < init.size(); ++i)
        EXPECT_TRUE(torch::equal(ps[i].second.detach(), ref[i])) << "wd " << wd << " momentum " << momentum << " p" << i;
      EXPECT_EQ(ps[1].second.suggest_memory_format(), at::MemoryFormat::ChannelsLast);
      EXPECT_EQ(opt.state().size(), momentum != 0 ? init.size() + 1 : 1u);  // buffers + "step"
    }
}

// The one-pass kernel alone against ATen's ops on the same floats, bit for bit, over odd
// lengths and offsets (vector body and scalar tail), every case of decay and momentum. It runs
// wherever /proc/cpuinfo lists avx2 and fma (the CPUs of issue 11: Zen 3-5, Intel Xeon).
TEST(Optim, OnePassSgdKernelEqualsAtenOps) {
  const auto flags = cpuinfo("flags");
  const bool fma = has_word(flags, "avx2") && has_word(flags, "fma");
  ASSERT_EQ(sgd_fma::cpu_supported(), fma) << flags;
  if (!fma) return;  // the optimizer takes ATen's ops (the test above)
  torch::manual_seed(3);
  for (int64_t n : {1, 7, 8, 9, 31, 1000, 4099})
    for (float wd : {0.f, 5e-4f})
      for (float m : {0.f, 0.9f})
        for (bool first : {true, false}) {
          if (first && m == 0.f) continue;
          auto p = torch::randn({n}), g = torch::randn({n}), buf = torch::randn({n});
          const float neg_lr = static_cast<float>(-0.0123);
          auto rp = p.clone(), rb = buf.clone();
          auto d = wd != 0.f ? g.add(rp, wd) : g.clone();
          if (m != 0.f) {
            rb = first ? d.clone() : rb.mul_(m).add_(d);
            d = rb;
          }
          rp.add_(d, -0.0123);
          // Split at an odd point, as parallel_for's chunks split it.
          const int64_t cut = n / 3;
          sgd_fma::update(p.data_ptr<float>(), g.data_ptr<float>(), buf.data_ptr<float>(), 0, cut, wd, m, first, neg_lr);
          sgd_fma::update(p.data_ptr<float>(), g.data_ptr<float>(), buf.data_ptr<float>(), cut, n, wd, m, first, neg_lr);
          EXPECT_TRUE(torch::equal(p, rp)) << "n " << n << " wd " << wd << " m " << m << " first " << first;
          if (m != 0.f) EXPECT_TRUE(torch::equal(buf, rb)) << "n " << n << " wd " << wd << " m " << m;
        }
}

// The momentum update's one-pass kernel against ATen's k.mul_(m).add_(q, 1 - m) (MoCo's
// update, pretrain/model.cpp), bit for bit over odd lengths and a split.
TEST(Optim, OnePassMomentumBlendEqualsAtenOps) {
  if (!sgd_fma::cpu_supported()) return;  // the model takes ATen's multi-tensor ops
  torch::manual_seed(4);
  for (int64_t n : {1, 7, 8, 9, 31, 1000, 4099})
    for (double m : {0.999, 0.99, 0.5}) {
      auto k = torch::randn({n}), q = torch::randn({n});
      auto want = k.clone().mul_(m).add_(q, 1.0 - m);
      const int64_t cut = n / 3;
      const auto fm = static_cast<float>(m), alpha = static_cast<float>(1.0 - m);
      sgd_fma::blend(k.data_ptr<float>(), q.data_ptr<float>(), 0, cut, fm, alpha);
      sgd_fma::blend(k.data_ptr<float>(), q.data_ptr<float>(), cut, n, fm, alpha);
      EXPECT_TRUE(torch::equal(k, want)) << "n " << n << " m " << m;
    }
}

TEST(Optim, StateRoundTripContinuesIdentically) {
  for (std::string name : {"sgd", "adamw"}) {
    OptimOptions o;
    o.name = name;
    auto make = [] { return NamedTensors{{"w", torch::arange(6, torch::kFloat).view({2, 3}).set_requires_grad(true)}}; };
    auto a = make(), b = make();
    Optimizer oa(a, o), ob(b, o);
    auto g = torch::linspace(-1, 1, 6).view({2, 3});
    for (int s = 0; s < 2; ++s) {
      a[0].second.mutable_grad() = g * (s + 1);
      oa.step(0.1);
      b[0].second.mutable_grad() = g * (s + 1);
      ob.step(0.1);
    }
    // A fresh optimizer loaded from ob's state behaves as ob.
    auto c = NamedTensors{{"w", b[0].second.detach().clone().set_requires_grad(true)}};
    Optimizer oc(c, o);
    oc.load_state(ob.state(), "state");
    a[0].second.mutable_grad() = g * 3;
    oa.step(0.05);
    c[0].second.mutable_grad() = g * 3;
    oc.step(0.05);
    EXPECT_TRUE(torch::equal(a[0].second, c[0].second)) << name;
  }
}

// train.loss_scale (GradScaler's rule): a power-of-two scale changes no fp32 gradient, so a
// scaled run steps bit for bit as an unscaled one; a non-finite gradient skips the update
// (weights and momentum untouched) and halves the scale; growth_interval finite steps double
// it; the scale, its growth count and the skips travel with the state.
// The loss-scaling tests' problem: two parameters and a small smooth loss of them.
NamedTensors tiny_params() {
  return NamedTensors{{"w", torch::linspace(-1, 2, 6).view({2, 3}).set_requires_grad(true)},
                      {"b", torch::full({3}, 0.25).set_requires_grad(true)}};
}
at::Tensor tiny_loss(const NamedTensors& p) {
  const auto x = torch::linspace(0.1, 0.7, 12).view({4, 3});
  return ((x * p[0].second[0]).sum(1, true).tanh() * p[1].second).pow(2).mean();
}

TEST(Optim, LossScalingIsExactAndSkipsNonFiniteSteps) {
  OptimOptions o;
  o.weight_decay = 1e-4;
  auto make = tiny_params;
  auto a = make(), b = make();
  Optimizer plain(a, o), scaled(b, o);
  scaled.enable_loss_scaling(1024, 2);
  EXPECT_TRUE(scaled.loss_scaling());
  auto loss = tiny_loss;
  for (int s = 0; s < 3; ++s) {
    plain.zero_grad();
    loss(a).backward();
    plain.step(0.1);
    scaled.zero_grad();
    EXPECT_NEAR(scaled.scaled(loss(b)).item<double>(), loss(b).item<double>() * scaled.loss_scale(), 1e-3);
    scaled.scaled(loss(b)).backward();
    EXPECT_TRUE(scaled.step(0.1));
    for (int i = 0; i < 2; ++i) EXPECT_TRUE(torch::equal(a[i].second, b[i].second)) << "step " << s << " param " << i;
  }
  EXPECT_EQ(scaled.loss_scale(), 2048);  // doubled after 2 finite steps, then 1 more
  for (float bad : {INFINITY, NAN}) {
    const auto before = b[0].second.detach().clone();
    const auto state_before = scaled.state();
    const double scale = scaled.loss_scale();
    scaled.zero_grad();
    scaled.scaled(loss(b)).backward();
    b[1].second.mutable_grad()[1] = bad;
    EXPECT_FALSE(scaled.step(0.1)) << bad;
    EXPECT_TRUE(torch::equal(b[0].second, before));
    EXPECT_EQ(scaled.loss_scale(), scale / 2);
    EXPECT_TRUE(torch::equal(scaled.state()[0].second, state_before[0].second));  // momentum untouched
  }
  EXPECT_EQ(scaled.skipped_steps(), 2);
  // The state carries the scale; a run without scaling keeps none.
  const auto state = scaled.state(), plain_state = plain.state();
  const std::map<std::string, at::Tensor> st(state.begin(), state.end()), pst(plain_state.begin(), plain_state.end());
  ASSERT_TRUE(st.count("loss_scale") && st.count("loss_scale_growth") && st.count("loss_scale_skipped"));
  EXPECT_EQ(st.at("loss_scale").item<double>(), 512);
  EXPECT_EQ(pst.count("loss_scale"), 0u);
  auto c = make();
  Optimizer resumed(c, o);
  resumed.enable_loss_scaling(65536, 2);
  resumed.load_state(scaled.state(), "ck.pt");
  EXPECT_EQ(resumed.loss_scale(), 512);
  EXPECT_EQ(resumed.skipped_steps(), 2);
  auto bad = scaled.state();
  for (auto& [k, t] : bad)
    if (k == "loss_scale") t = torch::tensor(-1.0, torch::kDouble);
  expect_error([&] { resumed.load_state(bad, "ck.pt"); }, {"ck.pt", "loss scale", "not positive"});
  expect_error([&] { resumed.enable_loss_scaling(0, 2); }, {"loss scaling", "positive"});
  // Gradients that stay non-finite at any scale stop the run instead of skipping every step.
  resumed.enable_loss_scaling(1, 2);
  expect_error(
      [&] {
        for (int i = 0; i < 100; ++i) {
          resumed.zero_grad();
          c[0].second.mutable_grad() = torch::full({2, 3}, NAN);
          resumed.step(0.1);
        }
      },
      {"loss scaling", "non-finite", "steps skipped", "diverged"});
  EXPECT_EQ(resumed.skipped_steps(), 2 + 85);
  // A step whose loss is not finite (no backward pass): skipped as one whose gradients are not.
  resumed.enable_loss_scaling(1024, 2);
  const auto before = resumed.skipped_steps();
  resumed.skip_step();
  EXPECT_EQ(resumed.loss_scale(), 512);
  EXPECT_EQ(resumed.skipped_steps(), before + 1);
  Optimizer unscaled(c, o);
  expect_error([&] { unscaled.skip_step(); }, {"loss scaling", "only with loss scaling on"});
}

// A CUDA graph with loss scaling runs step() as its parts, reading the flag between them
// (pretrain/graph_step.h): unscale_grads, settle_scale, update give step()'s weights, momentum,
// scale and skips bit for bit, across growth and a skip (here on the CPU, where both run eagerly).
TEST(Optim, LossScalingPartsAreStep) {
  OptimOptions o;
  o.weight_decay = 1e-4;
  auto a = tiny_params(), b = tiny_params();
  Optimizer whole(a, o), parts(b, o);
  whole.enable_loss_scaling(1024, 2);
  parts.enable_loss_scaling(1024, 2);
  for (int s = 0; s < 5; ++s) {
    for (auto* side : {&whole, &parts}) {
      auto& p = side == &whole ? a : b;
      side->zero_grad();
      side->scaled(tiny_loss(p)).backward();
      if (s == 3) p[0].second.mutable_grad()[0][1] = NAN;
    }
    const bool stepped = whole.step(0.1);
    const auto flag = parts.unscale_grads();
    EXPECT_EQ(flag.dim(), 0);
    EXPECT_EQ(flag.scalar_type(), torch::kBool);
    const bool finite = flag.item<bool>();
    EXPECT_EQ(parts.settle_scale(finite), stepped) << "step " << s;
    if (finite) parts.update(0.1);
    EXPECT_EQ(stepped, s != 3);
    for (int i = 0; i < 2; ++i) EXPECT_TRUE(torch::equal(a[i].second, b[i].second)) << "step " << s << " param " << i;
    const auto sw = whole.state(), sp = parts.state();
    ASSERT_EQ(sw.size(), sp.size());
    for (size_t i = 0; i < sw.size(); ++i)
      EXPECT_TRUE(torch::equal(sw[i].second, sp[i].second)) << "step " << s << " " << sw[i].first;
  }
  EXPECT_EQ(parts.loss_scale(), 1024);  // 1024, 2048 after 2 good steps, 1024 at the skip, then 1 good
  EXPECT_EQ(parts.skipped_steps(), 1);
  EXPECT_EQ(parts.steps(), 4);
}

TEST(Optim, LoadStateErrors) {
  OptimOptions o;
  NamedTensors ps{{"w", torch::zeros({2, 3}, torch::requires_grad())}};
  Optimizer opt(ps, o);
  expect_error([&] { opt.load_state({{"step", torch::tensor(3)}, {"momentum_buffer.w", torch::zeros({3, 2})}}, "ck.pt"); },
               {"ck.pt", "momentum_buffer.w", "[2, 3]", "[3, 2]"});
  expect_error([&] { opt.load_state({{"step", torch::tensor(3)}, {"exp_avg.w", torch::zeros({2, 3})}}, "ck.pt"); },
               {"ck.pt", "no sgd buffer"});
  o.name = "adam";
  expect_error([&] { o.validate(); }, {"optim.name", "sgd or adamw", "adam"});
}

TEST(Optim, CosineSchedulePerEpochAndPerIteration) {
  OptimOptions o;
  EXPECT_DOUBLE_EQ(scheduled_lr(o, 0.1, 0, 5, 10, 4), 0.1);
  EXPECT_NEAR(scheduled_lr(o, 0.1, 2, 9, 10, 4), 0.05, 1e-12);  // ½(1 + cos(π/2)); iteration ignored
  EXPECT_NEAR(scheduled_lr(o, 0.1, 3, 0, 10, 4), 0.1 * 0.5 * (1 + std::cos(M_PI * 0.75)), 1e-12);
  o.schedule = "cosine-iter";
  EXPECT_NEAR(scheduled_lr(o, 0.1, 1, 5, 10, 4), 0.1 * 0.5 * (1 + std::cos(M_PI * 1.5 / 4)), 1e-12);
  o.schedule = "constant";
  EXPECT_DOUBLE_EQ(scheduled_lr(o, 0.1, 3, 9, 10, 4), 0.1);
}

}  // namespace
}  // namespace cp2::test

namespace cp2::test {
namespace {

TEST(Optim, PolyScheduleAsMmcv) {
  // mmcv PolyLrUpdaterHook: (base - min) * (1 - t / T)^power + min, per iteration.
  train::OptimOptions o;
  o.schedule = "poly";
  o.lr = 0.003;
  o.power = 0.9;
  o.min_lr = 1e-4;
  EXPECT_DOUBLE_EQ(train::scheduled_lr(o, 0.003, 0, 0, 40000, 1), 0.003);
  EXPECT_NEAR(train::scheduled_lr(o, 0.003, 0, 20000, 40000, 1), (0.003 - 1e-4) * std::pow(0.5, 0.9) + 1e-4, 1e-15);
  EXPECT_NEAR(train::scheduled_lr(o, 0.003, 0, 39999, 40000, 1),
              (0.003 - 1e-4) * std::pow(1.0 / 40000, 0.9) + 1e-4, 1e-15);
  EXPECT_NEAR(train::scheduled_lr(o, 0.003, 0, 40000, 40000, 1), 1e-4, 1e-15);
  o.min_lr = 0.01;  // above lr
  expect_error([&] { o.validate(); }, {"optim.min_lr", "0.01"});
  o.min_lr = 1e-4;
  o.power = 0;
  expect_error([&] { o.validate(); }, {"optim.power", "> 0"});
}

}  // namespace
}  // namespace cp2::test
