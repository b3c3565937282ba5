// Finetuning and evaluation: the loss against a hand computation, initialisation from
// every checkpoint kind, an overfit run reaching mIoU >= 0.9, exact resume, the test-time
// inference modes, and reloading a finetuned model.
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "../helpers.h"
#include "cp2/data/synth.h"
#include "cp2/io/keymap.h"
#include "cp2/io/weights.h"
#include "cp2/models/init.h"
#include "cp2/pretrain/trainer.h"
#include "cp2/seg/finetune.h"
#include "cp2/seg/inference.h"
#include "cp2/seg/model.h"
#include "cp2/seg/synth.h"
#include "cp2/train/optim.h"

namespace fs = std::filesystem;

namespace cp2::test {
namespace {

using namespace cp2::seg;

std::map<std::string, at::Tensor> tensors_of(torch::nn::Module& m) {
  std::map<std::string, at::Tensor> out;
  for (auto& [k, t] : io::state_dict(m)) out[k] = t.clone();
  return out;
}

TEST(SegLoss, HandComputed) {
  // 1 image, 2 classes, 1 x 3 pixels; the third pixel is ignored.
  auto logits = torch::tensor({1.0f, 0.0f, 2.0f, /**/ 0.0f, 1.0f, -1.0f}).reshape({1, 2, 1, 3});
  auto label = torch::tensor({0, 1, 255}, torch::kLong).reshape({1, 1, 3});
  const double l0 = -std::log(std::exp(1.0) / (std::exp(1.0) + 1.0));
  const double l1 = -std::log(std::exp(1.0) / (std::exp(1.0) + 1.0));
  auto all = seg_loss(logits, label, /*avg_non_ignore=*/false, false);
  EXPECT_NEAR(all.loss.item<double>(), (l0 + l1) / 3.0, 1e-6);  // mmseg 0.x: mean over every pixel
  auto valid = seg_loss(logits, label, true, false);
  EXPECT_NEAR(valid.loss.item<double>(), (l0 + l1) / 2.0, 1e-6);
  EXPECT_DOUBLE_EQ(all.acc, 100.0);
  // Logits at a lower resolution are resized (bilinear) to the label first.
  auto small = torch::zeros({1, 2, 1, 1});
  auto big = torch::zeros({1, 4, 4}, torch::kLong);
  EXPECT_NEAR(seg_loss(small, big, false, false).loss.item<double>(), std::log(2.0), 1e-6);
  EXPECT_DOUBLE_EQ(seg_loss(small, big, false, false).value, seg_loss(small, big, false, false).loss.item<double>());
  // read = false leaves the numbers on the device until SegLoss::read (the step reads them
  // once, after backward): the same numbers as read = true. Here the first pixel is missed.
  auto missed = torch::tensor({1, 1, 255}, torch::kLong).reshape({1, 1, 3});
  const auto now = seg_loss(logits, missed, true, false);
  auto later = seg_loss(logits, missed, true, false, /*read=*/false);
  EXPECT_EQ(later.value, 0);
  EXPECT_EQ(later.acc, 0);
  later.read();
  EXPECT_DOUBLE_EQ(now.acc, 50.0);
  EXPECT_DOUBLE_EQ(later.acc, now.acc);
  EXPECT_DOUBLE_EQ(later.value, now.value);
  EXPECT_DOUBLE_EQ(later.value, now.loss.item<double>());
  SegLoss empty;
  expect_error([&] { empty.read(); }, {"SegLoss::read", "3 numbers", "seg_loss", "found none"});
}

models::SegmentorOptions r18(int classes) {
  SegModelConfig m;
  m.arch = 18;
  return m.segmentor(classes);
}

TEST(SegInit, EveryCheckpointKind) {
  set_threads(2);
  // cp2's own pretraining checkpoint: one step of the tiny config.
  auto imgs = temp_dir("seg_init_imgs");
  data::SynthOptions so;
  so.count = 8;
  so.width = 64;
  so.height = 64;
  data::write_synthetic_images(imgs, so);
  pretrain::PretrainConfig pc;
  config::Sources src;
  src.file = std::string(CP2_CONFIGS) + "/cpu_tiny.yaml";
  src.flags = {{"data.root", imgs}, {"train.out", temp_dir("seg_init_pretrain")}};
  pretrain::RunControl rc;
  pretrain::resolve_config(pc, src);
  rc.max_steps = 1;
  rc.progress = false;
  const auto cp2_ckpt = pretrain::run_pretrain(pc, rc).last_checkpoint;

  struct Kind {
    std::string file, preset, source_key;  // a tensor to compare with backbone.layer2.0.conv1.weight
    bool has_head;
  };
  const std::vector<Kind> kinds = {
      {fixture("resnet18_os16.pt"), "torchvision", "layer2.0.conv1.weight", false},
      {fixture("moco_r18_legacy.pt"), "moco", "state_dict.module.encoder_q.layer2.0.conv1.weight", false},
      {fixture("cp2_authors_r18.pt"), "cp2", "state_dict.module.encoder_q.backbone.layer2.0.conv1.weight", true},
      {cp2_ckpt, "cp2", "state_dict.encoder_q.backbone.layer2.0.conv1.weight", true},
      {fixture("seg_r18_os16.pt"), "mmseg", "backbone.layer2.0.conv1.weight", true},
  };
  for (const auto& k : kinds) {
    SCOPED_TRACE(k.file);
    auto m = make_segmentor(r18(21), 5);
    const auto before = tensors_of(*m);
    auto r = init_from_pretrained(*m, k.file, io::Preset::Auto);  // detected
    EXPECT_EQ(io::preset_name(r.preset), k.preset);
    const auto after = tensors_of(*m);
    auto src_t = load_tensors(k.file).at(k.source_key);
    EXPECT_TRUE(torch::equal(after.at("backbone.layer2.0.conv1.weight"), src_t));
    // The classifier keeps its fresh init; the projection never enters the model.
    EXPECT_TRUE(torch::equal(after.at("decode_head.conv_seg.weight"), before.at("decode_head.conv_seg.weight")));
    EXPECT_FALSE(after.count("decode_head.contrast_conv.0.weight"));
    // ASPP weights come along from CP² checkpoints only.
    EXPECT_EQ(torch::equal(after.at("decode_head.bottleneck.conv.weight"), before.at("decode_head.bottleneck.conv.weight")),
              !k.has_head);
    for (const auto& miss : r.report.missing) EXPECT_EQ(miss.rfind("decode_head.", 0), 0u) << miss;
    EXPECT_NE(r.str().find("layout"), std::string::npos);
  }
  // The wrong depth: one error naming the file and the first mis-shaped tensor.
  SegModelConfig m50;
  auto big = make_segmentor(m50.segmentor(21), 0);
  expect_error([&] { init_from_pretrained(*big, fixture("cp2_authors_r18.pt"), io::Preset::Auto); },
               {"cp2_authors_r18.pt", "does not fit", "expected", "model.arch"});
}

// The tiny CPU config on a generated VOC-layout dataset.
// A generated VOC-layout dataset of train + val images of w×h in a fresh temp folder.
std::string synth_voc(const std::string& name, int train, int val, int w, int h) {
  const auto data = temp_dir(name);
  SynthSegOptions so;
  so.train = train;
  so.val = val;
  so.width = w;
  so.height = h;
  write_synthetic_dataset(data, so);
  return data;
}

FinetuneConfig tiny(const std::string& data, const std::string& out, std::vector<std::string> sets, std::string* yaml) {
  FinetuneConfig cfg;
  config::Sources src;
  src.file = std::string(CP2_CONFIGS) + "/cpu_seg_tiny.yaml";
  src.flags = {{"data.root", data}, {"train.out", out}};
  src.sets = std::move(sets);
  *yaml = resolve_config(cfg, src);
  return cfg;
}

FinetuneSummary run(const FinetuneConfig& cfg, const std::string& yaml, const std::string& resume = "", int64_t max_iters = 0) {
  FinetuneControl fc;
  fc.resume = resume;
  fc.max_iters = max_iters;
  fc.progress = false;
  return run_finetune(cfg, fc);
}

TEST(Finetune, OverfitsAHandfulOfImages) {
  set_threads(2);
  const auto data = synth_voc("ft_overfit_data", 4, 1, 96, 72), out = temp_dir("ft_overfit_run");
  std::string yaml;
  // Evaluate on the training images themselves: can the model fit them?
  auto cfg = tiny(data, out,
                  {"data.val_split=ImageSets/Segmentation/train_aug.txt", "optim.lr=0.05", "train.iters=120",
                   "train.eval_every=60", "pipeline.crop_h=96", "pipeline.crop_w=128", "pipeline.ratio_min=1",
                   "pipeline.ratio_max=1"},
                  &yaml);
  auto s = run(cfg, yaml);
  EXPECT_TRUE(s.finished);
  EXPECT_EQ(s.last_iter, 120);
  EXPECT_GE(s.best_miou, 90.0) << "best mIoU (%) " << s.best_miou;
  EXPECT_LE(s.best_miou, 100.0);
  EXPECT_LT(s.losses.back(), 0.3 * s.losses.front());
  EXPECT_TRUE(fs::exists(out + "/best.pt"));
  EXPECT_TRUE(fs::exists(out + "/checkpoints/checkpoint_00000120.pt"));
  auto sum = nlohmann::json::parse(std::ifstream(out + "/summary.json"));
  EXPECT_DOUBLE_EQ(sum["best_miou"].get<double>(), s.best_miou);
  int evals = 0;
  std::ifstream log(out + "/log.jsonl");
  for (std::string line; std::getline(log, line);) evals += nlohmann::json::parse(line).contains("miou");
  EXPECT_EQ(evals, 2);

  // best.pt reloads on its own (options inferred from the weights, classes from meta) and
  // evaluates to the mIoU recorded for it.
  auto m = load_finetuned(out);
  EXPECT_EQ(m.path, out + "/best.pt");
  EXPECT_EQ(m.classes.size(), 21u);
  EXPECT_EQ(m.classes[1], "aeroplane");
  EXPECT_EQ(m.model->options().backbone.depth, 18);
  EXPECT_EQ(m.model->options().backbone.output_stride, 8);  // from the stored config
  EXPECT_EQ(m.model->options().head.channels, 64);
  SegDataset val(cfg.data.dataset(false));
  auto r = evaluate(*m.model, val, cfg.eval_options(), 1);
  EXPECT_NEAR(100 * r.metrics.miou, s.best_miou, 1e-9);  // runs log percent
  // PyTorch reads it as mmsegmentation would: state_dict + meta.CLASSES.
  auto ck = io::load_checkpoint(out + "/best.pt");
  EXPECT_TRUE(ck.root->get("meta")->get("CLASSES"));
  EXPECT_EQ(io::detect_preset(io::find_state_dict(ck), "best.pt"), io::Preset::Mmseg);
}

TEST(Finetune, ResumeIsExact) {
  set_threads(2);
  const auto data = synth_voc("ft_resume_data", 6, 2, 48, 40);
  std::string yaml;
  const std::vector<std::string> sets = {"train.iters=5", "train.eval_every=0", "train.checkpoint_every=0",
                                         "pipeline.photometric=true", "data.workers=2"};
  auto a = tiny(data, temp_dir("ft_resume_a"), sets, &yaml);
  auto straight = run(a, yaml);
  auto b = tiny(data, temp_dir("ft_resume_b"), sets, &yaml);
  auto first = run(b, yaml, "", 2);
  EXPECT_FALSE(first.finished);
  EXPECT_EQ(first.last_iter, 2);
  auto second = run(b, yaml, b.train.out);
  EXPECT_TRUE(second.finished);
  EXPECT_EQ(second.first_iter, 2);
  ASSERT_EQ(second.losses.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(second.losses[i], straight.losses[i + 2]) << i;
  auto sa = load_tensors(straight.last_checkpoint), sb = load_tensors(second.last_checkpoint);
  EXPECT_EQ(sa.size(), sb.size());
  for (const auto& [k, t] : sa)
    if (k.rfind("rng", 0) != 0) EXPECT_TRUE(torch::equal(t, sb.at(k))) << k;
  EXPECT_EQ(second.best_miou, straight.best_miou);
  // Resuming from a file that is not a finetune checkpoint says so.
  expect_error([&] { run(b, yaml, fixture("seg_r18_os16.pt")); }, {"seg_r18_os16.pt", "not a cp2 finetune checkpoint"});
}

// train.loss_scale: dynamic in fp32 (where fp16 is not at hand): the power-of-two scale leaves
// every loss and weight bit for bit as without it, the checkpoint carries the scale, the log
// reports it; a first scale that overflows the loss skips steps and backs off.
TEST(Finetune, DynamicLossScalingIsExactInFp32AndBacksOffOnOverflow) {
  set_threads(2);
  const auto data = synth_voc("ft_ls_data", 4, 1, 48, 40);
  const std::vector<std::string> sets = {"train.iters=3", "train.eval_every=0", "train.checkpoint_every=0",
                                         "data.workers=1", "train.log_every=1"};
  std::string yaml;
  auto a = tiny(data, temp_dir("ft_ls_a"), sets, &yaml);
  const auto plain = run(a, yaml);
  auto s2 = sets;
  s2.push_back("train.loss_scale=dynamic");
  auto b = tiny(data, temp_dir("ft_ls_b"), s2, &yaml);
  const auto scaled = run(b, yaml);
  EXPECT_EQ(plain.losses, scaled.losses);
  auto sa = load_tensors(plain.last_checkpoint), sb = load_tensors(scaled.last_checkpoint);
  int compared = 0, scale_entries = 0;
  for (const auto& [k, t] : sb) {
    if (k.find("loss_scale") != std::string::npos) {
      ++scale_entries;
      if (k.size() >= 10 && k.compare(k.size() - 10, 10, "loss_scale") == 0) EXPECT_EQ(t.item<double>(), 65536) << k;
      continue;
    }
    if (k.rfind("rng", 0) == 0 || !sa.count(k)) continue;
    EXPECT_TRUE(torch::equal(t, sa.at(k))) << k;
    ++compared;
  }
  EXPECT_EQ(scale_entries, 3);
  EXPECT_GT(compared, 100);
  auto last_log = [](const std::string& out) {
    std::ifstream f(fs::path(out) / "log.jsonl");
    std::string line, last;
    while (std::getline(f, line))
      if (line.find("\"loss\"") != std::string::npos) last = line;  // training lines (not evaluations)
    return nlohmann::json::parse(last);
  };
  auto lb = last_log(b.train.out);
  EXPECT_EQ(lb.at("loss_scale").get<double>(), 65536);
  EXPECT_EQ(lb.at("skipped_steps").get<int64_t>(), 0);
  const auto la = last_log(a.train.out);
  EXPECT_FALSE(la.contains("loss_scale"));
  for (const char* k : {"iteration", "lr", "acc", "img_per_s", "data_wait_s", "elapsed_s", "rss_mib"})
    EXPECT_TRUE(la.contains(k) && lb.contains(k)) << k << " missing from " << la.dump() << " or " << lb.dump();
  // A first scale past fp32's range (3.4e38) makes every gradient inf or NaN: those steps are
  // skipped and the scale halves until it is back in range (1e39 → 5e38 → 2.5e38).
  s2.push_back("train.loss_scale_init=1e39");
  auto c = tiny(data, temp_dir("ft_ls_c"), s2, &yaml);
  run(c, yaml);
  auto lc = last_log(c.train.out);
  EXPECT_GE(lc.at("skipped_steps").get<int64_t>(), 2);
  EXPECT_LE(lc.at("loss_scale").get<double>(), 2.5e38);
}

// The loop's step alone: a finite loss is seg_loss's on the batch and updates the weights; a
// non-finite one (here an overflowing classifier) updates nothing and, under loss scaling,
// counts as skipped with the scale halved (GradScaler's loop, as pretrain::train_step).
TEST(Finetune, TrainStepStepsOnAFiniteLossAndSkipsANonFiniteOne) {
  set_threads(2);
  auto opts = r18(3);
  opts.head.dropout = 0;  // the expected loss comes from a second forward pass
  torch::manual_seed(3);
  const auto image = torch::randn({2, 3, 32, 32});
  auto label = torch::randint(0, 3, {2, 32, 32}, torch::kLong);
  label.index_put_({0, torch::indexing::Slice(0, 8)}, 255);
  for (bool poison : {false, true}) {
    auto model = make_segmentor(opts, 1);
    model->train();
    const auto params = model_parameters(*model);
    train::Optimizer opt(params, finetune_optim());
    opt.enable_loss_scaling(1024);
    if (poison) {
      torch::NoGradGuard ng;
      model->named_parameters()["decode_head.conv_seg.weight"].fill_(std::numeric_limits<float>::infinity());
    }
    std::vector<at::Tensor> before;
    for (auto& [name, p] : params) before.push_back(p.detach().clone());
    SegLoss expected;
    {
      // The same forward on a copy of the model: BatchNorm's running statistics of `model` stay as they were.
      auto twin = make_segmentor(opts, 1);
      twin->train();
      torch::NoGradGuard ng;
      for (auto& p : twin->named_parameters()) p.value().copy_(model->named_parameters()[p.key()]);
      expected = seg_loss(twin->logits(image), label, false, false);
    }
    const auto r = train_step(*model, opt, image, label, 0.01, {});
    EXPECT_EQ(r.finite, !poison);
    EXPECT_EQ(r.stepped, !poison);
    EXPECT_EQ(opt.skipped_steps(), poison ? 1 : 0);
    EXPECT_EQ(opt.loss_scale(), poison ? 512 : 1024);
    size_t changed = 0, i = 0;
    for (auto& [name, p] : params) changed += !torch::equal(p, before[i++]);
    if (poison) {
      EXPECT_FALSE(std::isfinite(r.loss)) << r.loss;
      EXPECT_EQ(changed, 0u);
    } else {
      EXPECT_DOUBLE_EQ(r.loss, expected.value);
      EXPECT_DOUBLE_EQ(r.acc, expected.acc);
      EXPECT_GT(changed, params.size() / 2) << "of " << params.size();
    }
  }
}

// Against tools/make_parity_fixtures.py::finetune_fixture (PyTorch, mmseg 0.x semantics
// written out independently): two poly-lr SGD steps in float64 (see the fixture for why),
// then slide and flip inference in float32 with the reference's trained weights.
TEST(FinetuneParity, TwoStepsSlideAndFlipMatchPyTorch) {
  set_threads(2);
  auto fx = load_tensors(fixture("finetune_r18.pt"));
  auto prefixed = [&](const std::string& prefix) {
    io::TensorList out;
    for (const auto& [k, t] : fx)
      if (k.rfind(prefix, 0) == 0) out.emplace_back(k.substr(prefix.size()), t);
    return out;
  };
  SegModelConfig mc;
  mc.arch = 18;
  mc.dropout = 0;  // off in the reference too
  models::Segmentor m(mc.segmentor(5));
  m->to(torch::kDouble);
  io::load_state(*m, prefixed("state_dict."), /*strict=*/true, "finetune_r18.pt");
  const auto params = model_parameters(*m);
  auto oo = finetune_optim();
  oo.lr = 0.01;
  train::Optimizer opt(params, oo);
  m->train();
  for (int t = 0; t < 2; ++t) {
    const double lr = train::scheduled_lr(oo, 0.01, 0, t, 10, 1);
    EXPECT_NEAR(lr, fx.at("lrs")[t].item<double>(), 1e-15);
    auto l = seg_loss(m->logits(fx.at("input")), fx.at("label"), false, false);
    EXPECT_NEAR(l.loss.item<double>(), fx.at("losses")[t].item<double>(), 1e-10) << t;
    opt.zero_grad();
    l.loss.backward();
    opt.step(lr);
  }
  double worst = 0;
  std::string worst_key;
  for (const auto& [k, t] : io::state_dict(*m)) {
    const auto& ref = fx.at("after." + k);
    if (!t.is_floating_point()) {
      EXPECT_TRUE(torch::equal(t, ref)) << k;
      continue;
    }
    const double e = max_rel(t, ref);
    if (e > worst) worst = e, worst_key = k;
  }
  std::printf("[parity] finetune 2 steps (float64): worst tensor %s max rel %.2e\n", worst_key.c_str(), worst);
  EXPECT_LE(worst, 1e-9) << worst_key;

  models::Segmentor inf(mc.segmentor(5));
  io::load_state(*inf, prefixed("after."), /*strict=*/true, "finetune_r18.pt");  // converted to float
  inf->eval();
  torch::NoGradGuard ng;
  const auto img = fx.at("image");
  PipelineOptions norm;
  EvalOptions slide;
  slide.mode = "slide";
  slide.crop_h = slide.crop_w = 32;
  slide.stride_h = 20;
  slide.stride_w = 24;
  const double e_slide = max_rel(infer_logits(*inf, normalize(img, norm.mean, norm.std).unsqueeze(0), slide), fx.at("slide_logits"));
  EvalOptions flip;
  flip.flip = true;
  flip.scale_long = flip.scale_short = 0;
  const double e_flip = max_rel(predict_probs(*inf, img, flip), fx.at("flip_probs"));
  std::printf("[parity] slide logits %.2e, flip probabilities %.2e\n", e_slide, e_flip);
  EXPECT_LE(e_slide, 1e-4);
  EXPECT_LE(e_flip, 1e-4);
}

TEST(Inference, WholeSlideFlipScales) {
  set_threads(2);
  auto m = make_segmentor(r18(5), 3);
  models::randomize_bn(*m, 4);
  m->eval();
  auto img = torch::randint(0, 256, {37, 50, 3}, torch::kUInt8);
  EvalOptions o;
  o.scale_long = o.scale_short = 0;  // keep the image size
  auto whole = predict_probs(*m, img, o);
  EXPECT_EQ(whole.sizes(), (std::vector<int64_t>{5, 37, 50}));
  EXPECT_LT((whole.sum(0) - 1).abs().max().item<double>(), 1e-5);
  // One window covering the image is whole-image inference.
  EvalOptions s = o;
  s.mode = "slide";
  s.crop_h = 64;
  s.crop_w = 64;
  EXPECT_LT((predict_probs(*m, img, s) - whole).abs().max().item<double>(), 1e-6);
  // Overlapping windows: 2 x 3 windows of 32 at stride 16 on 37 x 50, the last ones
  // shifted back inside (rows 5..37, columns 18..50); rows 0..5 x columns 0..16 are
  // covered by the first window alone, so its logits are used there as they are.
  s.crop_h = s.crop_w = 32;
  s.stride_h = s.stride_w = 16;
  auto norm = [&](const at::Tensor& t) {
    PipelineOptions p;
    return normalize(t, p.mean, p.std).unsqueeze(0);
  };
  auto logits = infer_logits(*m, norm(img), s);
  torch::NoGradGuard ng;
  auto corner = m->predict(norm(img).slice(2, 0, 32).slice(3, 0, 32).contiguous());
  EXPECT_LT((logits.slice(2, 0, 5).slice(3, 0, 16) - corner.slice(2, 0, 5).slice(3, 0, 16)).abs().max().item<double>(), 1e-5);
  EXPECT_GT((logits.slice(2, 5, 16).slice(3, 0, 16) - corner.slice(2, 5, 16).slice(3, 0, 16)).abs().max().item<double>(), 1e-4);
  // Flip averages the mirrored prediction; a horizontally symmetric image gives a
  // symmetric result.
  EvalOptions f = o;
  f.flip = true;
  auto sym = torch::cat({img, img.flip({1})}, 1).contiguous();
  auto pf = predict_probs(*m, sym, f);
  EXPECT_LT((pf - pf.flip({2})).abs().max().item<double>(), 1e-5);
  // Multi-scale: still the original size, still probabilities.
  EvalOptions ms = o;
  ms.scales = {0.5, 1.0, 1.5};
  auto pm = predict_probs(*m, img, ms);
  EXPECT_EQ(pm.sizes(), whole.sizes());
  EXPECT_LT((pm.sum(0) - 1).abs().max().item<double>(), 1e-5);
  EXPECT_GT((pm - whole).abs().max().item<double>(), 1e-4);
}

}  // namespace
}  // namespace cp2::test
