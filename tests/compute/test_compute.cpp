// Issue 11: the FLOP counter (against hand counts and an independent count of torchvision's
// ResNet-18), the numerics resolution, and bf16 / channels-last steps against fp32 NCHW.
#include <ATen/autocast_mode.h>
#include <ATen/record_function.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <functional>
#include <thread>

#include "cp2/compute/conv.h"
#include "cp2/compute/conv_bench.h"
#include "cp2/compute/bn_act.h"
#include "cp2/compute/dilated.h"
#include "cp2/compute/fast_paths.h"
#include "cp2/compute/flops.h"
#include "cp2/compute/gemm.h"
#include "cp2/compute/matmul.h"
#include "cp2/compute/op_profile.h"
#include "cp2/compute/pointwise.h"
#include "cp2/compute/precision.h"
#include "cp2/compute/winograd.h"
#include "cp2/compute/winograd_tiles.h"
#include "cp2/models/aspp.h"
#include "cp2/models/batchnorm.h"
#include "cp2/models/resnet.h"
#include "cp2/pretrain/config.h"
#include "cp2/pretrain/step.h"
#include "cp2/seg/config.h"
#include "../helpers.h"

namespace cp2::test {

namespace {

double conv_flops(int64_t n, int64_t cin, int64_t cout, int64_t k, int64_t oh, int64_t ow) {
  return 2.0 * n * cout * oh * ow * cin * k * k;
}

// A size-preserving 3×3 at dilation d on an h×w map, counted pixel by pixel: 2 FLOPs per
// channel pair for each (output pixel, tap) whose input pixel lies in the image.
double dilated_flops(int64_t n, int64_t cin, int64_t cout, int64_t h, int64_t w, int64_t d) {
  double pairs = 0;
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int64_t ky = -1; ky <= 1; ++ky)
        for (int64_t kx = -1; kx <= 1; ++kx)
          pairs += y + ky * d >= 0 && y + ky * d < h && x + kx * d >= 0 && x + kx * d < w;
  return 2.0 * n * cin * cout * pairs;
}

// Largest difference relative to the reference's largest magnitude.
double rel(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max()).item<double>();
}

// y = conv(x0, w0) and the gradients of sum(y·g) that `grads` asks for (1 input, 2 weight, 3
// both): {y, dx or undefined, dw or undefined}.
std::vector<at::Tensor> conv_and_grads(const at::Tensor& x0, const at::Tensor& w0, const at::Tensor& g, int grads,
                                       const std::function<at::Tensor(const at::Tensor&, const at::Tensor&)>& conv) {
  auto x = x0.clone().requires_grad_(grads & 1);
  auto w = w0.clone().requires_grad_((grads & 2) != 0);
  auto y = conv(x, w);
  (y * g).sum().backward();
  return {y.detach(), (grads & 1) ? x.grad() : at::Tensor(), (grads & 2) ? w.grad() : at::Tensor()};
}

// conv_and_grads' results against the reference's: the same shapes, the same gradients
// defined, each within `tol` (rel).
void expect_conv_close(const std::vector<at::Tensor>& got, const std::vector<at::Tensor>& ref, double tol) {
  EXPECT_EQ(got[0].sizes(), ref[0].sizes());
  EXPECT_LT(rel(got[0], ref[0]), tol);
  for (int i : {1, 2}) {
    ASSERT_EQ(got[i].defined(), ref[i].defined()) << "gradient " << i;
    if (!got[i].defined()) continue;
    EXPECT_EQ(got[i].sizes(), ref[i].sizes()) << "gradient " << i;
    EXPECT_LT(rel(got[i], ref[i]), tol) << "gradient " << i;
  }
}

}  // namespace

TEST(Flops, CountsConvolutionsAndMatmulsForwardAndBackward) {
  torch::manual_seed(0);
  auto x = torch::randn({2, 3, 10, 10}).requires_grad_(true);
  auto w = torch::randn({4, 3, 3, 3}).requires_grad_(true);
  auto w2 = torch::randn({6, 4, 3, 3}).requires_grad_(true);
  auto a = torch::randn({5, 7}).requires_grad_(true);
  auto b = torch::randn({7, 3}).requires_grad_(true);
  auto lin = torch::nn::Linear(3, 2);
  compute::FlopCount c;
  {
    compute::FlopCounter counter;
    EXPECT_THROW(compute::FlopCounter second, Error);
    // conv 1: padding 1 keeps 10 x 10; conv 2: stride 2, no padding -> 4 x 4.
    const std::vector<int64_t> one{1, 1}, two{2, 2}, zero{0, 0};
    auto y = torch::conv2d(torch::conv2d(x, w, at::Tensor(), one, one), w2, at::Tensor(), two, zero);
    auto m = lin(torch::mm(a, b));  // mm 5x7 @ 7x3, then addmm 5x3 @ 3x2
    (y.sum() + m.sum()).backward();
    c = counter.result();
    EXPECT_EQ(c.uncounted, 0);
    // A call whose arguments the counter cannot read (here a 1-D mm, which then fails) is
    // tallied as uncounted, not silently dropped; its FLOPs are not added.
    EXPECT_THROW(torch::mm(torch::randn({7}), b), c10::Error);
    EXPECT_EQ(counter.result().uncounted, 1);
    EXPECT_DOUBLE_EQ(counter.result().total(), c.total());
  }
  const double f1 = conv_flops(2, 3, 4, 3, 10, 10), f2 = conv_flops(2, 4, 6, 3, 4, 4);
  // Backward: grad_input and grad_weight for both convolutions (x requires grad).
  EXPECT_DOUBLE_EQ(c.conv, 3 * f1 + 3 * f2);
  // mm forward 2·5·7·3, its backward two products of the same size; addmm forward
  // 2·5·3·2, backward: grad wrt its input (5x2 @ 2x3) and weight (2x5 @ 5x3).
  EXPECT_DOUBLE_EQ(c.matmul, 3 * 210.0 + 3 * 60.0);
  // Stride and padding given as one number apply to both dimensions (the backward pass
  // records them as one-element lists; it was counted on a 10 x 8 map).
  {
    compute::FlopCounter counter;
    at::conv2d(x, w, {}, 1, 1).sum().backward();
    EXPECT_DOUBLE_EQ(counter.result().conv, 3 * f1);
  }
  double sum = 0;
  for (auto& [s, f] : c.by_shape) sum += f;
  EXPECT_DOUBLE_EQ(sum, c.total());
  // A dilated convolution counts the products whose tap reads the image: rate 3 on 10 x 10
  // (size-preserving), and stride 2, padding 1, rate 2 on 9 x 7 (output 4 x 3), counted here
  // output pixel by output pixel.
  {
    compute::FlopCounter counter;
    at::conv2d(x, w, {}, 1, 3, 3);
    EXPECT_DOUBLE_EQ(counter.result().conv, dilated_flops(2, 3, 4, 10, 10, 3));
  }
  {
    const auto xs = torch::randn({1, 3, 9, 7});
    compute::FlopCounter counter;
    const auto y = at::conv2d(xs, w, {}, 2, 1, 2);
    ASSERT_EQ(y.sizes(), (std::vector<int64_t>{1, 4, 4, 3}));
    double pairs = 0;
    for (int64_t oy = 0; oy < 4; ++oy)
      for (int64_t ox = 0; ox < 3; ++ox)
        for (int64_t ky = 0; ky < 3; ++ky)
          for (int64_t kx = 0; kx < 3; ++kx) {
            const int64_t iy = oy * 2 - 1 + ky * 2, ix = ox * 2 - 1 + kx * 2;
            pairs += iy >= 0 && iy < 9 && ix >= 0 && ix < 7;
          }
    EXPECT_DOUBLE_EQ(counter.result().conv, 2.0 * 3 * 4 * pairs);
    EXPECT_LT(pairs, 4 * 3 * 9);  // some taps read the padding
  }
  // Nothing is counted once the counter is gone, and a new one starts from zero.
  torch::conv2d(x, w);
  compute::FlopCounter again;
  EXPECT_EQ(again.result().total(), 0);
}

// torchvision's ResNet-18 at 224²: 1.8136 GMAC in its convolutions (torchvision's model card
// says 1.81 GFLOPS, counting multiply-adds); 3,627,122,688 FLOPs counted independently with
// PyTorch forward hooks on torchvision.models.resnet18 (2 · output elements · C_in · k²).
TEST(Flops, ResNet18ForwardMatchesAnIndependentCount) {
  models::ResNetOptions o;
  o.depth = 18;
  o.output_stride = 32;
  models::ResNet net(o);
  net->eval();
  torch::NoGradGuard ng;
  compute::FlopCounter counter;
  net->forward(torch::randn({1, 3, 224, 224}));
  EXPECT_DOUBLE_EQ(counter.result().conv, 3627122688.0);
  EXPECT_EQ(counter.result().uncounted, 0);
  EXPECT_EQ(counter.result().matmul, 0);
}

TEST(Flops, ProbeTimesTheHeaviestShapes) {
  compute::FlopCount c;
  compute::OpShape s;
  s.kind = "conv";
  s.in = {2, 16, 16, 16};
  s.weight = {16, 16, 3, 3};
  s.stride = {1, 1};
  s.padding = {1, 1};
  s.dilation = {1, 1};
  c.by_shape[s] = s.flops();
  auto r = compute::probe_peak(c, "cpu", c10::kFloat, false, 3, 0.05);
  EXPECT_GT(r.gflops, 0.01);
  EXPECT_NE(r.shape.find("conv [2, 16, 16, 16] * [16, 16, 3, 3]"), std::string::npos) << r.shape;
  EXPECT_NE(compute::rate_line(1e9, 10, r.gflops).find("10.0 GFLOP/s"), std::string::npos);

  // Which shapes are timed: the heaviest by their attributed FLOPs, dilated convolutions left
  // out (their nominal count includes taps in the padding). With top = 1 only one is timed,
  // so the result names it.
  auto dilated = s;
  dilated.in = {2, 32, 16, 16};
  dilated.weight = {32, 32, 3, 3};
  dilated.padding = {2, 2};
  dilated.dilation = {2, 2};
  c.by_shape[dilated] = 100 * s.flops();  // the heaviest, but never probed
  compute::OpShape mm;
  mm.kind = "mm";
  mm.in = {1, 64, 32};
  mm.weight = {32, 48};
  c.by_shape[mm] = 10 * s.flops();
  r = compute::probe_peak(c, "cpu", c10::kFloat, false, 1, 0.05);
  EXPECT_EQ(r.shape, "mm 64x32 @ 32x48");
  EXPECT_GT(r.gflops, 0.01);
  c.by_shape[s] = 20 * s.flops();  // now the convolution is the heaviest eligible one
  r = compute::probe_peak(c, "cpu", c10::kFloat, false, 1, 0.05);
  EXPECT_EQ(r.shape, "conv [2, 16, 16, 16] * [16, 16, 3, 3]");
  // top = 2 times both eligible shapes and keeps the faster; never the dilated one.
  r = compute::probe_peak(c, "cpu", c10::kFloat, false, 2, 0.05);
  EXPECT_TRUE(r.shape == "mm 64x32 @ 32x48" || r.shape == "conv [2, 16, 16, 16] * [16, 16, 3, 3]") << r.shape;
  // The list behind the probe, heaviest first with its FLOPs; convolutions only for
  // cp2_gpu_check's ceiling.
  const auto all = compute::heaviest_shapes(c, 3);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].second.str(), "conv [2, 16, 16, 16] * [16, 16, 3, 3]");
  EXPECT_DOUBLE_EQ(all[0].first, 20 * s.flops());
  EXPECT_EQ(all[1].second.str(), "mm 64x32 @ 32x48");
  const auto convs = compute::heaviest_shapes(c, 3, /*convolutions_only=*/true);
  ASSERT_EQ(convs.size(), 1u);
  EXPECT_EQ(convs[0].second.str(), "conv [2, 16, 16, 16] * [16, 16, 3, 3]");
  EXPECT_GT(compute::probe_shape(mm, "cpu", c10::kFloat, false, 0.05), 0.01);
  c.by_shape.erase(s);
  c.by_shape.erase(mm);
  r = compute::probe_peak(c, "cpu", c10::kFloat, false, 3, 0.05);
  EXPECT_EQ(r.gflops, 0.0) << "a dilated convolution alone must not be probed, found " << r.shape;
}

// cp2 bench --profile: each op's own time is its time less the ops it called; a scope's time
// spent outside any op (a sleep here) stays its own; backward nodes are seen; one at a time.
TEST(OpProfile, SelfTimeExcludesChildrenAndTheTableNamesTheTop) {
  torch::manual_seed(0);
  auto x = torch::randn({64, 64});
  auto w = torch::randn({64, 64}).requires_grad_(true);
  const auto p = compute::profile_steps(
      [&] {
        RECORD_USER_SCOPE("cp2::test_outer");
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        auto y = torch::mm(torch::mm(x, w), x);
        y.sum().backward();
      },
      3);
  EXPECT_EQ(p.steps, 3);
  auto find = [&](const std::string& name) -> const compute::OpTime* {
    for (const auto& o : p.ops)
      if (o.name == name) return &o;
    return nullptr;
  };
  const auto* outer = find("cp2::test_outer");
  const auto* mm = find("aten::mm");
  ASSERT_TRUE(outer && mm);
  EXPECT_EQ(outer->calls, 3);
  EXPECT_GE(mm->calls, 6);  // two forward products a step, more in the backward pass
  EXPECT_GE(outer->self_s, 0.058);  // the sleeps: its own time
  EXPECT_LT(mm->total_s, 0.05);     // not the sleeps
  EXPECT_LE(outer->self_s, outer->total_s - mm->total_s + 1e-6);
  EXPECT_GE(p.wall_s, outer->total_s);
  EXPECT_NEAR(p.top_level_s, outer->total_s, 1e-3);  // the scope is the step's outermost op
  for (size_t i = 1; i < p.ops.size(); ++i) EXPECT_GE(p.ops[i - 1].self_s, p.ops[i].self_s);
  bool backward = false;
  for (const auto& o : p.ops) backward |= o.name.find("MmBackward") != std::string::npos;
  EXPECT_TRUE(backward);
  EXPECT_EQ(p.ops.front().name, "cp2::test_outer");
  const auto table = compute::profile_table(p, 2);
  EXPECT_NE(table.find("profile of 3 steps"), std::string::npos) << table;
  EXPECT_NE(table.find("cp2::test_outer"), std::string::npos) << table;
  EXPECT_NE(table.find("the other " + std::to_string(p.ops.size() - 2) + " ops"), std::string::npos) << table;
  EXPECT_NE(table.find("outside any op"), std::string::npos) << table;
  // One at a time; nothing recorded once it ends.
  {
    compute::OpProfiler one;
    expect_error([] { compute::OpProfiler two; }, {"another profile"});
  }
  compute::OpProfiler again;
  torch::mm(x, x);
  int64_t mm_calls = 0;
  for (const auto& o : again.result()) {
    EXPECT_EQ(o.name.find("cp2::test_outer"), std::string::npos);
    if (o.name == "aten::mm") mm_calls += o.calls;
  }
  EXPECT_EQ(mm_calls, 1);
}

