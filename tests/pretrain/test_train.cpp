// The pretraining loop: loss falls on generated images, exact resume, Quick Tuning init,
// wrong-architecture and non-finite-loss errors, MoCo v2 mode parity.
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "../helpers.h"
#include "cp2/data/synth.h"
#include "cp2/io/checkpoint.h"
#include "cp2/io/keymap.h"
#include "cp2/pretrain/state_io.h"
#include "cp2/pretrain/trainer.h"
#include "cp2/train/run_folder.h"
#include "cp2/train/state.h"

namespace fs = std::filesystem;

namespace cp2::test {
namespace {

using namespace cp2::pretrain;

std::string train_images(const std::string& name, int count) { return synth_images(name, count, 96, 80, 3); }

// The tiny CPU config (configs/cpu_tiny.yaml) on `data`, writing to `out`.
PretrainConfig tiny(const std::string& data, const std::string& out, std::string* yaml = nullptr) {
  PretrainConfig cfg;
  ConfigSources src;
  src.file = std::string(CP2_CONFIGS) + "/cpu_tiny.yaml";
  src.flags = {{"data.root", data}, {"train.out", out}};
  auto y = resolve_config(cfg, src);
  if (yaml) *yaml = y;
  return cfg;
}

RunSummary run(const PretrainConfig& cfg, const std::string& yaml, const std::string& resume = "", int64_t max_steps = 0) {
  RunControl rc;
  rc.resume = resume;
  rc.max_steps = max_steps;
  rc.progress = false;
  return run_pretrain(cfg, rc);
}

double mean(const std::vector<double>& v, size_t a, size_t b) {
  return std::accumulate(v.begin() + a, v.begin() + b, 0.0) / (b - a);
}

TEST(PretrainRun, LossFallsOnGeneratedImages) {
  set_threads(2);
  auto data = train_images("train_falls", 16);
  std::string yaml;
  auto cfg = tiny(data, temp_dir("train_falls_run"), &yaml);
  cfg.train.epochs = 20;  // 2 steps per epoch: 40 steps, ~30 s on 2 cores
  auto s = run(cfg, yaml);
  ASSERT_EQ(s.losses.size(), 40u);
  // Steps 0-1 see the random initial queue; compare once it holds real keys.
  double early = mean(s.losses, 2, 12), late = mean(s.losses, 30, 40);
  std::printf("[loss falls] mean total loss steps 2-11: %.4f, steps 30-39: %.4f\n", early, late);
  EXPECT_LT(late, early - 0.15);
  EXPECT_TRUE(s.finished);
  EXPECT_TRUE(fs::exists(s.last_checkpoint));
  // Log and summary files.
  std::ifstream log(cfg.train.out + "/log.jsonl");
  int lines = 0;
  for (std::string l; std::getline(log, l);) {
    const auto rec = nlohmann::json::parse(l);
    if (!rec.contains("loss_dense")) continue;
    ++lines;
    for (const char* k : {"step", "lr", "acc1", "img_per_s", "data_wait_s", "elapsed_s", "rss_mib"})
      EXPECT_TRUE(rec.contains(k)) << k << " missing from " << l;
  }
  EXPECT_EQ(lines, 40);
  EXPECT_TRUE(fs::exists(cfg.train.out + "/summary.json"));
  EXPECT_TRUE(fs::exists(cfg.train.out + "/config.yaml"));
}

// Every tensor of two checkpoints' state and optimizer state, bit for bit.
void expect_same_checkpoint(const std::string& a, const std::string& b) {
  auto ta = load_tensors(a), tb = load_tensors(b);
  ASSERT_EQ(ta.size(), tb.size());
  size_t compared = 0;
  for (auto& [k, v] : ta) {
    if (k.rfind("rng.", 0) == 0) continue;
    ASSERT_TRUE(tb.count(k)) << k;
    EXPECT_TRUE(torch::equal(v, tb.at(k))) << k;
    ++compared;
  }
  EXPECT_GT(compared, 200u);
  auto ra = io::load_checkpoint(a).root, rb = io::load_checkpoint(b).root;
  for (const char* key : {"epoch", "iteration", "step"}) EXPECT_EQ(ra->get(key)->i, rb->get(key)->i) << key;
}

TEST(PretrainRun, ResumeIsBitExact) {
  set_threads(2);
  auto data = train_images("train_resume", 24);
  std::string yaml;
  // 3 steps per epoch, so the stop at step 2 is mid-epoch and the run crosses an epoch.
  auto straight = tiny(data, temp_dir("train_resume_a"), &yaml);
  auto s1 = run(straight, yaml, "", 4);
  ASSERT_EQ(s1.last_step, 4);
  std::string split_yaml;
  auto split = tiny(data, temp_dir("train_resume_b"), &split_yaml);
  auto s2 = run(split, yaml, "", 2);
  ASSERT_EQ(s2.last_step, 2);
  ASSERT_FALSE(s2.finished);
  auto s3 = run(split, yaml, split.train.out, 4);  // resume from the run folder
  EXPECT_EQ(s3.first_step, 2);
  EXPECT_EQ(s3.last_step, 4);
  EXPECT_EQ(s3.losses, std::vector<double>(s1.losses.begin() + 2, s1.losses.end()));
  expect_same_checkpoint(s1.last_checkpoint, s3.last_checkpoint);
  // Positions: 4 steps at 3 per epoch = epoch 1, iteration 1.
  auto r = io::load_checkpoint(s3.last_checkpoint).root;
  EXPECT_EQ(r->get("epoch")->i, 1);
  EXPECT_EQ(r->get("iteration")->i, 1);
  // The stored config is the one that ran (its own run folder), and resolves to the same YAML.
  PretrainConfig again;
  ConfigSources src;
  src.stored_config = train::stored_config(io::load_checkpoint(s3.last_checkpoint).root, train::pretrain_kind(),
                                           s3.last_checkpoint);
  EXPECT_EQ(resolve_config(again, src), split_yaml);
}

TEST(PretrainRun, KeepsTheLastCheckpoints) {
  set_threads(2);
  auto data = train_images("train_keep", 16);
  std::string yaml;
  auto cfg = tiny(data, temp_dir("train_keep_run"), &yaml);
  cfg.train.checkpoint_every_iters = 1;
  cfg.train.keep_last = 2;
  run(cfg, yaml);
  std::vector<std::string> names;
  for (auto& e : fs::directory_iterator(cfg.train.out + "/checkpoints")) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"checkpoint_00000003.pt", "checkpoint_00000004.pt"}));
}

