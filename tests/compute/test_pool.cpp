// compute/pool.h: the stem max pool's AVX2 loop against PyTorch's own max_pool2d_with_indices,
// values, positions and gradients bit for bit (ties, NaN, -inf, every edge and vector tail);
// where it is taken; the ResNet stem's use of it.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "cp2/compute/fast_paths.h"
#include "cp2/compute/op_profile.h"
#include "cp2/compute/pool.h"
#include "cp2/compute/pool_kernels.h"
#include "cp2/compute/precision.h"
#include "cp2/compute/winograd.h"
#include "cp2/models/resnet.h"
#include "../helpers.h"

using namespace cp2;

namespace {

torch::nn::MaxPool2d stem_max_pool() {
  return torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(3).stride(2).padding(1));
}

// Every x86-64 CPU CI and benchmarks ran on has AVX2, so there the loop must run.
bool pool_fast_here() {
#if defined(__x86_64__)
  EXPECT_TRUE(compute::poolk::cpu_supported()) << "an x86-64 CPU without AVX2";
#endif
  return compute::poolk::cpu_supported();
}

// Equal values, NaN where the other has NaN.
void expect_same_maxima(const torch::Tensor& a, const torch::Tensor& b, const std::string& what) {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  EXPECT_TRUE(torch::equal(torch::isnan(a), torch::isnan(b))) << what;
  const auto clean = [](const torch::Tensor& t) { return torch::nan_to_num(t, 0.0, INFINITY, -INFINITY); };
  EXPECT_TRUE(torch::equal(clean(a), clean(b))) << what;
}

// How many times cp2's loop ran in fn.
template <class Fn>
int64_t pool_loop_calls(const Fn& fn) {
  compute::OpProfiler profiler;
  fn();
  for (const auto& op : profiler.result())
    if (op.name == "cp2::max_pool") return op.calls;
  return 0;
}

}  // namespace

TEST(MaxPool, PyTorchsMaximaPositionsAndGradientsBitForBit) {
  if (!pool_fast_here()) GTEST_SKIP() << "no AVX2 on this CPU: PyTorch's max pool runs (TakenOnlyWhereItQualifies)";
  torch::manual_seed(3);
  auto pool = stem_max_pool();
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  // Sizes: the benches' stems (48², 64²), widths either side of the first vector block (17, 18,
  // 19) and of a block's tail, odd and tiny maps; values: Gaussian, post-ReLU integers (ties of
  // zeros and of equal maxima), NaN and -inf planted.
  const std::vector<std::pair<int64_t, int64_t>> sizes{{48, 48}, {64, 64}, {18, 18}, {17, 17}, {19, 33}, {33, 34},
                                                       {7, 9},   {1, 1},   {2, 2},   {3, 40},  {40, 3},  {5, 50}};
  for (auto hw : sizes) {
    for (int kind = 0; kind < 3; ++kind) {
      const std::string what = std::to_string(hw.first) + "x" + std::to_string(hw.second) + " kind " +
                               std::to_string(kind);
      auto x = torch::randn({2, 3, hw.first, hw.second});
      if (kind >= 1) x = torch::relu(torch::round(x * 1.5));
      if (kind == 2) {
        auto f = x.view({-1});
        for (int64_t i = 0; i < f.numel(); i += 7) f[i] = nan;
        for (int64_t i = 3; i < f.numel(); i += 11) f[i] = -inf;
        x[1][2].fill_(-inf);  // a whole plane: the window's first position, as PyTorch's
      }
      const auto [want_y, want_i] = torch::max_pool2d_with_indices(x, {3, 3}, {2, 2}, {1, 1}, {1, 1}, false);
      auto g = torch::randn_like(want_y);
      auto xr = x.clone().requires_grad_(true);
      std::get<0>(torch::max_pool2d_with_indices(xr, {3, 3}, {2, 2}, {1, 1}, {1, 1}, false)).backward(g);

      compute::WinogradScope on(true);
      ASSERT_TRUE(compute::max_pool_applies(*pool, x)) << what;
      torch::Tensor y_nograd;
      EXPECT_EQ(pool_loop_calls([&] { y_nograd = compute::max_pool2d(*pool, x); }), 1) << what;
      expect_same_maxima(y_nograd, want_y, what + " (no gradient)");
      auto xc = x.clone().requires_grad_(true);
      torch::Tensor y;
      EXPECT_EQ(pool_loop_calls([&] { y = compute::max_pool2d(*pool, xc); }), 1) << what;
      expect_same_maxima(y, want_y, what);
      y.backward(g);
      EXPECT_TRUE(torch::equal(xc.grad(), xr.grad())) << what << ": the gradient goes where PyTorch's goes";
      // The positions themselves, from the loop.
      auto idx = torch::empty_like(want_i);
      auto out = torch::empty_like(want_y);
      for (int64_t p = 0; p < 6; ++p)
        compute::poolk::max_pool3x3s2(x.data_ptr<float>() + p * x.size(2) * x.size(3), x.size(2), x.size(3),
                                      out.data_ptr<float>() + p * out.size(2) * out.size(3),
                                      idx.data_ptr<int64_t>() + p * out.size(2) * out.size(3));
      EXPECT_TRUE(torch::equal(idx, want_i)) << what;
      expect_same_maxima(out, want_y, what + " (the loop)");
    }
  }
}