TEST(Numerics, PrecisionResolvesPerDevice) {
  compute::NumericsOptions o;
  EXPECT_FALSE(compute::resolve_numerics(o, "cpu", 50).bf16);  // default fp32
  o.precision = "bf16";
  EXPECT_TRUE(compute::resolve_numerics(o, "cpu", 50).bf16);
  o.precision = "auto";
  EXPECT_TRUE(compute::resolve_numerics(o, "cuda:0", 50).bf16);
  EXPECT_EQ(compute::resolve_numerics(o, "cpu", 50).bf16, compute::cpu_bf16_is_faster());
  // auto takes bf16 on a CPU only where it was measured faster than fp32: AMX, or AVX512-BF16
  // on AMD (Zen 4, Zen 5); not AVX512-BF16 alone on Intel (Emerald Rapids without AMX: 0.5-0.7x),
  // nor emulated bf16.
  const std::string zen5 = "fpu avx2 avx512f avx512_bf16 avx512_vnni", emr = "fpu avx2 avx512f avx512_bf16 avx512_fp16";
  EXPECT_TRUE(compute::bf16_is_faster(zen5, "AuthenticAMD"));
  EXPECT_FALSE(compute::bf16_is_faster(emr, "GenuineIntel"));
  EXPECT_TRUE(compute::bf16_is_faster(emr + " amx_bf16 amx_tile", "GenuineIntel"));
  EXPECT_FALSE(compute::bf16_is_faster("fpu avx2 avx512f avx512_vnni", "AuthenticAMD"));
  EXPECT_FALSE(compute::bf16_is_faster("fpu avx2 avx512f avx512_bf16x", "AuthenticAMD"));  // whole words only
  // The one flag test (common's has_word): whole words, at either end, tab or space apart.
  EXPECT_TRUE(has_word("avx2 fma", "avx2"));
  EXPECT_TRUE(has_word("avx2 fma", "fma"));
  EXPECT_TRUE(has_word("fpu\tavx2 fma", "avx2"));
  EXPECT_FALSE(has_word("avx512_bf16x avx2", "avx512_bf16"));
  EXPECT_FALSE(has_word("xavx2 avx2x", "avx2"));
  EXPECT_FALSE(has_word("", "avx2"));
  EXPECT_FALSE(has_word("avx2", ""));
  // Where auto passes over the CPU's bf16, the start line says why.
  EXPECT_EQ(compute::bf16_passed_over(emr, "GenuineIntel"),
            "AVX512-BF16 without AMX on a GenuineIntel CPU, measured slower than fp32");
  EXPECT_EQ(compute::bf16_passed_over(zen5, "AuthenticAMD"), "");
  EXPECT_EQ(compute::bf16_passed_over("fpu avx2", "GenuineIntel"), "");  // no bf16 to pass over
  compute::Numerics passed;
  passed.auto_fp32_reason = compute::bf16_passed_over(emr, "GenuineIntel");
  EXPECT_EQ(passed.describe(),
            "fp32 (precision auto: AVX512-BF16 without AMX on a GenuineIntel CPU, measured slower than fp32), NCHW");
  EXPECT_EQ(compute::resolve_numerics(o, "cuda", 50).auto_fp32_reason, "");
  o.channels_last = "true";
  EXPECT_NE(compute::resolve_numerics(o, "cpu", 50).describe().find("channels-last"), std::string::npos);
  o.precision = "fp8";
  expect_error([&] { o.validate(); }, {"train.precision", "fp8", "expected one of fp32, bf16, fp16, auto"});
  // Both training configs bind the keys.
  pretrain::PretrainConfig pc;
  auto pf = pc.fields();
  pf.set("train.precision", "bf16", "test");
  pf.set("train.channels_last", "true", "test");
  EXPECT_EQ(pc.train.numerics.precision, "bf16");
  EXPECT_EQ(pc.train.numerics.channels_last, "true");
  seg::FinetuneConfig fc;
  auto ff = fc.fields();
  expect_error([&] { ff.set("train.precision", "half", "test"); }, {"train.precision", "half"});
}

TEST(Numerics, AutocastScopeNestsAndRestores) {
  EXPECT_FALSE(compute::autocast_active(false));
  {
    compute::AutocastScope on(true, false);
    EXPECT_TRUE(compute::autocast_active(false));
    EXPECT_EQ(torch::mm(torch::randn({2, 2}), torch::randn({2, 2})).scalar_type(), torch::kBFloat16);
    {
      compute::AutocastScope off(false, false);
      EXPECT_FALSE(compute::autocast_active(false));
      EXPECT_EQ(torch::mm(torch::randn({2, 2}), torch::randn({2, 2})).scalar_type(), torch::kFloat);
    }
    EXPECT_TRUE(compute::autocast_active(false));
  }
  EXPECT_FALSE(compute::autocast_active(false));
}

namespace {

pretrain::CP2Options small_cp2() {
  pretrain::CP2Options o;
  o.encoder.backbone.depth = 18;
  o.encoder.head.channels = 32;
  o.encoder.head.proj_channels = 16;
  o.queue_size = 64;
  return o;
}

data::Batch small_batch() {
  torch::manual_seed(3);
  auto m = torch::zeros({4, 64, 64});
  m.slice(1, 8, 40).slice(2, 12, 48).fill_(1);
  return {torch::randn({4, 3, 64, 64}), torch::randn({4, 3, 64, 64}), m, m.flip({2})};
}

struct StepOut {
  double loss = 0, ins = 0, dense = 0;
  std::vector<at::Tensor> params;
  bool stem_channels_last = false;  // the query encoder's 7x7 stem weight in NHWC memory
};

StepOut one_step(const compute::Numerics& n) {
  auto model = pretrain::make_model(small_cp2(), 4);
  model->set_numerics(n);
  const auto& stem = dynamic_cast<models::SegmentorImpl&>(model->q_module()).backbone->conv1->weight;
  model->train();
  train::OptimOptions oo;
  oo.lr = 0.1;
  train::Optimizer opt(pretrain::query_parameters(*model), oo);
  if (n.loss_scaling) opt.enable_loss_scaling(n.loss_scale_init);
  auto r = pretrain::train_step(*model, opt, small_batch(), 0.1);
  EXPECT_TRUE(r.stepped);
  StepOut s;
  s.stem_channels_last = !stem.is_contiguous() && stem.is_contiguous(at::MemoryFormat::ChannelsLast);
  s.loss = r.loss;
  s.ins = r.parts.loss_ins.item<double>();
  s.dense = r.parts.loss_dense.item<double>();
  for (auto& p : model->parameters()) s.params.push_back(p.detach().contiguous().clone());
  s.params.push_back(model->queue.clone());
  return s;
}

double max_abs_diff(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, (a[i] - b[i]).abs().max().item<double>());
  return d;
}

}  // namespace

// The start-up check behind train.channels_last on the CPU: this LibTorch passes it (Debian
// 13's 2.6 fails it on an AMD Zen 5, not on a Zen 4, docs/benchmarks.md); at a tolerance
// nothing meets, the refusal names the convolution, the difference and the tolerance.
TEST(Numerics, ChannelsLastSelfCheck) {
  EXPECT_EQ(compute::channels_last_conv_fault(), "");
  expect_error([] { throw Error(compute::channels_last_conv_fault(-1)); },
               {"this LibTorch's channels-last 1x1 stride-2 convolution 256->512 on 4x4 (batch 4) differs from NCHW "
                "by ",
                " of its largest value (tolerance -1e+00)"});
  compute::NumericsOptions o;
  o.channels_last = "true";
  EXPECT_TRUE(compute::resolve_numerics(o, "cpu", 18).channels_last);
}

// train.channels_last: auto takes channels-last only where it was measured faster (Bottleneck
// ResNets on CUDA and on x86 CPUs with AVX2), and where the start-up check passes; true
// where the check fails stops a training run and falls back to NCHW when inferring.
TEST(Numerics, ChannelsLastAutoRule) {
  EXPECT_FALSE(compute::channels_last_is_faster(18, true, true));
  EXPECT_FALSE(compute::channels_last_is_faster(34, false, true));
  EXPECT_FALSE(compute::channels_last_is_faster(50, false, false));  // no AVX2: not measured
  EXPECT_TRUE(compute::channels_last_is_faster(50, false, true));
  EXPECT_TRUE(compute::channels_last_is_faster(101, true, false));
  int checks = 0;
  const auto pass = [&] { return ++checks, std::string(); };
  const auto fail = [&] { return ++checks, std::string("the 1x1 differs"); };
  std::string why = "stale";
  EXPECT_FALSE(compute::choose_layout("false", true, fail, false, why));
  EXPECT_FALSE(compute::choose_layout("auto", false, fail, false, why));
  EXPECT_EQ(checks, 0);  // the check runs only where channels-last would be taken
  EXPECT_EQ(why, "");
  EXPECT_TRUE(compute::choose_layout("auto", true, pass, false, why));
  EXPECT_TRUE(compute::choose_layout("true", false, pass, false, why));
  EXPECT_EQ(checks, 2);
  EXPECT_FALSE(compute::choose_layout("auto", true, fail, false, why));
  EXPECT_EQ(why, "auto: the 1x1 differs");
  expect_error([&] { compute::choose_layout("true", false, fail, false, why); },
               {"train.channels_last: the 1x1 differs: keep train.channels_last off"});
  EXPECT_FALSE(compute::choose_layout("true", false, fail, true, why));
  EXPECT_EQ(why, "true: the 1x1 differs");
  compute::Numerics n;
  n.nchw_reason = why;
  EXPECT_EQ(n.describe(), "fp32, NCHW (channels_last true: the 1x1 differs)");

  compute::NumericsOptions o;
  o.channels_last = "auto";
  EXPECT_FALSE(compute::resolve_numerics(o, "cpu", 18).channels_last);
  const bool avx2 = has_word(cpuinfo("flags"), "avx2");
  EXPECT_EQ(compute::resolve_numerics(o, "cpu", 50).channels_last, avx2);  // the check passes here
  EXPECT_TRUE(compute::resolve_numerics(o, "cuda", 50).channels_last);
  EXPECT_FALSE(compute::resolve_numerics(o, "cuda", 18).channels_last);
  // The default is auto: a run that names no layout gets the measured one.
  EXPECT_TRUE(compute::resolve_numerics({}, "cuda", 50).channels_last);
  EXPECT_FALSE(compute::resolve_numerics({}, "cuda", 18).channels_last);
  EXPECT_EQ(compute::resolve_numerics({}, "cpu", 50).channels_last, avx2);
  std::string note = "stale";
  EXPECT_EQ(compute::resolve_inference_numerics(o, "cpu", 50, &note).channels_last, avx2);
  EXPECT_EQ(note, "");
  o.channels_last = "yes";
  expect_error([&] { o.validate(); }, {"train.channels_last: expected one of false, true, auto, found 'yes'"});

  // The key reads bool spellings as before (configs and checkpoints store true / false) and auto.
  pretrain::PretrainConfig pc;
  auto pf = pc.fields();
  for (const auto& [text, held] : std::vector<std::pair<std::string, std::string>>{
           {"auto", "auto"}, {"yes", "true"}, {"on", "true"}, {"False", "false"}, {"0", "false"}}) {
    pf.set("train.channels_last", text, "test");
    EXPECT_EQ(pc.train.numerics.channels_last, held) << text;
    EXPECT_EQ(pf.value("train.channels_last"), held) << text;
  }
  expect_error([&] { pf.set("train.channels_last", "fast", "test"); },
               {"train.channels_last", "true, false or auto", "fast"});
}

// Channels-last is a layout, not a different computation: one CP² step equals NCHW's.
TEST(Numerics, ChannelsLastStepEqualsNchw) {
  const auto ref = one_step({});
  compute::Numerics cl;
  cl.channels_last = true;
  const auto got = one_step(cl);
  EXPECT_FALSE(ref.stem_channels_last);
  EXPECT_TRUE(got.stem_channels_last);  // the layout did change (and stayed through the update)
  EXPECT_NEAR(got.loss, ref.loss, 1e-5 * std::abs(ref.loss));
  EXPECT_LT(max_abs_diff(got.params, ref.params), 1e-5);
}

// Dynamic loss scaling (train.loss_scale) multiplies the loss by 2^16 and divides the
// gradients by it: exact in fp32 and in bf16 (fp32's exponent range), so one CP² step is bit
// for bit the unscaled one.
TEST(Numerics, LossScaledStepEqualsUnscaled) {
  for (bool bf16 : {false, true}) {
    compute::Numerics plain, scaled;
    plain.bf16 = scaled.bf16 = bf16;
    scaled.loss_scaling = true;
    const auto ref = one_step(plain), got = one_step(scaled);
    EXPECT_EQ(got.loss, ref.loss) << bf16;
    EXPECT_EQ(max_abs_diff(got.params, ref.params), 0) << bf16;
  }
}