TEST(PretrainRun, QuickTuningFromMocoRunAndWrongArchitecture) {
  set_threads(2);
  auto data = train_images("train_qt", 16);
  std::string yaml;
  // MoCo v2 with cp2 itself: its checkpoint is the Quick Tuning base.
  auto moco = tiny(data, temp_dir("train_qt_moco"), &yaml);
  moco.model.mode = "moco";
  auto base = run(moco, yaml, "", 1).last_checkpoint;
  auto base_sd = load_tensors(base);
  ASSERT_TRUE(base_sd.count("state_dict.encoder_q.fc.2.weight"));
  EXPECT_EQ(io::detect_preset(io::find_state_dict(io::load_checkpoint(base)), base), io::Preset::Moco);

  auto qt = tiny(data, temp_dir("train_qt_cp2"), &yaml);
  qt.train.init = base;
  qt.train.init_preset = "moco";
  auto s = run(qt, yaml, "", 1);
  auto sd = load_tensors(s.last_checkpoint);
  // After one step the key encoder is m·q0 + (1 − m)·q0 = the loaded backbone.
  for (const char* k : {"conv1.weight", "layer3.1.conv2.weight", "layer4.0.downsample.0.weight"})
    EXPECT_LE(max_rel(sd.at(std::string("state_dict.encoder_k.backbone.") + k), base_sd.at(std::string("state_dict.encoder_q.") + k)), 1e-6) << k;

  auto wrong = tiny(data, temp_dir("train_qt_wrong"), &yaml);
  wrong.model.arch = 50;
  wrong.train.init = base;
  expect_error([&] { run(wrong, yaml, "", 1); }, {base, "does not fit model.arch=50", "expected", "found"});
}

