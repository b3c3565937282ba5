// CP² loss parity against tools/cp2_reference.py (an independent PyTorch computation of
// the authors' formulas). Tolerances: losses and queue 1e-5 relative, query-encoder
// gradients 1e-4 relative to each tensor's largest gradient (R18@96 only: at R50@224
// float32 gradients move by ~1 % between runs through ReLUs near zero).
#include <torch/torch.h>

#include <cstdio>
#include <functional>
#include <utility>
#include <vector>

#include "../helpers.h"
#include "cp2/pretrain/config.h"
#include "cp2/pretrain/graph_step.h"
#include "cp2/pretrain/loss.h"
#include "cp2/pretrain/state_io.h"

using namespace cp2;
using cp2::test::fixture;
using cp2::test::load_tensors;
using cp2::test::max_rel;

namespace {

pretrain::CP2Model load_model(int depth, pretrain::Mode mode = pretrain::Mode::Cp2) {
  pretrain::CP2Options o;
  o.encoder.backbone.depth = depth;
  o.queue_size = 256;
  o.mode = mode;
  pretrain::CP2Model m(o);
  std::string tag = "cp2_step_r" + std::to_string(depth) + (depth == 18 ? "_96" : "_224");
  auto rep = pretrain::load_pretrain_state(*m, fixture(tag + ".pt"), /*strict=*/true);
  EXPECT_TRUE(rep.clean());
  m->train();
  return m;
}

double rel1(const torch::Tensor& a, const torch::Tensor& b) {
  return std::abs(a.item<double>() - b.item<double>()) / std::abs(b.item<double>());
}

struct Case {
  int depth;
  bool grads;
};
class LossParity : public ::testing::TestWithParam<Case> {};

TEST_P(LossParity, LossesAccuraciesQueueAndGradientsMatchReference) {
  auto c = GetParam();
  std::string tag = "cp2_step_r" + std::to_string(c.depth) + (c.depth == 18 ? "_96" : "_224");
  auto m = load_model(c.depth);
  auto b = pretrain::load_batch(fixture(tag + "_batch.pt"));
  auto ref = load_tensors(fixture(tag + "_ref.pt"));
  auto r = m->forward_step(b.im_q, b.im_k, b.mask_q, b.mask_k);
  double e_ins = rel1(r.loss_ins, ref["loss_ins"]), e_dense = rel1(r.loss_dense, ref["loss_dense"]),
         e_tot = rel1(r.total, ref["total"]);
  std::printf("[parity] %s loss_ins %.8f (rel %.2e) loss_dense %.8f (rel %.2e) total rel %.2e\n", tag.c_str(),
              r.loss_ins.item<double>(), e_ins, r.loss_dense.item<double>(), e_dense, e_tot);
  EXPECT_LE(e_ins, 1e-5);
  EXPECT_LE(e_dense, 1e-5);
  EXPECT_LE(e_tot, 1e-5);
  EXPECT_EQ(r.total_value, r.total.item<double>());  // the number read back with the accuracies
  EXPECT_DOUBLE_EQ(r.acc1, ref["acc1"].item<double>());
  EXPECT_DOUBLE_EQ(r.acc5, ref["acc5"].item<double>());
  EXPECT_DOUBLE_EQ(r.acc_dense, ref["acc_dense"].item<double>());
  if (c.grads) {
    r.total.backward();
    double worst = 0;
    int n = 0;
    for (const auto& p : m->q_module().named_parameters()) {
      ASSERT_TRUE(ref.count("grad." + p.key())) << p.key();
      ASSERT_TRUE(p.value().grad().defined()) << p.key();
      worst = std::max(worst, max_rel(p.value().grad(), ref["grad." + p.key()]));
      ++n;
    }
    std::printf("[parity] %s %d query-encoder gradients, worst rel %.2e\n", tag.c_str(), n, worst);
    EXPECT_LE(worst, 1e-4);
    for (const auto& p : m->k_module().parameters()) EXPECT_FALSE(p.grad().defined());
  }
  m->enqueue(r.k_ins);  // ptr starts at K - 1: the write wraps around
  EXPECT_LE(max_rel(m->queue, ref["queue_after"]), 1e-5);
  EXPECT_EQ(m->queue_ptr.item<int64_t>(), ref["queue_ptr_after"].item<int64_t>());
}

INSTANTIATE_TEST_SUITE_P(All, LossParity, ::testing::Values(Case{18, true}, Case{50, false}),
                         [](const auto& i) { return i.param.depth == 18 ? std::string("R18_96") : std::string("R50_224"); });

TEST(FeatureMask, CellCentresForAnySize) {
  auto mask = torch::rand({2, 96, 96}).gt(0.5).to(torch::kFloat);
  auto f = pretrain::feature_mask(mask, 16, 6, 6);
  auto want = mask.slice(1, 8, 96, 16).slice(2, 8, 96, 16);  // the authors' mask[:, 8::16, 8::16]
  EXPECT_TRUE(torch::equal(f, want));
  auto odd = torch::rand({1, 100, 70});
  auto g = pretrain::feature_mask(odd, 16, 7, 5);  // 7 cells: the last centre (104) clamps to row 99
  EXPECT_EQ(g.sizes(), (std::vector<int64_t>{1, 7, 5}));
  EXPECT_EQ(g[0][6][4].item<float>(), odd[0][99][69].item<float>());
}

TEST(Modes, LossPartsFollowTable6) {
  auto b = pretrain::load_batch(fixture("cp2_step_r18_96_batch.pt"));
  auto ref = load_tensors(fixture("cp2_step_r18_96_ref.pt"));
  {
    auto m = load_model(18, pretrain::Mode::InstanceOnly);
    auto r = m->forward_step(b.im_q, b.im_k, b.mask_q, b.mask_k);
    EXPECT_FALSE(r.loss_dense.defined());
    EXPECT_LE(rel1(r.total, ref["loss_ins"]), 1e-5);  // same masked pooling, no dense term
  }
  {
    auto m = load_model(18, pretrain::Mode::DenseOnly);
    auto r = m->forward_step(b.im_q, b.im_k, b.mask_q, b.mask_k);
    EXPECT_FALSE(r.loss_ins.defined());
    EXPECT_LE(std::abs(r.total.item<double>() - 0.2 * ref["loss_dense"].item<double>()), 1e-5);
  }
  {
    auto m = load_model(18, pretrain::Mode::NoCopyPaste);
    auto r = m->forward_step(b.im_q, b.im_k, b.mask_q, b.mask_k);
    auto m2 = load_model(18, pretrain::Mode::InstanceOnly);
    auto ones = torch::ones_like(b.mask_q);
    auto r2 = m2->forward_step(b.im_q, b.im_k, ones, ones);  // global average pooling = all-ones masks
    EXPECT_DOUBLE_EQ(r.total.item<double>(), r2.total.item<double>());
    EXPECT_GT(std::abs(r.total.item<double>() - ref["loss_ins"].item<double>()), 1e-4);
  }
  cp2::test::expect_error([] { pretrain::parse_mode("dense"); }, {"'dense'", "instance-only"});
}

// The mode table is SPEC §4's (copy-paste, dense, instance per Table 6 row) plus MoCo v2;
// names round-trip, and the model built in each mode switches exactly those parts.
TEST(Modes, TableIsSpecSection4AndDrivesTheModel) {
  struct Want { const char* name; bool cp, dense, ins, moco; };
  const std::vector<Want> want{{"cp2", true, true, true, false},           {"instance-only", true, false, true, false},
                               {"dense-only", true, true, false, false},   {"no-copy-paste", false, false, true, false},
                               {"moco", false, false, true, true}};
  ASSERT_EQ(pretrain::modes().size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    const auto& m = pretrain::modes()[i];
    EXPECT_EQ(std::string(m.name), want[i].name);
    EXPECT_EQ(m.copy_paste, want[i].cp) << m.name;
    EXPECT_EQ(m.dense, want[i].dense) << m.name;
    EXPECT_EQ(m.instance, want[i].ins) << m.name;
    EXPECT_EQ(m.moco_encoder, want[i].moco) << m.name;
    EXPECT_EQ(&pretrain::mode_spec(m.name), &m);
    EXPECT_EQ(&pretrain::mode_spec(m.mode), &m);
    pretrain::CP2Options o;
    o.encoder.backbone.depth = 18;
    o.encoder.head.channels = 8;
    o.encoder.head.proj_channels = 16;
    o.queue_size = 8;
    o.mode = m.mode;
    pretrain::CP2Model model(o);
    EXPECT_EQ(model->options().loss.use_dense, m.dense) << m.name;
    EXPECT_EQ(model->options().loss.use_instance, m.instance) << m.name;
    bool has_mlp = false;  // MoCo v2's fc.0 / fc.2 head
    for (const auto& p : model->q_module().named_parameters()) has_mlp |= p.key() == "fc.0.weight";
    EXPECT_EQ(has_mlp, m.moco_encoder) << m.name;
  }
  cp2::test::expect_error([] { pretrain::mode_spec("cp"); },
                          {"mode", "expected one of cp2, instance-only, dense-only, no-copy-paste, moco", "'cp'"});
}

// loss.dense_temperature (an opt-in deviation; 0 = the authors' dense logits) divides the
// dense logits only: the same as feeding q / T to the untempered loss, instance part unchanged.
TEST(DenseTemperature, DividesTheDenseLogitsOnly) {
  torch::manual_seed(3);
  auto norm = [](at::Tensor t) { return t / t.norm(2, 1, true); };
  auto q = norm(torch::randn({4, 16, 36})), k = norm(torch::randn({4, 16, 36}));
  auto mq = (torch::rand({4, 36}) > 0.4).to(torch::kFloat), mk = (torch::rand({4, 36}) > 0.4).to(torch::kFloat);
  auto queue = norm(torch::randn({16, 32}).t()).t().contiguous();
  pretrain::LossOptions none, t;
  t.dense_temperature = 0.25;
  auto a = pretrain::cp2_loss(q, k, mq, mk, queue, none);
  auto b = pretrain::cp2_loss(q, k, mq, mk, queue, t);
  auto c = pretrain::cp2_loss(q * 4.0, k, mq, mk, queue, none);
  EXPECT_NEAR(b.dense_value, c.dense_value, 1e-5);
  EXPECT_GT(std::abs(a.dense_value - b.dense_value), 1e-2);
  EXPECT_DOUBLE_EQ(a.ins_value, b.ins_value);
  pretrain::PretrainConfig cfg;
  cfg.data.root = "x";
  cfg.model.dense_temperature = -1;
  cp2::test::expect_error([&] { cfg.validate(); }, {"loss.dense_temperature", ">= 0", "-1"});
}

// The dense-match accuracy on features built by hand: image 0's foreground key pixel y0
// is nearest to the foreground query pixel x0 (hit), its foreground y2 to background
// pixels (miss); image 1's one foreground key pixel is nearest to foreground (hit).
TEST(DenseMatch, CountsForegroundKeyPixelsWhoseNearestQueryPixelIsForeground) {
  const auto a = std::vector<float>{1, 0}, b = std::vector<float>{0, 1};
  auto pixels = [](std::vector<std::vector<float>> cols) {  // D x P from P columns
    auto t = torch::zeros({2, static_cast<int64_t>(cols.size())});
    for (size_t i = 0; i < cols.size(); ++i) t.select(1, i).copy_(torch::tensor(cols[i]));
    return t;
  };
  auto q = torch::stack({pixels({a, b, b, b}), pixels({b, b, b, a})});
  auto k = torch::stack({pixels({a, b, b, b}), pixels({a, a, a, b})});
  auto mq = torch::tensor({1.f, 0.f, 0.f, 0.f, 1.f, 1.f, 1.f, 0.f}).view({2, 4});
  auto mk = torch::tensor({1.f, 0.f, 1.f, 0.f, 0.f, 0.f, 0.f, 1.f}).view({2, 4});
  auto queue = torch::eye(2);
  auto r = pretrain::cp2_loss(q, k, mq, mk, queue, pretrain::LossOptions{});
  EXPECT_NEAR(r.acc_dense_match, 200.0 / 3, 1e-4);
  EXPECT_NEAR(r.acc_dense_match_chance, 100.0 * (0.25 * 2 + 0.75 * 1) / 3, 1e-4);
  pretrain::LossOptions no_dense;
  no_dense.use_dense = false;
  EXPECT_EQ(pretrain::cp2_loss(q, k, mq, mk, queue, no_dense).acc_dense_match, 0);
}

TEST(KeyBn, SplitBnNormalisesEachGroupOfTheKeyBatch) {
  auto b = pretrain::load_batch(fixture("cp2_step_r18_96_batch.pt"));
  pretrain::CP2Options o;
  o.encoder.backbone.depth = 18;
  o.queue_size = 256;
  o.key_bn_splits = 2;
  pretrain::CP2Model split(o);
  pretrain::load_pretrain_state(*split, fixture("cp2_step_r18_96.pt"), true);
  split->train();
  auto r = split->forward_step(b.im_q, b.im_k, b.mask_q, b.mask_k);
  // By hand: momentum update, then each half of the key batch through its own BN statistics.
  auto plain = load_model(18);
  plain->momentum_update();
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> keys;
  for (int64_t c = 0; c < 2; ++c) {
    auto k = plain->key_encoder().embed(b.im_k.slice(0, 2 * c, 2 * c + 2)).flatten(2);
    auto mk = pretrain::feature_mask(b.mask_k.slice(0, 2 * c, 2 * c + 2), 16, 6, 6).flatten(1);
    keys.push_back(torch::nn::functional::normalize((k * mk.unsqueeze(1)).sum(2),
                                                    torch::nn::functional::NormalizeFuncOptions().dim(1)));
  }
  EXPECT_LE(max_rel(r.k_ins, torch::cat(keys, 0)), 1e-6);
  auto whole = load_model(18)->forward_step(b.im_q, b.im_k, b.mask_q, b.mask_k);
  EXPECT_GT(max_rel(r.k_ins, whole.k_ins), 1e-3);  // and it differs from plain BN
  o.key_bn_splits = 3;
  pretrain::CP2Model bad(o);
  cp2::test::expect_error([&] { bad->forward_step(b.im_q, b.im_k, b.mask_q, b.mask_k); },
                          {"key_bn_splits", "batch 4 is not divisible by 3"});
}

// The momentum update is MoCo's k = k·m + q·(1 - m), per tensor as ATen's mul_ then add_, bit
// for bit (on the CPU one pass per parameter, train/sgd_fma.h), and leaves the query alone.
TEST(KeyEncoder, MomentumUpdateIsAtenMulThenAddBitForBit) {
  pretrain::CP2Options o;
  o.encoder.backbone.depth = 18;
  o.queue_size = 64;
  pretrain::CP2Model model(o);
  torch::NoGradGuard ng;
  torch::manual_seed(2);
  for (auto& p : model->q_module().parameters()) p.add_(torch::randn_like(p));  // q and k now differ
  std::vector<torch::Tensor> want, q_before;
  auto pq = model->q_module().parameters(), pk = model->k_module().parameters();
  ASSERT_EQ(pq.size(), pk.size());
  for (size_t i = 0; i < pk.size(); ++i) {
    want.push_back(pk[i].clone().mul_(o.momentum).add_(pq[i], 1.0 - o.momentum));
    q_before.push_back(pq[i].clone());
  }
  model->momentum_update();
  for (size_t i = 0; i < pk.size(); ++i) {
    EXPECT_TRUE(torch::equal(pk[i], want[i])) << "parameter " << i;
    EXPECT_TRUE(torch::equal(pq[i], q_before[i])) << "parameter " << i;
  }
  EXPECT_FALSE(torch::equal(pk[0], q_before[0]));
}

// The logged numbers read later (what a CUDA-graph step does) equal those read at once, and
// an unread LossParts says what it lacks.
TEST(LossRead, DeferredReadEqualsImmediate) {
  torch::manual_seed(11);
  const int64_t N = 3, D = 16, P = 12, K = 40;
  auto norm = [](const at::Tensor& t) { return torch::nn::functional::normalize(t, torch::nn::functional::NormalizeFuncOptions().dim(1)); };
  auto q = norm(torch::randn({N, D, P})), k = norm(torch::randn({N, D, P}));
  auto mq = (torch::rand({N, P}) > 0.5).to(torch::kFloat), mk = (torch::rand({N, P}) > 0.3).to(torch::kFloat);
  auto queue = norm(torch::randn({D, K}).t()).t().contiguous();
  const auto now = pretrain::cp2_loss(q, k, mq, mk, queue, pretrain::LossOptions{});
  auto later = pretrain::cp2_loss(q, k, mq, mk, queue, pretrain::LossOptions{}, /*read=*/false);
  EXPECT_EQ(later.total_value, 0);
  EXPECT_EQ(later.acc_dense_match, 0);
  ASSERT_TRUE(later.values.defined());
  EXPECT_GT(now.total_value, 0);
  later.read();
  for (auto f : {&pretrain::LossParts::total_value, &pretrain::LossParts::ins_value, &pretrain::LossParts::dense_value,
                 &pretrain::LossParts::acc1, &pretrain::LossParts::acc5, &pretrain::LossParts::acc_dense,
                 &pretrain::LossParts::acc_dense_chance, &pretrain::LossParts::acc_dense_match,
                 &pretrain::LossParts::acc_dense_match_chance})
    EXPECT_EQ(later.*f, now.*f);
  pretrain::LossParts empty;
  cp2::test::expect_error([&] { empty.read(); }, {"LossParts::read", "9 numbers", "cp2_loss", "found none"});
  later.batch = 0;
  cp2::test::expect_error([&] { later.read(); }, {"LossParts::read", "batch size", "found 0"});
}

// Off CUDA (and in a build without CUDA) the CUDA-graph step is refused with its reason,
// before anything is captured or changed.
TEST(GraphStep, RefusedOffCudaNamingWhy) {
  pretrain::CP2Options o;
  o.encoder.backbone.depth = 18;
  o.queue_size = 64;
  auto m = pretrain::make_model(o, 0);
  train::Optimizer opt(pretrain::query_parameters(*m), train::OptimOptions{});
  EXPECT_EQ(pretrain::graph_unsupported(pretrain::graph_facts(*m, opt)), "a CUDA graph needs a CUDA device, found cpu");
  data::Batch b{torch::randn({2, 3, 64, 64}), torch::randn({2, 3, 64, 64}), torch::ones({2, 64, 64}),
                torch::ones({2, 64, 64})};
  const auto before = m->queue.clone();
  cp2::test::expect_error([&] { pretrain::GraphedStep g(*m, opt, b, 0.1); },
                          {"CUDA graph: a CUDA graph needs a CUDA device, found cpu"});
  cp2::test::expect_error([&] { pretrain::StepRunner r(*m, opt, /*graphs=*/true); },
                          {"CUDA graph: a CUDA graph needs a CUDA device, found cpu"});
  EXPECT_TRUE(torch::equal(before, m->queue));
  EXPECT_EQ(opt.steps(), 0);
}

// train.cuda_graph: off is eager whatever the facts; auto falls back naming why; on throws
// naming the key and why. Each reason in its order (the config's first, then the device).
TEST(GraphStep, CudaGraphSettingResolvesWithItsReason) {
  pretrain::GraphFacts f;  // sgd, cosine-epoch, one process, on the CPU
  std::string why = "stale";
  EXPECT_FALSE(pretrain::resolve_cuda_graph("off", f, why));
  EXPECT_EQ(why, "");
  EXPECT_FALSE(pretrain::resolve_cuda_graph("auto", f, why));
  EXPECT_EQ(why, "a CUDA graph needs a CUDA device, found cpu");
  cp2::test::expect_error([&] { pretrain::resolve_cuda_graph("on", f, why); },
                          {"train.cuda_graph: on: a CUDA graph needs a CUDA device, found cpu"});
  cp2::test::expect_error([&] { pretrain::resolve_cuda_graph("yes", f, why); },
                          {"train.cuda_graph: expected off, on or auto, found 'yes'"});
  const std::vector<std::pair<std::function<void(pretrain::GraphFacts&)>, std::string>> cases = {
      {[](auto& g) { g.optimizer = "adamw"; }, "AdamW's bias correction changes every step: use sgd"},
      {[](auto& g) { g.processes = 2; }, "several processes: their gradient all-reduce is not captured"},
      {[](auto& g) { g.key_bn_shuffle = true; }, "key_bn_shuffle draws its permutation on the host"},
      {[](auto& g) { g.schedule = "poly"; }, "optim.schedule poly changes the learning rate every step"},
      {[](auto& g) { g.schedule = "cosine-iter"; }, "optim.schedule cosine-iter changes the learning rate"},
  };
  for (const auto& [set, reason] : cases) {
    pretrain::GraphFacts g;
    g.device = c10::Device("cuda:0");  // a device string only: nothing touches a GPU
    set(g);
    EXPECT_EQ(pretrain::graph_unsupported(g).rfind(reason, 0), 0u) << pretrain::graph_unsupported(g);
    cp2::test::expect_error([&] { pretrain::resolve_cuda_graph("on", g, why); }, {"train.cuda_graph: on: " + reason});
  }
}

// Without graphs the runner is train_step itself: the same loss, weights and queue, bit for bit.
TEST(GraphStep, EagerRunnerIsTrainStep) {
  pretrain::CP2Options o;
  o.encoder.backbone.depth = 18;
  o.queue_size = 64;
  auto ma = pretrain::make_model(o, 1), mb = pretrain::make_model(o, 1);
  train::Optimizer oa(pretrain::query_parameters(*ma), train::OptimOptions{}),
      ob(pretrain::query_parameters(*mb), train::OptimOptions{});
  pretrain::StepRunner runner(*mb, ob, /*graphs=*/false);
  torch::manual_seed(2);
  data::Batch b{torch::randn({2, 3, 64, 64}), torch::randn({2, 3, 64, 64}), torch::ones({2, 64, 64}),
                torch::ones({2, 64, 64})};
  for (double lr : {0.1, 0.05}) {
    const auto ra = pretrain::train_step(*ma, oa, b, lr);
    const auto rb = runner.step(b, lr);
    EXPECT_EQ(ra.loss, rb.loss);
    EXPECT_FALSE(runner.last_replayed());
    EXPECT_FALSE(rb.parts.total.requires_grad());  // the step's autograd graph is freed (loss.h)
  }
  EXPECT_EQ(runner.eager_steps(), 2);
  EXPECT_EQ(runner.captures() + runner.replays(), 0);
  auto pb = mb->named_parameters();
  for (const auto& kv : ma->named_parameters()) EXPECT_TRUE(torch::equal(kv.value(), pb[kv.key()])) << kv.key();
  EXPECT_TRUE(torch::equal(ma->queue, mb->queue));
}

TEST(BatchFile, BadShapesNameTheFile) {
  pretrain::Batch b{torch::zeros({2, 3, 32, 32}), torch::zeros({2, 3, 32, 32}), torch::zeros({2, 32, 32}),
                    torch::zeros({2, 16, 32})};
  std::string p = ::testing::TempDir() + "bad_batch.pt";
  pretrain::save_batch(p, b);
  cp2::test::expect_error([&] { pretrain::load_batch(p); }, {p, "masks expected N x H x W = [2, 32, 32]", "[2, 16, 32]"});
  auto ck = fixture("cp2_step_r18_96.pt");
  cp2::test::expect_error([&] { pretrain::load_batch(ck); }, {ck, "'im_q'"});
}

}  // namespace