// A step whose loss is not finite (fp16's forward overflow) under loss scaling: nothing is
// updated or enqueued, the step is counted as skipped and the scale halved (GradScaler's
// loop); where the overflow reached BatchNorm, the model's buffers say so (the trainers
// stop then). Without loss scaling nothing is counted: the trainers stop at once.
TEST(Numerics, NonFiniteLossIsASkippedStepUnderLossScaling) {
  for (bool scaling : {true, false}) {
    auto model = pretrain::make_model(small_cp2(), 4);
    model->train();
    train::Optimizer opt(pretrain::query_parameters(*model), {});
    if (scaling) opt.enable_loss_scaling(1024);
    // An overflow after the last BatchNorm: the CP² projection's output layer.
    std::string poisoned;
    for (auto& [name, p] : pretrain::query_parameters(*model))
      if (name.find("contrast_conv.2.weight") != std::string::npos) poisoned = name;
    ASSERT_FALSE(poisoned.empty());
    std::vector<at::Tensor> before;
    for (auto& [name, p] : pretrain::query_parameters(*model)) {
      if (name == poisoned) {
        torch::NoGradGuard ng;
        p.fill_(std::numeric_limits<float>::infinity());
      }
      before.push_back(p.detach().clone());
    }
    const auto queue = model->queue.clone();
    auto r = pretrain::train_step(*model, opt, small_batch(), 0.1);
    EXPECT_FALSE(r.finite) << poisoned;
    EXPECT_FALSE(r.stepped);
    EXPECT_TRUE(torch::equal(model->queue, queue)) << "nothing enqueued";
    size_t i = 0;
    for (auto& [name, p] : pretrain::query_parameters(*model)) EXPECT_TRUE(torch::equal(p, before[i++])) << name;
    EXPECT_EQ(opt.skipped_steps(), scaling ? 1 : 0);
    EXPECT_EQ(opt.loss_scale(), scaling ? 512 : 1);
    EXPECT_TRUE(models::buffers_finite(*model)) << "the overflow came after every BatchNorm";
  }
  // An overflow in the input reaches BatchNorm's running statistics.
  auto model = pretrain::make_model(small_cp2(), 4);
  model->train();
  train::Optimizer opt(pretrain::query_parameters(*model), {});
  opt.enable_loss_scaling(1024);
  auto b = small_batch();
  b.im_q[0][0][0][0] = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(pretrain::train_step(*model, opt, b, 0.1).finite);
  EXPECT_EQ(opt.skipped_steps(), 1);
  EXPECT_FALSE(models::buffers_finite(*model));
}

// bf16 autocast: master weights, queue and losses stay fp32, and the step's losses track
// fp32's (bf16 keeps 8 mantissa bits: ~0.4 % per rounding).
TEST(Numerics, Bf16StepKeepsFp32StateAndTracksFp32) {
  const auto ref = one_step({});
  compute::Numerics bf;
  bf.bf16 = true;
  const auto got = one_step(bf);
  for (auto& p : got.params) EXPECT_EQ(p.scalar_type(), torch::kFloat);
  EXPECT_NE(got.loss, ref.loss);  // it did run in bf16
  EXPECT_NEAR(got.ins, ref.ins, 0.01 * ref.ins);
  EXPECT_NEAR(got.dense, ref.dense, 0.01 * ref.dense);
  EXPECT_FALSE(compute::autocast_active(false));  // the model's scope ended
  // The update moved the weights as fp32's did (lr 0.1, one step).
  EXPECT_LT(max_abs_diff(got.params, ref.params), 0.05);
}

TEST(Numerics, Bf16SegmentorLogitsAreFp32AndClose) {
  models::SegmentorOptions o;
  o.backbone.depth = 18;
  o.backbone.output_stride = 8;
  o.head.channels = 32;
  o.head.num_classes = 5;
  torch::manual_seed(1);
  models::Segmentor m(o);
  m->eval();
  torch::NoGradGuard ng;
  auto x = torch::randn({1, 3, 64, 64});
  auto ref = m->predict(x);
  compute::Numerics n;
  n.bf16 = true;
  n.channels_last = true;
  m->set_numerics(n);
  auto got = m->predict(x);
  EXPECT_EQ(got.scalar_type(), torch::kFloat);
  EXPECT_EQ(got.sizes(), ref.sizes());
  const double rel = ((got - ref).norm() / ref.norm()).item<double>();
  EXPECT_LT(rel, 0.05);
  EXPECT_GT(rel, 0);  // it did run in bf16
}


// The Winograd kernels this CPU runs: oneDNN's (AVX-512) and cp2's own (AVX2 + FMA; in the
// tile size that fits the map better, and in each size named), each tested wherever it runs.
std::vector<compute::WinogradKernels> winograd_kernel_sets() {
  std::vector<compute::WinogradKernels> k;
  if (compute::winograd_kernels() == compute::WinogradKernels::onednn) k.push_back(compute::WinogradKernels::onednn);
  if (compute::tiles_available())
    for (auto t :
         {compute::WinogradKernels::tiles, compute::WinogradKernels::tiles_f4, compute::WinogradKernels::tiles_f3})
      k.push_back(t);
  return k;
}

// train.conv_algorithm (compute/winograd.h): each set of Winograd kernels against PyTorch's
// direct convolution, forward and both gradients, NCHW and channels-last, dilation 1 and 2
// (the latter as four sub-grid convolutions), maps that are not multiples of the 4×4 tile.
// Winograd sums in another order: fp32 round-off, bounded here at 2e-5 of the largest
// magnitude. Where the CPU has no Winograd kernels (neither AVX-512 nor AVX2 + FMA), the key
// says so and auto falls back to direct.
TEST(Winograd, MatchesDirectConvolutionForwardAndGradients) {
  std::string why;
  compute::NumericsOptions o;
  o.conv_algorithm = "winograd";
  if (!compute::winograd_available(&why)) {
    EXPECT_TRUE(winograd_kernel_sets().empty());
    expect_error([&] { compute::resolve_numerics(o, "cpu", 50); }, {"train.conv_algorithm", "winograd", why});
    o.conv_algorithm = "auto";
    EXPECT_FALSE(compute::resolve_numerics(o, "cpu", 50).winograd);
    return;
  }
  EXPECT_TRUE(compute::resolve_numerics(o, "cpu", 50).winograd);
  EXPECT_NE(compute::resolve_numerics(o, "cpu", 50).describe().find("Winograd"), std::string::npos);
  ASSERT_FALSE(winograd_kernel_sets().empty());
  for (auto kernels : winograd_kernel_sets()) {
    SCOPED_TRACE(compute::winograd_kernels_name(kernels));
    // 13×19: at dilation 2 the phases' sub-grids differ by a row and a column (7×10 to 6×9).
    for (const auto& [h, w] : {std::pair<int64_t, int64_t>{12, 20}, {13, 19}})
      for (int64_t d : {1, 2})
        for (bool cl : {false, true}) {
          SCOPED_TRACE(std::to_string(h) + "x" + std::to_string(w) + ", dilation " + std::to_string(d) +
                       (cl ? ", channels-last" : ", NCHW"));
          torch::manual_seed(5);
          // 32 output channels: the direct reference's input gradient is wrong in Debian 13's
          // LibTorch 2.6 for output channels that are not a multiple of 16 (see
          // DilatedTaps.CentreTapsWhereOuterTapsReadOnlyPadding); other counts are covered by
          // Winograd.OwnKernelsTileEdgesAndChannelCounts.
          torch::nn::Conv2d conv(torch::nn::Conv2dOptions(16, 32, 3).padding(d).dilation(d).bias(false));
          auto x0 = torch::randn({3, 16, h, w});
          if (cl) x0 = x0.contiguous(at::MemoryFormat::ChannelsLast);
          const auto g = torch::randn({3, 32, h, w});
          auto run = [&](bool wino) {
            conv->zero_grad();
            auto x = x0.clone().requires_grad_(true);
            compute::WinogradScope scope(wino, kernels);
            auto y = compute::conv2d(*conv, x);
            (y * g).sum().backward();
            return std::vector<at::Tensor>{y.detach(), x.grad(), conv->weight.grad().clone()};
          };
          const auto ref = run(false), got = run(true);
          {  // Winograd, not the tap GEMMs (which also differ from direct in the last bits)
            compute::WinogradScope scope(true, kernels);
            EXPECT_EQ(compute::conv_path(*conv, x0),
                      d == 1 ? compute::ConvPath::winograd : compute::ConvPath::winograd_subgrids);
          }
          for (size_t i = 0; i < ref.size(); ++i) {
            SCOPED_TRACE(i == 0 ? "output" : i == 1 ? "input gradient" : "weight gradient");
            EXPECT_EQ(got[i].sizes(), ref[i].sizes());
            EXPECT_LT(rel(got[i], ref[i]), 2e-5);
          }
          EXPECT_GT(rel(got[0], ref[0]), 0);  // Winograd did run (direct gives identical bits)
          EXPECT_EQ(got[0].is_contiguous(at::MemoryFormat::ChannelsLast) && !got[0].is_contiguous(), cl);
          EXPECT_EQ(got[1].is_contiguous(at::MemoryFormat::ChannelsLast) && !got[1].is_contiguous(), cl);
        }
    // The FLOP counter sees Winograd calls as the convolutions they replace: forward, then
    // grad_input and grad_weight (a dilated one: its products that read the image, not its
    // sub-grids padded to the largest).
    for (int64_t d : {1, 2}) {
      torch::nn::Conv2d conv(torch::nn::Conv2dOptions(16, 24, 3).padding(d).dilation(d).bias(false));
      auto x = torch::randn({2, 16, 8, 8}).requires_grad_(true);
      compute::FlopCount c;
      {
        compute::FlopCounter counter;
        compute::WinogradScope scope(true, kernels);
        compute::conv2d(*conv, x).sum().backward();
        c = counter.result();
      }
      // Undilated: every tap, padding included, as PyTorch's FlopCounterMode counts.
      EXPECT_DOUBLE_EQ(c.conv, 3 * (d == 1 ? conv_flops(2, 16, 24, 3, 8, 8) : dilated_flops(2, 16, 24, 8, 8, d)))
          << "dilation " << d;
      // Counted by the Winograd path as the convolution it stands for, not the batch of d²
      // sub-grids it runs.
      ASSERT_EQ(c.by_shape.size(), 1u) << "dilation " << d;
      EXPECT_EQ(c.by_shape.begin()->first.str(), compute::same_conv3x3({2, 16, 8, 8}, {24, 16, 3, 3}, d).str())
          << "dilation " << d;
    }
  }
  // Not eligible (stride 2, bias): the module's own forward, bit for bit.
  torch::nn::Conv2d strided(torch::nn::Conv2dOptions(8, 8, 3).padding(1).stride(2).bias(false));
  torch::nn::Conv2d biased(torch::nn::Conv2dOptions(8, 8, 3).padding(1));
  const auto x = torch::randn({2, 8, 10, 10});
  compute::WinogradScope scope(true);
  EXPECT_TRUE(torch::equal(compute::conv2d(*strided, x), strided(x)));
  EXPECT_TRUE(torch::equal(compute::conv2d(*biased, x), biased(x)));
}

// Whether cp2's AVX2 Winograd kernels run here; where they do not, their reason names AVX2.
bool tiles_here() {
  std::string why;
  if (compute::tiles_available(&why)) return true;
  EXPECT_NE(why.find("AVX2"), std::string::npos) << why;
  return false;
}