TEST(PretrainRun, NonFiniteLossStopsNamingTheStep) {
  set_threads(2);
  auto data = train_images("train_nan", 16);
  std::string yaml;
  auto cfg = tiny(data, temp_dir("train_nan_run"), &yaml);
  cfg.optim.lr = 1e30;
  cfg.train.checkpoint_every_iters = 1;
  cfg.train.epochs = 5;
  try {
    run(cfg, yaml);
    ADD_FAILURE() << "expected a non-finite loss error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("loss is not finite"), std::string::npos) << msg;
    EXPECT_NE(msg.find("Last good checkpoint: "), std::string::npos) << msg;
    auto pos = msg.find("step ");
    ASSERT_EQ(pos, 0u) << msg;
    int64_t step = std::stoll(msg.substr(5));
    EXPECT_GE(step, 1);
    // Numbered as the progress line shows it (1-based): the last checkpoint is the step
    // before, and holds finite weights.
    auto last = train::latest_checkpoint(cfg.train.out);
    EXPECT_EQ(io::load_checkpoint(last).root->get("step")->i, step - 1);
    EXPECT_NE(msg.find(last), std::string::npos);
  }
}

TEST(PretrainRun, BadInputs) {
  auto data = train_images("train_bad", 4);
  std::string yaml;
  auto cfg = tiny(data, temp_dir("train_bad_run"), &yaml);
  auto empty = temp_dir("train_bad_empty");
  cfg.data.root = empty;
  const std::string out = cfg.train.out;
  cfg.train.out = out + "/never";
  expect_error([&] { run(cfg, yaml); }, {empty, "no images found"});
  EXPECT_FALSE(fs::exists(cfg.train.out)) << "a folder without images left a run folder";
  cfg.train.out = out;
  cfg.data.root = data;
  expect_error([&] { run(cfg, yaml); }, {"4 images", "batch of 8"});
  cfg.train.init = fixture("cp2_step_r18_96.pt");  // a pretraining state with no MoCo keys
  cfg.train.init_preset = "moco";
  cfg.train.batch = 2;
  expect_error([&] { run(cfg, yaml); }, {"cp2_step_r18_96.pt", "no tensor matched", "cp2 layout", "--init-preset cp2"});
  cfg.train.init_preset = "auto";
  cfg.train.init = "";
  expect_error([&] { run(cfg, yaml, "/nonexistent/run"); }, {"/nonexistent/run", "no such checkpoint"});
  cfg.train.device = "tpu";
  expect_error([&] { run(cfg, yaml); }, {"train.device", "'tpu'"});
}

TEST(MocoMode, EmbeddingMatchesMocoV2) {
  // moco_r18_legacy.pt: MoCo v2's layout (module.encoder_q.* with MLP fc, K = 16).
  CP2Options o;
  o.mode = Mode::Moco;
  o.encoder.backbone.depth = 18;
  o.queue_size = 16;
  CP2Model m(o);
  auto rep = load_pretrain_state(*m, fixture("moco_r18_legacy.pt"), /*strict=*/true);
  EXPECT_TRUE(rep.clean()) << rep.str();
  auto io_ = load_tensors(fixture("moco_r18_io.pt"));
  m->eval();
  torch::NoGradGuard ng;
  double e = max_rel(dynamic_cast<MocoEncoderImpl&>(m->q_module()).mlp_embed(io_.at("input")), io_.at("embed_eval"));
  std::printf("[moco parity] R18 MLP embedding max rel error %.2e (tol 1e-5)\n", e);
  EXPECT_LE(e, 1e-5);
}

}  // namespace
}  // namespace cp2::test