TEST(MaxPool, TakenOnlyWhereItQualifies) {
  auto pool = stem_max_pool();
  const auto x = torch::randn({2, 4, 20, 20});
  const auto want = pool->forward(x);
  {
    // train.conv_algorithm: direct: PyTorch's op.
    compute::WinogradScope off(false);
    EXPECT_FALSE(compute::max_pool_applies(*pool, x));
    EXPECT_EQ(pool_loop_calls([&] { EXPECT_TRUE(torch::equal(compute::max_pool2d(*pool, x), want)); }), 0);
  }
  compute::WinogradScope on(true);
  EXPECT_EQ(compute::max_pool_applies(*pool, x), compute::poolk::cpu_supported());
  {
    compute::FastPathsOff off({compute::FastPath::max_pool});  // --alternate max-pool's off rounds
    EXPECT_FALSE(compute::max_pool_applies(*pool, x));
    EXPECT_EQ(pool_loop_calls([&] { EXPECT_TRUE(torch::equal(compute::max_pool2d(*pool, x), want)); }), 0);
  }
  // Another window, stride, padding, dilation or rounding: the module's forward.
  using O = torch::nn::MaxPool2dOptions;
  for (auto o : {O(2).stride(2), O(3).stride(1).padding(1), O(3).stride(2), O(3).stride(2).padding(1).dilation(2),
                 O(3).stride(2).padding(1).ceil_mode(true)}) {
    torch::nn::MaxPool2d other(o);
    EXPECT_FALSE(compute::max_pool_applies(*other, x));
    EXPECT_TRUE(torch::equal(compute::max_pool2d(*other, x), other->forward(x)));
  }
  // Other maps: channels-last, strided, double, empty, 3-D, autocast.
  EXPECT_FALSE(compute::max_pool_applies(*pool, x.contiguous(at::MemoryFormat::ChannelsLast)));
  EXPECT_FALSE(compute::max_pool_applies(*pool, x.transpose(2, 3)));
  EXPECT_FALSE(compute::max_pool_applies(*pool, x.to(torch::kDouble)));
  EXPECT_FALSE(compute::max_pool_applies(*pool, torch::empty({0, 4, 20, 20})));
  EXPECT_FALSE(compute::max_pool_applies(*pool, x[0]));
  {
    compute::AutocastScope bf16(true, false);
    EXPECT_FALSE(compute::max_pool_applies(*pool, x));
  }
  const auto cl = x.contiguous(at::MemoryFormat::ChannelsLast);
  EXPECT_TRUE(torch::equal(compute::max_pool2d(*pool, cl), want));
}

TEST(MaxPool, TheResNetStemRunsItWithTheFastAlgorithms) {
  if (!pool_fast_here()) GTEST_SKIP() << "no AVX2 on this CPU";
  torch::manual_seed(5);
  models::ResNetOptions o;
  o.depth = 18;
  models::ResNet net(o);
  net->train();
  const auto x = torch::randn({2, 3, 32, 32});
  const auto run = [&](bool fast, int64_t* calls) {
    for (auto& p : net->parameters()) p.mutable_grad() = torch::Tensor();
    compute::WinogradScope scope(fast);
    std::vector<torch::Tensor> outs;
    *calls = pool_loop_calls([&] { outs = net->forward(x); });
    outs.back().sum().backward();
    return std::make_pair(outs[0].detach(), net->conv1->weight.grad().clone());
  };
  int64_t direct_calls = -1, fast_calls = -1;
  const auto direct = run(false, &direct_calls);
  const auto fast = run(true, &fast_calls);
  EXPECT_EQ(direct_calls, 0);
  EXPECT_EQ(fast_calls, 1);
  // layer1's output and the stem's gradient differ by the fast algorithms' round-off only
  // (Winograd, bn-act), the gradient reaching the stem through the loop's positions.
  EXPECT_LT(test::max_rel(fast.first, direct.first), 1e-4);
  EXPECT_LT(test::max_rel(fast.second, direct.second), 1e-3);
}