// cp2's own kernels (compute/winograd_tiles.h) at the edges of their tiling: maps of 1×1 to
// 9×5 (partial tiles, a tile wider than the map), ResNet's channel counts, weights in
// channels-last memory (and their gradient in it), one gradient asked for; channel counts
// not multiples of 8 run the direct convolution bit for bit.
TEST(Winograd, OwnKernelsTileEdgesAndChannelCounts) {
  if (!tiles_here()) return;
  // The 512-channel cases' filters (9.4 MB, 38 MB in the Winograd domain) take the kernels'
  // streaming stores. Each case in both tile sizes (4×4 and 3×3 outputs) and at dilation d
  // (d² sub-grids tiled in place), input NCHW or channels-last. Where d does not divide a
  // side, the phases' sub-grids differ by a pixel: 13×9 at rate 2 (7×5 to 6×4: with 4×4
  // tiles, a tile column of the 5-wide grid that phase 1 lacks entirely), 7×11 at rate 3
  // (3×4 to 2×3), 10×9 at rate 4 (3×3 to 2×2).
  struct Case {
    int64_t n, c, o, h, w;
    bool weight_cl;
    int64_t d = 1;
    bool input_cl = false;
  };
  for (const auto& k : {Case{1, 8, 8, 1, 1, false}, Case{2, 64, 128, 9, 5, true}, Case{1, 256, 64, 7, 7, false},
                        Case{2, 32, 16, 4, 13, true}, Case{1, 512, 512, 3, 5, false}, Case{1, 512, 512, 2, 2, true},
                        Case{2, 16, 24, 12, 12, false, 4, true}, Case{1, 24, 16, 18, 9, true, 3},
                        Case{3, 8, 8, 10, 14, false, 2, true}, Case{2, 16, 24, 13, 9, false, 2, true},
                        Case{1, 24, 16, 7, 11, true, 3}, Case{2, 64, 32, 10, 9, false, 4}}) {
    for (int64_t tile : {4, 3}) {
      SCOPED_TRACE(shape_str({k.n, k.c, k.h, k.w}) + " -> " + std::to_string(k.o) + ", dilation " +
                   std::to_string(k.d) + ", tiles of " + std::to_string(tile));
      torch::manual_seed(11);
      auto w0 = torch::randn({k.o, k.c, 3, 3}) / std::sqrt(9.0 * k.c);
      if (k.weight_cl) w0 = w0.contiguous(at::MemoryFormat::ChannelsLast);
      auto x0 = torch::randn({k.n, k.c, k.h, k.w});
      if (k.input_cl) x0 = x0.contiguous(at::MemoryFormat::ChannelsLast);
      const auto g = torch::randn({k.n, k.o, k.h, k.w});
      auto xr = x0.clone().requires_grad_(true), wr = w0.clone().requires_grad_(true);
      const auto yr = at::conv2d(xr, wr, {}, 1, k.d, k.d);
      (yr * g).sum().backward();
      auto xt = x0.clone().requires_grad_(true), wt = w0.clone().requires_grad_(true);
      const auto yt = compute::tiles_conv3x3(xt, wt, tile, k.d);
      (yt * g).sum().backward();
      EXPECT_LT(rel(yt, yr), 2e-5);
      EXPECT_LT(rel(xt.grad(), xr.grad()), 2e-5);
      EXPECT_LT(rel(wt.grad(), wr.grad()), 2e-5);
      EXPECT_GT(rel(yt, yr), 0);  // Winograd's arithmetic, not the direct convolution's
      EXPECT_EQ(wt.grad().sizes(), wr.grad().sizes());
      EXPECT_EQ(compute::is_channels_last(yt), k.input_cl);
      // Weights frozen: no weight gradient computed, the input gradient unchanged.
      auto xf = x0.clone().requires_grad_(true);
      (compute::tiles_conv3x3(xf, w0, tile, k.d) * g).sum().backward();
      EXPECT_TRUE(torch::equal(xf.grad(), xt.grad()));
    }
  }
  // Tile sizes: 3×3 where it multiplies less (maps of 1, 2, 3, 5, 6, 9 pixels), else 4×4.
  for (int64_t s : {1, 2, 3, 5, 6, 9}) EXPECT_EQ(compute::tiles_size(s, s), 3) << s;
  for (int64_t s : {4, 7, 8, 10, 12, 14, 16, 28}) EXPECT_EQ(compute::tiles_size(s, s), 4) << s;
  EXPECT_DOUBLE_EQ(compute::tiles_products(3, 3, 3), 25.0 / 9);
  EXPECT_DOUBLE_EQ(compute::tiles_products(3, 3, 4), 36.0 / 9);
  EXPECT_DOUBLE_EQ(compute::tiles_products(8, 8, 4), 36.0 * 4 / 64);
  expect_error([&] { compute::tiles_conv3x3(torch::randn({1, 8, 10, 10}), torch::randn({8, 8, 3, 3}), 0, 0); },
               {"tiles_conv3x3", "dilation >= 1", "found 0"});
  expect_error([&] { compute::tiles_conv3x3(torch::randn({1, 8, 8, 8}), torch::randn({8, 8, 3, 3}), 5); },
               {"tiles of 3 or 4", "5"});
  // conv_path asks winograd_runs: where the kernels chosen would run the direct convolution,
  // the module's forward, without the sub-grid copies (a rate-2 convolution on 8×8 maps,
  // batch 1: 4 sub-grids of one tile each). Named, either kernels run there; chosen as the
  // best at hand, neither does below kMinWinogradTiles tiles.
  {
    torch::nn::Conv2d dilated(torch::nn::Conv2dOptions(512, 512, 3).padding(2).dilation(2).bias(false));
    const auto x = torch::randn({1, 512, 8, 8});
    compute::WinogradScope named(true, compute::WinogradKernels::tiles);
    EXPECT_TRUE(compute::winograd_runs(4, 512, 512, 4, 4));
    EXPECT_EQ(compute::conv_path(*dilated, x), compute::ConvPath::winograd_subgrids);
    compute::WinogradScope best(true, compute::WinogradKernels::best);
    EXPECT_FALSE(compute::winograd_runs(4, 512, 512, 4, 4));  // 4 tiles
    EXPECT_FALSE(compute::winograd_runs(1, 512, 512, 16, 12));  // 12 tiles
    EXPECT_TRUE(compute::winograd_runs(32, 512, 512, 4, 4));
    EXPECT_TRUE(compute::winograd_runs(2, 512, 512, 16, 16));
    EXPECT_EQ(compute::conv_path(*dilated, x), compute::ConvPath::module);
    EXPECT_EQ(compute::conv_path(*dilated, torch::randn({8, 512, 8, 8})), compute::ConvPath::winograd_subgrids);
    if (compute::winograd_kernels_available(compute::WinogradKernels::onednn)) {
      compute::WinogradScope onednn(true, compute::WinogradKernels::onednn);
      EXPECT_TRUE(compute::winograd_runs(4, 512, 512, 4, 4));
      EXPECT_EQ(compute::conv_path(*dilated, x), compute::ConvPath::winograd_subgrids);
    }
  }
  // Chosen as the best at hand, they run only where they were measured to win: ≥ 32 tiles;
  // with tiles ≥ 75 % full ≥ 128 channels, or 64 with ≥ 64 tiles; ≥ 256 with half-full ones.
  EXPECT_TRUE(compute::tiles_pay_off(8, 128, 128, 16, 16));    // 8·4·4 = 128 full tiles
  EXPECT_TRUE(compute::tiles_pay_off(8, 2560, 512, 14, 14));   // 77 % full
  EXPECT_TRUE(compute::tiles_pay_off(8, 512, 512, 8, 8));      // 32 tiles
  EXPECT_FALSE(compute::tiles_pay_off(4, 512, 512, 8, 8));     // 16 tiles
  EXPECT_TRUE(compute::tiles_pay_off(8, 64, 64, 56, 56));      // 64 channels, 1568 full tiles
  EXPECT_TRUE(compute::tiles_pay_off(1, 64, 64, 32, 32));      // 64 channels, 64 full tiles
  EXPECT_FALSE(compute::tiles_pay_off(2, 64, 64, 16, 16));     // 64 channels, 32 tiles
  EXPECT_FALSE(compute::tiles_pay_off(32, 64, 64, 6, 6));      // 64 channels, 56 % full
  EXPECT_FALSE(compute::tiles_pay_off(8, 32, 64, 64, 64));     // 32 channels in
  EXPECT_TRUE(compute::tiles_pay_off(128, 256, 256, 6, 6));    // 56 % full, 256 channels
  EXPECT_TRUE(compute::tiles_pay_off(128, 512, 512, 3, 3));    // 56 % full, 512 channels
  EXPECT_FALSE(compute::tiles_pay_off(128, 128, 256, 6, 6));   // 56 % full, 128 channels
  EXPECT_FALSE(compute::tiles_pay_off(128, 512, 512, 5, 5));   // 39 % full
  EXPECT_FALSE(compute::tiles_pay_off(32, 132, 128, 16, 16));  // not a multiple of 8
  // F(3×3) on the maps it tiles better: against oneDNN's AVX-512 direct kernels ≥ 64 tiles
  // with ≥ 256 channels or ≥ 256 tiles with ≥ 128; elsewhere ≥ 32 tiles with ≥ 64 channels.
  // Chosen as the best, on such maps it runs, or the convolution runs direct (never oneDNN's
  // half-empty 4×4 tiles).
  const bool avx512 = compute::onednn_avx512();
  EXPECT_TRUE(compute::tiles3_pay_off(512, 512, 512, 3, 3));    // rate 4 on 12×12 maps, batch 32
  EXPECT_TRUE(compute::tiles3_pay_off(128, 256, 256, 6, 6));    // its rate 2: 512 tiles
  EXPECT_TRUE(compute::tiles3_pay_off(64, 512, 512, 3, 3));     // 64 tiles
  EXPECT_EQ(compute::tiles3_pay_off(64, 128, 128, 3, 3), !avx512);
  EXPECT_TRUE(compute::tiles3_pay_off(256, 128, 128, 3, 3));
  EXPECT_EQ(compute::tiles3_pay_off(32, 64, 64, 3, 3), !avx512);
  EXPECT_FALSE(compute::tiles3_pay_off(16, 512, 512, 3, 3));    // 16 tiles
  EXPECT_FALSE(compute::tiles3_pay_off(512, 32, 64, 3, 3));     // 32 channels in
  EXPECT_FALSE(compute::tiles3_pay_off(512, 512, 512, 4, 4));   // 4×4 tiles fit better
  {
    compute::WinogradScope best(true, compute::WinogradKernels::best);
    const auto p = compute::winograd_plan(512, 512, 512, 3, 3);
    EXPECT_EQ(p.kernels, compute::WinogradKernels::tiles);
    EXPECT_EQ(p.tile, 3);
    EXPECT_DOUBLE_EQ(p.products, 25.0 / 9);
    EXPECT_EQ(compute::winograd_plan(16, 512, 512, 3, 3).kernels, compute::WinogradKernels::none);
    EXPECT_EQ(compute::winograd_plan(512, 512, 512, 4, 4).tile, 4);
    // A rate-4 convolution on 12×12 maps (batch 32: as ResNet-18's layer4 at 96 px, rate 2 on
    // 6×6 maps, but with 512 sub-grids of 3×3 rather than 128) takes F(3×3) sub-grids,
    // channels-last too (before the tap GEMMs: 2.8 products per output against 9 · 0.60);
    // ASPP's rate 6 there (2×2 sub-grids: 6.25 against 9 · 0.44) keeps the tap GEMMs.
    torch::nn::Conv2d rate4(torch::nn::Conv2dOptions(512, 512, 3).padding(4).dilation(4).bias(false));
    torch::nn::Conv2d rate6(torch::nn::Conv2dOptions(512, 128, 3).padding(6).dilation(6).bias(false));
    const auto x12 = torch::empty({32, 512, 12, 12}).contiguous(at::MemoryFormat::ChannelsLast);
    EXPECT_EQ(compute::conv_path(*rate4, x12), compute::ConvPath::winograd_subgrids);
    EXPECT_EQ(compute::conv_path(*rate6, x12),
              compute::sgemm_is_onednn() ? compute::ConvPath::taps : compute::ConvPath::winograd_subgrids);
    // Maps that the rate does not divide take the sub-grids too (a 769² crop's 49×49 maps at
    // rate 2 had run direct): here 25×25 at rate 2, 8 sub-grids of 13×13 to 12×12.
    torch::nn::Conv2d rate2(torch::nn::Conv2dOptions(256, 256, 3).padding(2).dilation(2).bias(false));
    EXPECT_EQ(compute::conv_path(*rate2, torch::empty({2, 256, 25, 25}).contiguous(at::MemoryFormat::ChannelsLast)),
              compute::ConvPath::winograd_subgrids);
    // ... and the sub-grids go before the tap GEMMs only where they multiply kSubgridsOverTaps
    // times less, every phase tiled as the largest sub-grid: ASPP's rate 6 on 224 px crops'
    // 14×14 maps (sub-grids of 3 and 2 px: 4.6 products per output, as the taps) keeps the taps;
    // on 512 px crops' 32×32 maps (6 and 5 px: 3.5 against 6.9) it takes the sub-grids, rate
    // 12 on 769 px crops' 49×49 (5 and 4 px: 6.0 against 6.3) the taps. The fast path
    // `subgrids` off, the taps.
    const auto taps_or_subgrids =
        compute::sgemm_is_onednn() ? compute::ConvPath::taps : compute::ConvPath::winograd_subgrids;
    torch::nn::Conv2d aspp6(torch::nn::Conv2dOptions(2048, 512, 3).padding(6).dilation(6).bias(false));
    torch::nn::Conv2d aspp12(torch::nn::Conv2dOptions(2048, 512, 3).padding(12).dilation(12).bias(false));
    const auto x14cl = torch::empty({8, 2048, 14, 14}).contiguous(at::MemoryFormat::ChannelsLast);
    const auto x32cl = torch::empty({2, 2048, 32, 32}).contiguous(at::MemoryFormat::ChannelsLast);
    const auto x49cl = torch::empty({2, 2048, 49, 49}).contiguous(at::MemoryFormat::ChannelsLast);
    EXPECT_EQ(compute::winograd_plan_for(x14cl, 512, 6).tile, 3);
    EXPECT_EQ(compute::conv_path(*aspp6, x14cl), taps_or_subgrids);
    EXPECT_EQ(compute::conv_path(*aspp6, x32cl), compute::ConvPath::winograd_subgrids);
    EXPECT_EQ(compute::conv_path(*aspp12, x49cl), taps_or_subgrids);
    {
      compute::FastPathsOff off({compute::FastPath::subgrids});
      EXPECT_EQ(compute::conv_path(*aspp6, x32cl), taps_or_subgrids);
    }
    // Dilated, cp2's F(4×4) (sub-grids tiled in place) before oneDNN's (copied out), in either
    // layout. ResNet-50's layer4 at 224 px, batch 8 (8·4 sub-grids of 7×7), and at 769 px
    // crops (49×49 maps: sub-grids of 25×25 to 24×24).
    const auto x14 = torch::empty({8, 512, 14, 14});
    for (const auto& x : {x14, x14.contiguous(at::MemoryFormat::ChannelsLast), torch::empty({2, 512, 49, 49})}) {
      const auto p2 = compute::winograd_plan_for(x, 512, 2);
      EXPECT_EQ(p2.kernels, compute::WinogradKernels::tiles);
      EXPECT_EQ(p2.tile, 4);
      EXPECT_DOUBLE_EQ(p2.products, compute::tiles_products(compute::subgrid_side(x.size(2), 2),
                                                            compute::subgrid_side(x.size(3), 2), 4));
    }
    EXPECT_EQ(compute::subgrid_side(49, 2), 25);
    EXPECT_EQ(compute::subgrid_side(48, 2), 24);
    // Undilated, oneDNN's where it runs, but cp2's F(4×4) on the channel counts where they beat
    // it (tiles_beat_onednn: ≥ 256 NCHW, ≥ 128 channels-last), unless cp2-tiles is off.
    const auto onednn_or_tiles = compute::winograd_kernels_available(compute::WinogradKernels::onednn)
                                     ? compute::WinogradKernels::onednn
                                     : compute::WinogradKernels::tiles;
    EXPECT_TRUE(compute::tiles_beat_onednn(256, 2560, false));
    EXPECT_FALSE(compute::tiles_beat_onednn(128, 128, false));
    EXPECT_TRUE(compute::tiles_beat_onednn(128, 128, true));
    EXPECT_FALSE(compute::tiles_beat_onednn(64, 256, true));
    const auto cl = at::MemoryFormat::ChannelsLast;
    const auto x16 = torch::empty({8, 128, 16, 16}), x16cl = x16.contiguous(cl);
    const auto x56cl = torch::empty({8, 64, 56, 56}).contiguous(cl);
    EXPECT_EQ(compute::winograd_plan_for(x14, 512, 1).kernels, compute::WinogradKernels::tiles);
    EXPECT_EQ(compute::winograd_plan_for(x14, 512, 1).tile, 4);
    EXPECT_EQ(compute::winograd_plan_for(x16, 128, 1).kernels, onednn_or_tiles);
    EXPECT_EQ(compute::winograd_plan_for(x16cl, 128, 1).kernels, compute::WinogradKernels::tiles);
    EXPECT_EQ(compute::winograd_plan_for(x56cl, 64, 1).kernels, onednn_or_tiles);
    EXPECT_TRUE(compute::winograd_runs(8, 128, 128, 16, 16, true));
    {
      compute::FastPathsOff off({compute::FastPath::cp2_tiles});
      EXPECT_EQ(compute::winograd_plan_for(x14, 512, 1).kernels, onednn_or_tiles);
      EXPECT_EQ(compute::winograd_plan_for(x16cl, 128, 1).kernels, onednn_or_tiles);
      EXPECT_EQ(compute::winograd_plan_for(x14, 512, 2).kernels, compute::WinogradKernels::tiles);  // in place
    }
    // Where cp2's do not pay (16 channels), the plan falls back as before: oneDNN's from 32
    // tiles, else direct.
    EXPECT_EQ(compute::winograd_plan_for(torch::empty({8, 16, 28, 28}), 16, 2).kernels,
              compute::winograd_kernels_available(compute::WinogradKernels::onednn) ? compute::WinogradKernels::onednn
                                                                                    : compute::WinogradKernels::none);
  }
  // 12 input channels: direct, bit for bit.
  const auto x = torch::randn({2, 12, 6, 6});
  const auto w = torch::randn({8, 12, 3, 3});
  compute::WinogradScope scope(true, compute::WinogradKernels::tiles);
  EXPECT_TRUE(torch::equal(compute::winograd_conv3x3(x, w), at::conv2d(x, w, {}, 1, 1)));
  EXPECT_FALSE(torch::equal(compute::winograd_conv3x3(x.narrow(1, 0, 8), w.narrow(1, 0, 8)),
                            at::conv2d(x.narrow(1, 0, 8), w.narrow(1, 0, 8), {}, 1, 1)));
}

