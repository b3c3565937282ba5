// SGD / AdamW against torch.optim (tools/make_parity_fixtures.py::optim_fixture), the
// cosine schedule, and optimizer state round trips.
#include <torch/torch.h>

#include <cmath>

#include "../helpers.h"
#include "cp2/train/optim.h"

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