// A whole CP² step with Winograd 3x3 convolutions tracks the direct one (fp32 round-off),
// with each set of kernels; where the CPU has no Winograd kernels, the flag changes nothing.
TEST(Winograd, CP2StepTracksDirect) {
  const auto ref = one_step({});
  compute::Numerics w;
  w.winograd = true;
  if (!compute::winograd_available()) {
    const auto got = one_step(w);
    EXPECT_EQ(got.loss, ref.loss);
    EXPECT_EQ(max_abs_diff(got.params, ref.params), 0);
    return;
  }
  for (auto kernels : winograd_kernel_sets()) {
    SCOPED_TRACE(compute::winograd_kernels_name(kernels));
    // The step opens its own scope from Numerics::winograd; the kernels are this thread's choice.
    compute::WinogradScope choose(false, kernels);
    const auto got = one_step(w);
    // It did run: the weights moved differently (the fp32 loss may round to the same value).
    EXPECT_GT(max_abs_diff(got.params, ref.params), 0);
    EXPECT_NEAR(got.loss, ref.loss, 1e-4 * std::abs(ref.loss));
    EXPECT_LT(max_abs_diff(got.params, ref.params), 1e-4);
  }
}

// Sets compute/gemm.h's backend for a scope, back to `best` after it (an assertion that returns
// early included).
struct GemmBackendScope {
  explicit GemmBackendScope(compute::GemmBackend b) { compute::set_gemm_backend(b); }
  ~GemmBackendScope() { compute::set_gemm_backend(compute::GemmBackend::best); }
  GemmBackendScope(const GemmBackendScope&) = delete;
  GemmBackendScope& operator=(const GemmBackendScope&) = delete;
};

// compute::sgemm through oneDNN (where this build has it) and through LibTorch's matmul: every
// transposition, leading dimensions past the matrices' widths, beta 0 and 1, against sums in
// double; C's padding columns untouched; bad arguments named.
TEST(Gemm, BothBackendsMatchDoubleSums) {
  const int64_t m = 5, n = 7, k = 9;
  for (const auto backend : {compute::GemmBackend::best, compute::GemmBackend::torch})
    for (char ta : {'N', 'T'})
      for (char tb : {'N', 'T'})
        for (float beta : {0.f, 1.f}) {
          GemmBackendScope scope(backend);
          SCOPED_TRACE(std::string(1, ta) + tb + " beta " + std::to_string(beta) +
                       (compute::sgemm_is_onednn() ? ", oneDNN" : ", LibTorch"));
          const int64_t lda = (ta == 'N' ? k : m) + 3, ldb = (tb == 'N' ? n : k) + 2, ldc = n + 4;
          torch::manual_seed(3);
          const auto A = torch::randn({(ta == 'N' ? m : k) * lda}), B = torch::randn({(tb == 'N' ? k : n) * ldb});
          const auto C0 = torch::randn({m * ldc});
          auto C = C0.clone();
          const float *a = A.data_ptr<float>(), *b = B.data_ptr<float>(), *c0 = C0.data_ptr<float>();
          compute::sgemm("test", ta, tb, m, n, k, a, lda, b, ldb, beta, C.data_ptr<float>(), ldc);
          const float* c = C.data_ptr<float>();
          for (int64_t i = 0; i < m; ++i) {
            for (int64_t j = 0; j < n; ++j) {
              double want = beta * c0[i * ldc + j];
              for (int64_t p = 0; p < k; ++p) {
                const float ap = ta == 'N' ? a[i * lda + p] : a[p * lda + i];
                want += double(ap) * (tb == 'N' ? b[p * ldb + j] : b[j * ldb + p]);
              }
              EXPECT_NEAR(c[i * ldc + j], want, 1e-5 * (1 + std::abs(want))) << i << "," << j;
            }
            for (int64_t j = n; j < ldc; ++j) EXPECT_EQ(c[i * ldc + j], c0[i * ldc + j]) << "padding " << i << "," << j;
          }
        }
  std::vector<float> buf(64);
  expect_error([&] { compute::sgemm("tap", 'X', 'N', 2, 2, 2, buf.data(), 2, buf.data(), 2, 0.f, buf.data(), 2); },
               {"tap: sgemm given invalid arguments", "XN"});
  expect_error([&] { compute::sgemm("tap", 'N', 'N', 2, 3, 4, buf.data(), 3, buf.data(), 3, 0.f, buf.data(), 3); },
               {"2x4 by 4x3", "leading dimensions 3, 3, 3"});
}

// cp2's Winograd kernels through LibTorch's matmul (their 36 products as one batched call; the
// path of builds without oneDNN), against the direct convolution: a few of
// OwnKernelsTileEdgesAndChannelCounts' cases.
TEST(Winograd, OwnKernelsThroughLibTorchsMatmul) {
  if (!tiles_here()) return;
  GemmBackendScope scope(compute::GemmBackend::torch);
  ASSERT_FALSE(compute::sgemm_is_onednn());
  struct Case {
    int64_t n, c, o, h, w, d;
    bool cl;
  };
  for (const auto& k :
       {Case{2, 64, 128, 9, 5, 1, true}, Case{2, 16, 24, 12, 12, 4, true}, Case{1, 24, 16, 7, 11, 3, false}})
    for (int64_t tile : {4, 3}) {
      SCOPED_TRACE(shape_str({k.n, k.c, k.h, k.w}) + ", dilation " + std::to_string(k.d) + ", tiles of " +
                   std::to_string(tile));
      torch::manual_seed(11);
      const auto w0 = torch::randn({k.o, k.c, 3, 3}) / std::sqrt(9.0 * k.c);
      auto x0 = torch::randn({k.n, k.c, k.h, k.w});
      if (k.cl) x0 = x0.contiguous(at::MemoryFormat::ChannelsLast);
      const auto g = torch::randn({k.n, k.o, k.h, k.w});
      auto xr = x0.clone().requires_grad_(true), wr = w0.clone().requires_grad_(true);
      (at::conv2d(xr, wr, {}, 1, k.d, k.d) * g).sum().backward();
      auto xt = x0.clone().requires_grad_(true), wt = w0.clone().requires_grad_(true);
      const auto yt = compute::tiles_conv3x3(xt, wt, tile, k.d);
      (yt * g).sum().backward();
      EXPECT_LT(rel(yt, at::conv2d(x0, w0, {}, 1, k.d, k.d)), 2e-5);
      EXPECT_LT(rel(xt.grad(), xr.grad()), 2e-5);
      EXPECT_LT(rel(wt.grad(), wr.grad()), 2e-5);
    }
}

// ASPP's bottleneck with its image-pool channels made once per image (compute/winograd_tiles.h:
// tiles_conv3x3_pooled) against PyTorch's direct convolution of the concatenated input, the
// pooled channels broadcast over the map: output and the gradients of all three, both tile
// sizes, both GEMM backends, NCHW and channels-last input and weights; maps of one tile
// (1×1: every plane's taps), several, ragged edges; a gradient not asked for is not made and
// leaves the others bit for bit.
TEST(Winograd, PooledPrefixMatchesTheConcatenatedConvolution) {
  if (!tiles_here()) return;
  struct Case {
    int64_t n, cp, cr, o, h, w;
    bool cl = false, weight_cl = false;
  };
  for (const auto backend : {compute::GemmBackend::best, compute::GemmBackend::torch})
    for (const auto& k : {Case{2, 8, 16, 8, 6, 6}, Case{2, 16, 32, 24, 7, 9, true}, Case{1, 8, 8, 16, 1, 1},
                          Case{3, 16, 24, 16, 12, 12, false, true}, Case{2, 8, 16, 8, 13, 5, true, true}})
      for (int64_t tile : {4, 3}) {
        GemmBackendScope scope(backend);
        SCOPED_TRACE(shape_str({k.n, k.cp, k.cr, k.o, k.h, k.w}) + ", tiles of " + std::to_string(tile) +
                     (k.cl ? ", channels-last" : "") + (compute::sgemm_is_onednn() ? ", oneDNN" : ", LibTorch"));
        torch::manual_seed(17);
        auto w0 = torch::randn({k.o, k.cp + k.cr, 3, 3}) / std::sqrt(9.0 * (k.cp + k.cr));
        if (k.weight_cl) w0 = w0.contiguous(at::MemoryFormat::ChannelsLast);
        const auto v0 = torch::randn({k.n, k.cp, 1, 1});
        auto x0 = torch::randn({k.n, k.cr, k.h, k.w});
        if (k.cl) x0 = x0.contiguous(at::MemoryFormat::ChannelsLast);
        const auto g = torch::randn({k.n, k.o, k.h, k.w});
        auto vr = v0.clone().requires_grad_(true), xr = x0.clone().requires_grad_(true),
             wr = w0.clone().requires_grad_(true);
        const auto yr = at::conv2d(torch::cat({vr.expand({k.n, k.cp, k.h, k.w}), xr}, 1), wr, {}, 1, 1);
        (yr * g).sum().backward();
        auto vt = v0.clone().requires_grad_(true), xt = x0.clone().requires_grad_(true),
             wt = w0.clone().requires_grad_(true);
        const auto yt = compute::tiles_conv3x3_pooled(vt, xt, wt, tile);
        (yt * g).sum().backward();
        EXPECT_LT(rel(yt, yr), 2e-5);
        EXPECT_GT(rel(yt, yr), 0);  // Winograd's arithmetic, not the direct convolution's
        EXPECT_LT(rel(vt.grad(), vr.grad()), 2e-5);
        EXPECT_LT(rel(xt.grad(), xr.grad()), 2e-5);
        EXPECT_LT(rel(wt.grad(), wr.grad()), 2e-5);
        EXPECT_EQ(vt.grad().sizes(), v0.sizes());
        EXPECT_EQ(compute::is_channels_last(yt), k.cl);
        EXPECT_EQ(compute::is_channels_last(xt.grad()), k.cl);
        // Only the input gradient asked for: the same bits.
        auto xf = x0.clone().requires_grad_(true);
        (compute::tiles_conv3x3_pooled(v0, xf, w0, tile) * g).sum().backward();
        EXPECT_TRUE(torch::equal(xf.grad(), xt.grad()));
        // Only v's and the weight's.
        auto vf = v0.clone().requires_grad_(true), wf = w0.clone().requires_grad_(true);
        (compute::tiles_conv3x3_pooled(vf, x0, wf, tile) * g).sum().backward();
        EXPECT_TRUE(torch::equal(vf.grad(), vt.grad()));
        EXPECT_TRUE(torch::equal(wf.grad(), wt.grad()));
      }
  // Counted as the convolution of the concatenated input: forward, then both gradients.
  {
    auto v = torch::randn({2, 8, 1, 1}).requires_grad_(true), x = torch::randn({2, 16, 8, 8}).requires_grad_(true);
    auto w = torch::randn({24, 24, 3, 3}).requires_grad_(true);
    compute::FlopCounter counter;
    compute::tiles_conv3x3_pooled(v, x, w, 4).sum().backward();
    EXPECT_DOUBLE_EQ(counter.result().conv, 3 * conv_flops(2, 24, 24, 3, 8, 8));
  }
  expect_error([&] { compute::tiles_conv3x3_pooled(torch::randn({2, 8, 2, 1}), torch::randn({2, 8, 6, 6}),
                                                   torch::randn({8, 16, 3, 3}), 4); },
               {"tiles_conv3x3_pooled", "(N,Cp,1,1)", "[2, 8, 2, 1]"});
  expect_error([&] { compute::tiles_conv3x3_pooled(torch::randn({2, 4, 1, 1}), torch::randn({2, 12, 6, 6}),
                                                   torch::randn({8, 16, 3, 3}), 4); },
               {"multiples of 8", "4 + 12"});
  expect_error([&] { compute::tiles_conv3x3_pooled(torch::randn({2, 8, 1, 1}), torch::randn({2, 8, 6, 6}),
                                                   torch::randn({8, 16, 3, 3}), 5); },
               {"tiles of 3 or 4", "5"});
}

// The ASPP head takes the pooled bottleneck under the fast algorithms where cp2's tiles run
// its bottleneck (named here), and the concatenation otherwise: with the path turned off, under
// the direct algorithm, with channel counts the tiles do not take. Features and every
// parameter's gradient agree with the concatenated bottleneck (both Winograd) and with direct.
TEST(Winograd, AsppBottleneckTakesThePooledPathUnderTheFastAlgorithms) {
  if (!tiles_here()) return;
  const auto calls = [](const std::function<void()>& fn) {
    compute::OpProfiler profiler;
    fn();
    for (const auto& op : profiler.result())
      if (op.name == "cp2::winograd_pooled_conv3x3") return op.calls;
    return int64_t{0};
  };
  for (bool cl : {false, true}) {
    SCOPED_TRACE(cl ? "channels-last" : "NCHW");
    models::ASPPHeadOptions o;
    o.in_channels = 16;
    o.channels = 16;
    o.dilations = {1, 2, 12};
    o.proj_channels = 8;
    torch::manual_seed(23);
    models::ASPPHead head(o);
    auto x0 = torch::randn({2, 16, 10, 10});
    if (cl) x0 = x0.contiguous(at::MemoryFormat::ChannelsLast);
    const auto g = torch::randn({2, 16, 10, 10});
    const auto run = [&](bool fast, bool pooled, int64_t expect_calls) {
      head->zero_grad();
      auto x = x0.clone().requires_grad_(true);
      at::Tensor y;
      compute::WinogradScope scope(fast, compute::WinogradKernels::tiles);
      std::vector<compute::FastPath> off;
      if (!pooled) off.push_back(compute::FastPath::aspp_pool);
      compute::FastPathsOff paths(off);
      EXPECT_EQ(calls([&] {
                  y = head->features(x);
                  (y * g).sum().backward();
                }),
                expect_calls);
      std::vector<at::Tensor> out{y.detach(), x.grad()};
      for (const auto& p : head->parameters())  // the projection's take no part in features()
        if (p.grad().defined()) out.push_back(p.grad().clone());
      return out;
    };
    const auto pooled = run(true, true, 1), concatenated = run(true, false, 0), direct = run(false, true, 0);
    ASSERT_EQ(pooled.size(), 2 + 3 * 5);  // output, input, and each ConvModule's conv and bn weights
    ASSERT_EQ(pooled.size(), concatenated.size());
    for (size_t i = 0; i < pooled.size(); ++i) {
      SCOPED_TRACE(i);
      EXPECT_LT(rel(pooled[i], concatenated[i]), 2e-5);
      EXPECT_LT(rel(pooled[i], direct[i]), 2e-5);
    }
    EXPECT_FALSE(torch::equal(pooled[0], concatenated[0]));
  }
  // What pooled_runs asks: a 3×3 over v (N,Cp,1,1) and the rest on one map, channel counts
  // that add up and that the tiles take, cp2's tiles chosen, both paths on.
  torch::nn::Conv2d bottleneck(torch::nn::Conv2dOptions(24, 8, 3).padding(1).bias(false));
  const auto v = torch::randn({2, 8, 1, 1});
  const std::vector<at::Tensor> rest{torch::randn({2, 16, 6, 6})};
  {
    compute::WinogradScope on(true, compute::WinogradKernels::tiles);
    EXPECT_TRUE(compute::pooled_runs(*bottleneck, v, rest));
    EXPECT_FALSE(compute::pooled_runs(*bottleneck, torch::randn({2, 8, 2, 2}), rest));
    EXPECT_FALSE(compute::pooled_runs(*bottleneck, v, {torch::randn({2, 8, 6, 6})}));
    EXPECT_FALSE(compute::pooled_runs(*bottleneck, v, {torch::randn({2, 8, 6, 6}), torch::randn({2, 8, 6, 5})}));
    EXPECT_FALSE(compute::pooled_runs(*bottleneck, v.to(torch::kDouble), rest));
    for (auto path : {compute::FastPath::aspp_pool, compute::FastPath::winograd}) {
      compute::FastPathsOff off({path});
      EXPECT_FALSE(compute::pooled_runs(*bottleneck, v, rest));
      expect_error([&] { compute::conv2d_pooled(*bottleneck, v, rest); }, {"conv2d_pooled", "does not qualify"});
    }
  }
  {
    compute::WinogradScope direct(false);
    EXPECT_FALSE(compute::pooled_runs(*bottleneck, v, rest));
  }
  // Channel counts the tiles do not take (12 per branch): the concatenation.
  models::ASPPHeadOptions o;
  o.in_channels = 8;
  o.channels = 12;
  o.dilations = {1, 2};
  models::ASPPHead head(o);
  compute::WinogradScope scope(true, compute::WinogradKernels::tiles);
  EXPECT_EQ(calls([&] { head->features(torch::randn({2, 8, 6, 6})); }), 0);
}

// Dilated 3x3 convolutions as one GEMM per tap (compute/dilated.h) against the direct
// convolution: maps where outer taps read the image partly (7x9 at rate 3), only in one
// dimension (5x11 at 5), or never (4x4 at 12, 1x1), odd and ResNet-like channel counts, NCHW
// and channels-last input and weights, either gradient alone; then the dispatch
// (compute/conv.h) and the FLOP count.
TEST(DilatedTaps, MatchDirectConvolutionForwardAndGradients) {
  // The share of products that read the image: (14+8+8)/42 per side at rate 6 on 14², etc.
  EXPECT_NEAR(compute::dilated_taps_kept(14, 14, 6), (30.0 / 42) * (30.0 / 42), 1e-12);
  EXPECT_NEAR(compute::dilated_taps_kept(14, 14, 12), (18.0 / 42) * (18.0 / 42), 1e-12);
  EXPECT_NEAR(compute::dilated_taps_kept(32, 32, 24), 0.25, 1e-12);
  EXPECT_NEAR(compute::dilated_taps_kept(32, 32, 12), 0.5625, 1e-12);
  EXPECT_NEAR(compute::dilated_taps_kept(8, 8, 12), 1.0 / 9, 1e-12);
  EXPECT_NEAR(compute::dilated_taps_kept(32, 32, 2), (92.0 / 96) * (92.0 / 96), 1e-12);
  struct Case {
    int64_t n, c, o, h, w, d;
  };
  // Both of compute/gemm.h's backends: oneDNN's sgemm (this build's) and LibTorch's matmul
  // (builds without oneDNN: PyTorch's official LibTorch, the GPU core build).
  for (const auto backend : {compute::GemmBackend::best, compute::GemmBackend::torch}) {
    GemmBackendScope scope(backend);
    for (const Case k : {Case{2, 16, 24, 7, 9, 3}, Case{2, 3, 5, 5, 11, 5}, Case{1, 8, 8, 4, 4, 12}, Case{3, 4, 6, 1, 1, 2},
                         Case{2, 32, 16, 14, 14, 6}}) {
      for (bool cl : {false, true}) {
        SCOPED_TRACE("n" + std::to_string(k.n) + " c" + std::to_string(k.c) + " o" + std::to_string(k.o) + " " +
                     std::to_string(k.h) + "x" + std::to_string(k.w) + " rate " + std::to_string(k.d) +
                     (cl ? " channels-last" : " NCHW") + (compute::sgemm_is_onednn() ? ", oneDNN" : ", LibTorch"));
        torch::manual_seed(11);
        auto x0 = torch::randn({k.n, k.c, k.h, k.w}), w0 = torch::randn({k.o, k.c, 3, 3});
        if (cl) {
          x0 = x0.contiguous(at::MemoryFormat::ChannelsLast);
          w0 = w0.contiguous(at::MemoryFormat::ChannelsLast);
        }
        const auto g = torch::randn({k.n, k.o, k.h, k.w});
        for (int grads : {3, 1, 2}) {  // both, input only, weight only
          const auto ref = conv_and_grads(x0, w0, g, grads, [&](const at::Tensor& x, const at::Tensor& w) {
            return at::conv2d(x, w, {}, 1, k.d, k.d);
          });
          const auto got = conv_and_grads(x0, w0, g, grads, [&](const at::Tensor& x, const at::Tensor& w) {
            return compute::dilated_conv3x3_taps(x, w, k.d);
          });
          expect_conv_close(got, ref, 1e-5);
          EXPECT_EQ(got[0].is_contiguous(at::MemoryFormat::ChannelsLast) && !got[0].is_contiguous(), cl && k.h * k.w > 1);
          // Taps that never read the image get an exact zero gradient (rate 12 on 4x4: all
          // but the centre).
          if ((grads & 2) && k.d >= k.h && k.d >= k.w) {
            auto outer = got[2].clone();
            outer.select(2, 1).select(2, 1).zero_();
            EXPECT_EQ(outer.abs().max().item<float>(), 0.f);
          }
        }
      }
    }
  }
  expect_error([] { compute::dilated_conv3x3_taps(torch::randn({1, 4, 5, 5}), torch::randn({2, 3, 3, 3}), 2); },
               {"dilated_conv3x3_taps", "[1, 4, 5, 5]", "[2, 3, 3, 3]"});
  expect_error([] { compute::dilated_conv3x3_taps(torch::randn({1, 4, 5, 5}, torch::kDouble), torch::randn({2, 4, 3, 3}), 2); },
               {"fp32 CPU"});

  // Through the model's dispatch, which takes the tap GEMMs only through oneDNN's sgemm
  // (conv.cpp): through LibTorch's matmul (builds without oneDNN; here its backend switch) no
  // share picks them, in either layout, the fast algorithms on.
  torch::nn::Conv2d aspp(torch::nn::Conv2dOptions(16, 8, 3).padding(12).dilation(12).bias(false));
  const auto x = torch::randn({2, 16, 14, 14});
  {
    GemmBackendScope torch_gemm(compute::GemmBackend::torch);
    compute::WinogradScope on(true);
    torch::nn::Conv2d rate6(torch::nn::Conv2dOptions(16, 8, 3).padding(6).dilation(6).bias(false));
    for (bool cl : {false, true}) {
      const auto xi = cl ? x.contiguous(at::MemoryFormat::ChannelsLast) : x;
      EXPECT_STRNE(compute::conv_path_name(compute::conv_path(*aspp, xi)), "tap GEMMs") << cl;
      EXPECT_STRNE(compute::conv_path_name(compute::conv_path(*rate6, xi)), "tap GEMMs") << cl;
    }
  }
  // With it, ASPP's rate 12 on 14² (share 0.18) takes the tap GEMMs under the fast algorithms
  // and is counted as the products that read the image, as the module's forward is (one
  // dilated shape either way); `direct` is the module's own forward bit for bit.
  if (!compute::sgemm_is_onednn()) return;
  {
    compute::WinogradScope off(false);
    EXPECT_TRUE(torch::equal(compute::conv2d(*aspp, x), aspp(x)));
  }
  compute::FlopCount c;
  at::Tensor y;
  for (bool cl : {false, true}) {
    const auto xi = (cl ? x.contiguous(at::MemoryFormat::ChannelsLast) : x).clone().requires_grad_(true);
    {
      compute::FlopCounter counter;
      compute::WinogradScope on(true);
      EXPECT_EQ(compute::conv_path(*aspp, xi), compute::ConvPath::taps) << cl;
      y = compute::conv2d(*aspp, xi);
      y.sum().backward();
      c = counter.result();
    }
    EXPECT_LT(rel(y.detach(), aspp(x).detach()), 1e-5);
    EXPECT_DOUBLE_EQ(c.conv, 3 * dilated_flops(2, 16, 8, 14, 14, 12));
    EXPECT_NEAR(c.conv, 3 * compute::dilated_taps_kept(14, 14, 12) * conv_flops(2, 16, 8, 3, 14, 14), 1e-3);
    ASSERT_EQ(c.by_shape.size(), 1u);
    EXPECT_EQ(c.by_shape.begin()->first.str(), compute::same_conv3x3({2, 16, 14, 14}, {8, 16, 3, 3}, 12).str());
    compute::FlopCounter counter;
    compute::WinogradScope off(false);
    aspp(xi).sum().backward();
    EXPECT_DOUBLE_EQ(counter.result().conv, c.conv) << "the module's forward and backward, " << cl;
  }
  // Shares between the thresholds: rate 6 on 14² (0.51) and rate 2 on 12x12 (0.79)
  // take tap GEMMs in channels-last only; rate 2 on 32x32 (0.92) never.
  for (const auto& [rate, side, cl, taps] :
       {std::tuple{6, 14, false, false}, std::tuple{6, 14, true, true}, std::tuple{2, 12, false, false},
        std::tuple{2, 12, true, true}, std::tuple{2, 32, true, false}}) {
    torch::nn::Conv2d conv(torch::nn::Conv2dOptions(8, 8, 3).padding(rate).dilation(rate).bias(false));
    auto xr = torch::randn({2, 8, side, side});
    if (cl) xr = xr.contiguous(at::MemoryFormat::ChannelsLast);
    compute::WinogradScope on(true);
    EXPECT_EQ(compute::conv_path(*conv, xr) == compute::ConvPath::taps, taps)
        << "rate " << rate << ", " << side << (cl ? " channels-last" : " NCHW");
  }
}

// `cp2 bench conv` runs both algorithms on the shape and names the one compute::conv2d picks.
// compute::conv2d's first path, on every algorithm, dtype and device: a dilated 3×3 on a map
// no larger than its rate in a dimension runs without the outer taps there (they read only
// zero padding). Both dimensions (rate 12 on 4x4, 18 on 14²: the centre tap), rows only (5x11
// at 5, 10x23 at 12); with and without bias, fp32 and fp64, fast algorithms off: outputs and
// all gradients equal the plain convolution, the dropped taps' weight gradient is exactly zero,
// and the FLOP counter sees the smaller kernel. Rates that read the image are not taken.
TEST(DilatedTaps, CentreTapsWhereOuterTapsReadOnlyPadding) {
  compute::WinogradScope off(false);
  struct Case {
    int64_t h, w, d;
  };
  for (const Case k : {Case{4, 4, 12}, Case{14, 14, 18}, Case{5, 11, 5}, Case{10, 23, 12}})
    for (bool bias : {false, true})
      for (auto dtype : {at::kFloat, at::kDouble}) {
        SCOPED_TRACE(std::to_string(k.h) + "x" + std::to_string(k.w) + " rate " + std::to_string(k.d) +
                     (bias ? " bias " : " ") + c10::toString(dtype));
        torch::manual_seed(5);
        // 16 output channels: the reference's fp32 input gradient is wrong in Debian 13's
        // LibTorch 2.6 (oneDNN 3.7.2, AVX-512, NCHW) for 3x3s whose output channels are not a
        // multiple of 16 (docs/benchmarks.md, "Debian 13's LibTorch 2.6").
        torch::nn::Conv2d conv(torch::nn::Conv2dOptions(6, 16, 3).padding(k.d).dilation(k.d).bias(bias));
        conv->to(dtype);
        const auto x0 = torch::randn({2, 6, k.h, k.w}, dtype);
        ASSERT_EQ(compute::conv_path(*conv, x0), compute::ConvPath::centre_taps);
        const auto g = torch::randn({2, 16, k.h, k.w}, dtype);
        auto run = [&](bool centre) {
          conv->zero_grad();
          auto x = x0.clone().requires_grad_(true);
          compute::FlopCounter counter;
          auto y = centre ? compute::conv2d(*conv, x) : conv->forward(x);
          (y * g).sum().backward();
          std::vector<at::Tensor> out{y.detach(), x.grad(), conv->weight.grad().clone()};
          if (bias) out.push_back(conv->bias.grad().clone());
          return std::pair{out, counter.result()};
        };
        const auto [ref, ref_count] = run(false);
        const auto [got, got_count] = run(true);
        const double tol = dtype == at::kDouble ? 1e-12 : 1e-5;
        for (size_t i = 0; i < ref.size(); ++i) {
          EXPECT_EQ(got[i].sizes(), ref[i].sizes()) << i;
          EXPECT_LT(rel(got[i], ref[i]), tol) << i;
        }
        const bool rows = k.d >= k.h, cols = k.d >= k.w;
        auto outer = got[2].clone();
        outer.slice(2, rows ? 1 : 0, rows ? 2 : 3).slice(3, cols ? 1 : 0, cols ? 2 : 3).zero_();
        EXPECT_EQ(outer.abs().max().item<double>(), 0.0);
        ASSERT_FALSE(got_count.by_shape.empty());
        for (const auto& [shape, flops] : got_count.by_shape) {
          EXPECT_EQ(shape.weight[2], rows ? 1 : 3) << shape.str();
          EXPECT_EQ(shape.weight[3], cols ? 1 : 3) << shape.str();
        }
        // The same count as the full convolution's (the dropped taps read nothing).
        EXPECT_DOUBLE_EQ(got_count.conv, ref_count.conv);
        EXPECT_DOUBLE_EQ(ref_count.conv, 3 * dilated_flops(2, 6, 16, k.h, k.w, k.d));
      }
  // Rates that read the image (12 on 14², 2 on 4x4), other kernels and strides: the module.
  torch::nn::Conv2d reads(torch::nn::Conv2dOptions(6, 4, 3).padding(12).dilation(12).bias(false));
  EXPECT_EQ(compute::conv_path(*reads, torch::randn({1, 6, 14, 14})), compute::ConvPath::module);
  torch::nn::Conv2d rate2(torch::nn::Conv2dOptions(6, 4, 3).padding(2).dilation(2).bias(false));
  EXPECT_EQ(compute::conv_path(*rate2, torch::randn({1, 6, 4, 4})), compute::ConvPath::module);
  torch::nn::Conv2d strided(torch::nn::Conv2dOptions(6, 4, 3).padding(12).dilation(12).stride(2).bias(false));
  EXPECT_EQ(compute::conv_path(*strided, torch::randn({1, 6, 4, 4})), compute::ConvPath::module);
  torch::nn::Conv2d one(torch::nn::Conv2dOptions(6, 4, 1).bias(false));
  EXPECT_EQ(compute::conv_path(*one, torch::randn({1, 6, 4, 4})), compute::ConvPath::module);
  EXPECT_STREQ(compute::conv_path_name(compute::ConvPath::centre_taps), "centre taps");
}

// compute/pointwise.h: 1×1 convolutions on channels-last maps as GEMMs, against PyTorch's
// convolution, through both of compute/gemm.h's backends, every gradient combination, weights
// in either layout (a 1×1 weight's memory is the same in both; its gradient keeps the
// weight's strides).
TEST(Pointwise, MatchesDirectConvolutionForwardAndGradients) {
  struct Case {
    int64_t n, c, o, h, w;
  };
  const auto cl = at::MemoryFormat::ChannelsLast;
  for (const auto backend : {compute::GemmBackend::best, compute::GemmBackend::torch}) {
    GemmBackendScope scope(backend);
    for (const Case k : {Case{2, 16, 24, 7, 9}, Case{1, 64, 32, 5, 5}, Case{3, 5, 7, 2, 3}})
      for (bool weight_cl : {false, true}) {
        SCOPED_TRACE("n" + std::to_string(k.n) + " c" + std::to_string(k.c) + " o" + std::to_string(k.o) + " " +
                     std::to_string(k.h) + "x" + std::to_string(k.w) + (weight_cl ? ", weight channels-last" : "") +
                     (compute::sgemm_is_onednn() ? ", oneDNN" : ", LibTorch"));
        torch::manual_seed(13);
        const auto x0 = torch::randn({k.n, k.c, k.h, k.w}).contiguous(cl);
        auto w0 = torch::randn({k.o, k.c, 1, 1});
        if (weight_cl) w0 = w0.contiguous(cl);
        const auto g = torch::randn({k.n, k.o, k.h, k.w});
        for (int grads : {3, 1, 2}) {  // both, input only, weight only
          const auto ref = conv_and_grads(x0, w0, g, grads, [](const at::Tensor& x, const at::Tensor& w) {
            return at::conv2d(x, w);
          });
          const auto got = conv_and_grads(x0, w0, g, grads, compute::conv1x1_gemm);
          expect_conv_close(got, ref, 1e-5);
          EXPECT_TRUE(got[0].is_contiguous(cl));
          if (grads & 1) EXPECT_TRUE(got[1].is_contiguous(cl));
          if (grads & 2) EXPECT_EQ(got[2].strides(), w0.strides());
        }
      }
  }
  expect_error([] { compute::conv1x1_gemm(torch::randn({1, 4, 3, 3}), torch::randn({2, 4, 1, 1})); },
               {"conv1x1_gemm", "expected channels-last input"});
  expect_error([] { compute::conv1x1_gemm(torch::randn({1, 4, 3, 3}).contiguous(at::MemoryFormat::ChannelsLast),
                                          torch::randn({2, 5, 1, 1})); },
               {"conv1x1_gemm", "(O,C,1,1)", "[1, 4, 3, 3]", "[2, 5, 1, 1]"});
}

// Which 1×1s compute::conv2d runs as GEMMs: stride 1, unpadded, no bias, channels-last input,
// under the fast algorithms, through oneDNN's sgemm; counted as the convolutions they are;
// inside ResNet-50's blocks (conv1, conv3, a stride-1 shortcut), which then track their direct
// run.
TEST(Pointwise, ConvPathTakesThe1x1sOnlyWhereTheyQualify) {
  namespace nn = torch::nn;
  const auto cl = at::MemoryFormat::ChannelsLast;
  nn::Conv2d pw(nn::Conv2dOptions(8, 16, 1).bias(false));
  nn::Conv2d strided(nn::Conv2dOptions(8, 16, 1).stride(2).bias(false));
  nn::Conv2d biased(nn::Conv2dOptions(8, 16, 1));
  nn::Conv2d padded(nn::Conv2dOptions(8, 16, 1).padding(1).bias(false));
  const auto x = torch::randn({2, 8, 6, 6}).contiguous(cl);
  EXPECT_STREQ(compute::conv_path_name(compute::ConvPath::gemm_1x1), "1x1 GEMMs");
  {
    compute::WinogradScope off(false);  // train.conv_algorithm: direct
    EXPECT_EQ(compute::conv_path(*pw, x), compute::ConvPath::module);
  }
  compute::WinogradScope on(true);
  // Where oneDNN's sgemm runs AVX-512 kernels (else the module's forward: compute/conv.cpp).
  const bool here = compute::sgemm_is_onednn() && compute::onednn_avx512();
  const auto gemm = here ? compute::ConvPath::gemm_1x1 : compute::ConvPath::module;
  EXPECT_EQ(compute::conv_path(*pw, x), gemm);
  EXPECT_EQ(compute::conv_path(*pw, torch::randn({2, 8, 6, 6})), compute::ConvPath::module);  // NCHW
  EXPECT_EQ(compute::conv_path(*strided, x), compute::ConvPath::module);
  EXPECT_EQ(compute::conv_path(*biased, x), compute::ConvPath::module);
  EXPECT_EQ(compute::conv_path(*padded, x), compute::ConvPath::module);
  {
    GemmBackendScope torch_matmul(compute::GemmBackend::torch);  // through OpenBLAS: not taken
    EXPECT_EQ(compute::conv_path(*pw, x), compute::ConvPath::module);
  }
  {
    compute::FlopCount c;
    {
      compute::FlopCounter counter;
      compute::conv2d(*pw, x.clone().requires_grad_(true)).sum().backward();
      c = counter.result();
    }
    EXPECT_DOUBLE_EQ(c.conv, 3 * conv_flops(2, 8, 16, 1, 6, 6));
  }
  for (int64_t stride : {1, 2}) {
    SCOPED_TRACE("stride " + std::to_string(stride));
    torch::manual_seed(17);
    models::Bottleneck block(16, 8, stride, 1, true);
    compute::to_channels_last(*block);
    const auto x0 = torch::randn({2, 16, 8, 8}).contiguous(cl);
    auto run = [&](bool fast, int64_t* gemms) {
      block->zero_grad();
      compute::WinogradScope scope(fast);
      auto xi = x0.clone().requires_grad_(true);
      std::vector<at::Tensor> out;
      {
        compute::OpProfiler profiler;
        auto y = block->forward(xi);
        y.pow(2).sum().backward();
        for (const auto& op : profiler.result())
          if (op.name == "cp2::conv1x1_gemm") *gemms = op.calls;
        out = {y.detach(), xi.grad()};
      }
      for (const auto& p : block->parameters()) out.push_back(p.grad().clone());
      return out;
    };
    int64_t direct_gemms = 0, fast_gemms = 0;
    const auto ref = run(false, &direct_gemms), got = run(true, &fast_gemms);
    EXPECT_EQ(direct_gemms, 0);
    // conv1 and conv3, and the shortcut where it has stride 1.
    EXPECT_EQ(fast_gemms, here ? (stride == 1 ? 3 : 2) : 0);
    ASSERT_EQ(got.size(), ref.size());
    for (size_t i = 0; i < ref.size(); ++i) EXPECT_LT(rel(got[i], ref[i]), 1e-4) << "tensor " << i;
  }
}

// compute::mm (the loss's logits against the queue): oneDNN's sgemm under the fast algorithms,
// forward and both gradients within fp32 round-off of torch::mm, counted as aten::mm is, any
// strides; torch::mm itself (the same bits) otherwise.
TEST(Matmul, OnednnSgemmUnderTheFastAlgorithmsElseTorchMm) {
  torch::manual_seed(21);
  const auto a0 = torch::randn({5, 7}), b0 = torch::randn({9, 7}).t();  // b: a transposed view
  const auto g = torch::randn({5, 9});
  auto run = [&](bool fast, bool torch_mm, int64_t* taken) {
    compute::WinogradScope scope(fast);
    auto a = a0.clone().requires_grad_(true), b = b0.clone().requires_grad_(true);
    compute::FlopCount c;
    std::vector<at::Tensor> out;
    {
      compute::FlopCounter counter;
      compute::OpProfiler profiler;
      auto y = torch_mm ? torch::mm(a, b) : compute::mm(a, b);
      (y * g).sum().backward();
      c = counter.result();
      for (const auto& op : profiler.result())
        if (op.name == "cp2::mm") *taken = op.calls;
      out = {y.detach(), a.grad(), b.grad()};
    }
    EXPECT_DOUBLE_EQ(c.matmul, 3 * 2.0 * 5 * 7 * 9);
    return out;
  };
  int64_t none = 0, off = 0, on = 0;
  const auto ref = run(false, true, &none), direct = run(false, false, &off), fast = run(true, false, &on);
  const bool here = compute::sgemm_is_onednn();
  EXPECT_EQ(off, 0);
  EXPECT_EQ(on, here ? 1 : 0);
  for (size_t i = 0; i < ref.size(); ++i) {
    EXPECT_TRUE(torch::equal(direct[i], ref[i])) << "tensor " << i;
    EXPECT_LT(rel(fast[i], ref[i]), 1e-6) << "tensor " << i;
  }
  // Only the queue's gradient-free operand, as in the loss: no gradient for it.
  {
    compute::WinogradScope fast_on(true);
    auto a = a0.clone().requires_grad_(true);
    compute::mm(a, b0).sum().backward();
    EXPECT_LT(rel(a.grad(), torch::ones({5, 9}).mm(b0.t())), 1e-6);
  }
  compute::WinogradScope scope(true);
  EXPECT_EQ(compute::mm_applies(a0, b0), here);
  {
    compute::FastPathsOff no({compute::FastPath::onednn_mm});
    EXPECT_FALSE(compute::mm_applies(a0, b0));
  }
  EXPECT_FALSE(compute::mm_applies(a0.to(at::kDouble), b0.to(at::kDouble)));
  EXPECT_FALSE(compute::mm_applies(a0, torch::randn({6, 9})));  // inner sizes differ: torch::mm's error
  EXPECT_FALSE(compute::mm_applies(a0.unsqueeze(0), b0));
  {
    compute::AutocastScope bf16(true, false);
    EXPECT_FALSE(compute::mm_applies(a0, b0));
  }
}

TEST(FastPaths, NamesRefusalsAndScopes) {
  using compute::FastPath;
  EXPECT_EQ(compute::fast_path_names(),
            "winograd, tap-gemms, 1x1-gemms, bn-act, cp2-tiles, subgrids, onednn-mm, max-pool, aspp-pool");
  EXPECT_EQ(compute::parse_fast_paths("bn-act,1x1-gemms", "--alternate"),
            (std::vector<FastPath>{FastPath::bn_act, FastPath::gemm_1x1}));
  cp2::test::expect_error([] { compute::parse_fast_paths("", "--alternate"); },
                          {"--alternate: expected one or more of winograd, tap-gemms, 1x1-gemms, bn-act, cp2-tiles, "
                           "subgrids, onednn-mm, max-pool, aspp-pool, found ''"});
  cp2::test::expect_error([] { compute::parse_fast_paths("winograd,Winograd", "--alternate"); },
                          {"--alternate: expected a comma-separated list of", "found 'Winograd' in 'winograd,Winograd'"});
  compute::Numerics direct, fast;
  fast.winograd = true;
  EXPECT_TRUE(compute::alternate_paths("", 1, "cuda", direct).empty());
  EXPECT_EQ(compute::alternate_paths("subgrids", 2, "cpu", fast).size(), 1u);
  cp2::test::expect_error([&] { compute::alternate_paths("bn-act", 2, "cpu", direct); },
                          {"--alternate: the fast paths run only under --conv-algorithm winograd or auto",
                           "numerics are \"fp32, NCHW\""});
  cp2::test::expect_error([&] { compute::alternate_paths("bn-act", 4, "cuda:0", fast); },
                          {"--alternate: the fast paths are the CPU's (fp32); found --device cuda:0"});
  cp2::test::expect_error([&] { compute::alternate_paths("bn-act", 1, "cpu", fast); }, {"--rounds >= 2", "found 1"});
  // Each path off leaves its work to PyTorch's ops; scopes nest and restore.
  const auto cl = at::MemoryFormat::ChannelsLast;
  torch::nn::Conv2d pw(torch::nn::Conv2dOptions(8, 16, 1).bias(false));
  torch::nn::Conv2d c3(torch::nn::Conv2dOptions(512, 512, 3).padding(1).bias(false));
  const auto x8 = torch::randn({2, 8, 6, 6}).contiguous(cl), x512 = torch::randn({8, 512, 8, 8});
  compute::WinogradScope on(true, compute::WinogradKernels::tiles);
  const bool gemms = compute::sgemm_is_onednn() && compute::onednn_avx512();
  const auto pw_path = compute::conv_path(*pw, x8), c3_path = compute::conv_path(*c3, x512);
  EXPECT_EQ(pw_path, gemms ? compute::ConvPath::gemm_1x1 : compute::ConvPath::module);
  EXPECT_EQ(c3_path, compute::ConvPath::winograd);
  const bool bn = compute::bn_act_applies(x8, at::Tensor(), true);
  {
    compute::FastPathsOff off({FastPath::winograd});
    EXPECT_FALSE(compute::fast_path_on(FastPath::winograd));
    EXPECT_TRUE(compute::fast_path_on(FastPath::bn_act));
    EXPECT_EQ(compute::conv_path(*c3, x512), compute::ConvPath::module);
    EXPECT_EQ(compute::conv_path(*pw, x8), pw_path);
    {
      compute::FastPathsOff more({FastPath::gemm_1x1, FastPath::bn_act});
      EXPECT_EQ(compute::conv_path(*pw, x8), compute::ConvPath::module);
      EXPECT_FALSE(compute::bn_act_applies(x8, at::Tensor(), true));
      EXPECT_EQ(compute::conv_path(*c3, x512), compute::ConvPath::module);
    }
    EXPECT_EQ(compute::conv_path(*pw, x8), pw_path);
    EXPECT_EQ(compute::bn_act_applies(x8, at::Tensor(), true), bn);
  }
  EXPECT_EQ(compute::conv_path(*c3, x512), c3_path);
  // The pairs' ratios: rounds 0/1, 2/3 (a fifth, unpaired, is left out).
  const auto a = compute::alternation({4, 2, 3, 3, 9});
  EXPECT_EQ(a.pairs, 2u);
  EXPECT_DOUBLE_EQ(a.median, 1.5);
  EXPECT_DOUBLE_EQ(a.lo, 1.0);
  EXPECT_DOUBLE_EQ(a.hi, 2.0);
  EXPECT_EQ(a.line(), "on / off 1.500x (median of 2 pairs, 1.000-2.000x)");
  EXPECT_EQ(compute::alternation({4}).pairs, 0u);
  // A bench's figures: the on rounds' median where alternated (4, 3, 9), every round's otherwise.
  const auto alt = compute::round_rates({4, 2, 3, 3, 9}, true), all = compute::round_rates({4, 2, 3, 3, 9}, false);
  EXPECT_DOUBLE_EQ(alt.median, 4);
  EXPECT_EQ(alt.rounds, 3);
  EXPECT_EQ(alt.on_off.pairs, 2u);
  EXPECT_DOUBLE_EQ(all.median, 3);
  EXPECT_EQ(all.rounds, 5);
  EXPECT_EQ(all.on_off.pairs, 0u);
}

TEST(DilatedTaps, ConvBenchNamesThePathAndTimesBoth) {
  compute::ConvBenchOptions o;
  o.batch = 2, o.in = 16, o.out = 8, o.size = 14, o.dilation = 12, o.rounds = 1;
  const auto r = compute::bench_conv(o, false);
  EXPECT_EQ(r.fast, compute::sgemm_is_onednn() ? "tap GEMMs" : "direct");
  for (double t : {r.direct_fwd_s, r.direct_step_s, r.fast_fwd_s, r.fast_step_s}) EXPECT_GT(t, 0);
  // --kernels tiles: cp2's kernels wherever they fit, named as such (below their pay-off rule
  // too: 2 tiles here).
  o.dilation = 1, o.size = 8, o.kernels = "tiles";
  if (std::string why; compute::tiles_available(&why))
    EXPECT_EQ(compute::bench_conv(o, false).fast, "Winograd (cp2 AVX2, F(4x4))");
  else
    expect_error([&] { compute::bench_conv(o, false); }, {"--kernels tiles", "not available here", why});
  // --kernels onednn: oneDNN's kernels, or an error naming what is missing (AVX-512, or the
  // build's oneDNN); never a silent "direct".
  o.kernels = "onednn";
  if (std::string why; compute::winograd_kernels_available(compute::WinogradKernels::onednn, &why))
    EXPECT_EQ(compute::bench_conv(o, false).fast, "Winograd (oneDNN)");
  else
    expect_error([&] { compute::bench_conv(o, false); }, {"--kernels onednn", "not available here", why});
  o.kernels = "fastest";
  expect_error([&] { compute::bench_conv(o, false); },
               {"--kernels", "best, onednn, tiles, tiles-f4 or tiles-f3", "fastest"});
  // Named sizes: 3×3 tiles on the same map, and where 3×3 fits better (6×6).
  if (compute::tiles_available()) {
    o.kernels = "tiles-f3";
    EXPECT_EQ(compute::bench_conv(o, false).fast, "Winograd (cp2 AVX2, F(3x3))");
    o.kernels = "tiles", o.size = 12, o.dilation = 2;
    EXPECT_EQ(compute::bench_conv(o, false).fast, "Winograd sub-grids (cp2 AVX2, F(3x3))");
  }
  o.kernels = "best", o.dilation = 0;
  expect_error([&] { compute::bench_conv(o, false); }, {"--dilation", "positive", "0"});
  // --kernel 1: a 1×1 (its dilation unused), GEMMs on channels-last input, direct in NCHW.
  o.dilation = 1, o.kernel = 1, o.channels_last = true;
  EXPECT_EQ(compute::bench_conv(o, false).fast,
            compute::sgemm_is_onednn() && compute::onednn_avx512() ? "1x1 GEMMs" : "direct");
  o.channels_last = false;
  EXPECT_EQ(compute::bench_conv(o, false).fast, "direct");
  o.kernel = 5;
  expect_error([&] { compute::bench_conv(o, false); }, {"--kernel", "expected 1 or 3", "5"});
}

TEST(Winograd, KeyIsValidatedAndBoundInBothConfigs) {
  compute::NumericsOptions o;
  o.conv_algorithm = "fft";
  expect_error([&] { o.validate(); }, {"train.conv_algorithm", "fft", "expected one of direct, winograd, auto"});
  o.conv_algorithm = "winograd";
  o.precision = "bf16";
  expect_error([&] { compute::resolve_numerics(o, "cpu", 50); }, {"train.conv_algorithm", "fp32 only"});
  o.precision = "fp32";
  expect_error([&] { compute::resolve_numerics(o, "cuda", 50); }, {"train.conv_algorithm", "cuDNN"});
  // Inference of a CPU-trained winograd config on CUDA runs direct, and says why.
  std::string said;
  EXPECT_FALSE(compute::resolve_inference_numerics(o, "cuda", 50, &said).winograd);
  EXPECT_EQ(said, "train.conv_algorithm: winograd cannot apply here (on CUDA, cuDNN chooses the algorithm): 3x3 "
                  "convolutions run direct");
  if (compute::winograd_available(nullptr)) {
    EXPECT_TRUE(compute::resolve_inference_numerics(o, "cpu", 50, &said).winograd);
    EXPECT_EQ(said, "");
  }
  o.conv_algorithm = "auto";
  EXPECT_FALSE(compute::resolve_numerics(o, "cuda", 50).winograd);
  o.precision = "bf16";
  EXPECT_FALSE(compute::resolve_numerics(o, "cpu", 50).winograd);  // auto: bf16 runs direct
  // The default is auto: the fast algorithms wherever this CPU has their kernels.
  EXPECT_EQ(compute::resolve_numerics({}, "cpu", 50).winograd, compute::winograd_available(nullptr));
  EXPECT_FALSE(compute::resolve_numerics({}, "cuda", 50).winograd);
  // fp16: CUDA's AMP, with dynamic loss scaling unless train.loss_scale says off.
  o = {};
  o.precision = "fp16";
  expect_error([&] { compute::resolve_numerics(o, "cpu", 50); }, {"train.precision", "fp16", "CUDA only", "'cpu'"});
  auto n = compute::resolve_numerics(o, "cuda", 50);
  EXPECT_TRUE(n.fp16 && n.amp() && n.loss_scaling && !n.bf16);
  EXPECT_NE(n.describe().find("fp16 autocast"), std::string::npos) << n.describe();
  EXPECT_NE(n.describe().find("dynamic loss scaling"), std::string::npos) << n.describe();
  // Inference of a config trained on a GPU: fp16 falls back to fp32 off CUDA, and says so.
  std::string note;
  n = compute::resolve_inference_numerics(o, "cpu", 50, &note);
  EXPECT_TRUE(!n.amp() && !n.loss_scaling);
  EXPECT_EQ(n.winograd, compute::winograd_available(nullptr)) << "fp32 here, so the default auto applies";
  EXPECT_EQ(note, "train.precision: fp16 runs on CUDA only: running in fp32 on 'cpu'");
  n = compute::resolve_inference_numerics(o, "cuda", 50, &note);
  EXPECT_TRUE(n.fp16 && !n.loss_scaling) << "no backward pass, no scaling";
  EXPECT_EQ(note, "");
  o.loss_scale = "off";
  EXPECT_FALSE(compute::resolve_numerics(o, "cuda", 50).loss_scaling);
  o.precision = "fp32", o.loss_scale = "auto";
  EXPECT_FALSE(compute::resolve_numerics(o, "cpu", 50).loss_scaling);
  o.loss_scale = "dynamic", o.loss_scale_init = 1024;
  n = compute::resolve_numerics(o, "cpu", 50);
  EXPECT_TRUE(n.loss_scaling && !n.amp());
  EXPECT_EQ(n.loss_scale_init, 1024);
  o.loss_scale = "static";
  expect_error([&] { o.validate(); }, {"train.loss_scale", "auto, dynamic, off", "static"});
  o.loss_scale = "auto", o.loss_scale_init = 0;
  expect_error([&] { o.validate(); }, {"train.loss_scale_init", "positive"});
  pretrain::PretrainConfig pc;
  auto pf = pc.fields();
  pf.set("train.conv_algorithm", "auto", "test");
  EXPECT_EQ(pc.train.numerics.conv_algorithm, "auto");
  seg::FinetuneConfig fc;
  auto ff = fc.fields();
  expect_error([&] { ff.set("train.conv_algorithm", "fast", "test"); }, {"train.conv_algorithm", "fast"});
}

}  // namespace cp2::test
