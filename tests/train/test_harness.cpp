// The training harness under both loops: run folders that are never mixed up or
// overwritten, exact continuation after resume, preemption, failures that keep the work.
// One test per bug the run-folder issue reproduced; each failed before the harness.
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "../helpers.h"
#include "cp2/data/image.h"
#include "cp2/data/synth.h"
#include "cp2/io/atomic_file.h"
#include "cp2/io/checkpoint.h"
#include "cp2/pretrain/trainer.h"
#include "cp2/seg/finetune.h"
#include "cp2/seg/synth.h"
#include "cp2/train/harness.h"
#include "cp2/train/optim.h"
#include "cp2/train/progress.h"
#include "cp2/train/resolve.h"
#include "cp2/train/run_folder.h"

namespace fs = std::filesystem;

namespace cp2::test {
namespace {

std::string harness_images(const std::string& name, int count) { return synth_images(name, count, 80, 64, 4); }

train::RunRequest tiny_request(const std::string& data, const std::string& out, std::vector<std::string> sets = {}) {
  train::RunRequest r;
  r.src.file = std::string(CP2_CONFIGS) + "/cpu_tiny.yaml";
  r.src.flags = {{"data.root", data}};
  if (!out.empty()) r.src.flags.emplace_back("train.out", out);
  r.src.sets = std::move(sets);
  return r;
}

// Resolves as `cp2 pretrain` does and runs.
pretrain::RunSummary pretrain_run(train::RunRequest req, int64_t max_steps = 0, pretrain::PretrainConfig* out = nullptr) {
  pretrain::PretrainConfig cfg;
  auto r = train::resolve_run(cfg, std::move(req), train::pretrain_kind());
  pretrain::RunControl rc;
  rc.resume = r.checkpoint;
  rc.take_over = r.take_over;
  rc.max_steps = max_steps;
  rc.progress = false;
  if (out) *out = cfg;
  return pretrain::run_pretrain(cfg, rc);
}

std::vector<int64_t> logged(const std::string& run, const std::string& unit, bool evals = false) {
  std::vector<int64_t> v;
  std::ifstream f(run + "/log.jsonl");
  for (std::string line; std::getline(f, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("miou") == evals) v.push_back(j[unit].get<int64_t>());
  }
  return v;
}

TEST(RunFolder, ResumeWritesWhereTheUserPoints) {
  set_threads(2);
  auto data = harness_images("h_moved_data", 16);
  const auto a = temp_dir("h_moved_a"), b = temp_dir("h_moved_b");
  pretrain_run(tiny_request(data, a), 2);
  fs::remove_all(b);
  fs::copy(a, b, fs::copy_options::recursive);
  train::RunRequest req;
  req.resume = b;  // the moved copy; its stored config still names `a`
  pretrain::PretrainConfig cfg;
  auto s = pretrain_run(req, 3, &cfg);
  EXPECT_EQ(cfg.train.out, b);
  EXPECT_EQ(s.last_step, 3);
  EXPECT_TRUE(fs::exists(b + "/checkpoints/checkpoint_00000003.pt"));
  EXPECT_FALSE(fs::exists(a + "/checkpoints/checkpoint_00000003.pt"));
  EXPECT_TRUE(fs::exists(a + "/checkpoints/checkpoint_00000002.pt"));  // nothing rotated out of the original
  // A fork (--resume A --out C) goes into an empty folder, never into another run.
  train::RunRequest fork;
  fork.resume = a + "/";
  fork.src.flags = {{"train.out", b}};
  expect_error([&] { pretrain_run(fork, 3); }, {b, "already holds another run", a});
  const auto c = temp_dir("h_moved_c");
  fork.src.flags = {{"train.out", c}};
  EXPECT_EQ(pretrain_run(fork, 3).last_step, 3);
  EXPECT_TRUE(fs::exists(c + "/checkpoints/checkpoint_00000003.pt"));
  // A checkpoint outside any run folder needs --out.
  const auto loose = temp_dir("h_moved_loose") + "/x.pt";
  fs::copy_file(b + "/checkpoints/checkpoint_00000003.pt", loose);
  train::RunRequest lreq;
  lreq.resume = loose;
  expect_error([&] { pretrain_run(lreq); }, {loose, "not inside a run folder", "--out"});
}

// Runs made when train.conv_algorithm / train.channels_last defaulted to direct / false
// store those values in config.yaml; resumed, they go on in them, not in today's auto.
TEST(RunFolder, ResumeKeepsTheStoredNumericsOverNewDefaults) {
  set_threads(2);
  auto data = harness_images("h_numerics_data", 16);
  const auto a = temp_dir("h_numerics_a");
  pretrain::PretrainConfig first;
  pretrain_run(tiny_request(data, a, {"train.conv_algorithm=direct", "train.channels_last=false"}), 1, &first);
  EXPECT_EQ(first.train.numerics.conv_algorithm, "direct");
  EXPECT_NE(read_text(a + "/config.yaml").find("conv_algorithm: direct"), std::string::npos);
  train::RunRequest req;
  req.resume = a;
  pretrain::PretrainConfig resumed;
  EXPECT_EQ(pretrain_run(req, 2, &resumed).last_step, 2);
  EXPECT_EQ(resumed.train.numerics.conv_algorithm, "direct");
  EXPECT_EQ(resumed.train.numerics.channels_last, "false");
  // A fresh run that names neither takes the defaults.
  pretrain::PretrainConfig fresh;
  pretrain_run(tiny_request(data, temp_dir("h_numerics_b")), 1, &fresh);
  EXPECT_EQ(fresh.train.numerics.conv_algorithm, "auto");
  EXPECT_EQ(fresh.train.numerics.channels_last, "auto");
}

TEST(RunFolder, FreshRunRefusesAnOldRunAndResumeAloneTakesTheNewest) {
  set_threads(2);
  auto data = harness_images("h_fresh_data", 16);
  const auto a = temp_dir("h_fresh_a");
  pretrain_run(tiny_request(data, a), 1);
  const auto log_before = read_text(a + "/log.jsonl");
  expect_error([&] { pretrain_run(tiny_request(data, a), 2); },
               {a, "already holds a run", "log.jsonl", "checkpoints/checkpoint_00000001.pt", "--resume", "another --out"});
  EXPECT_EQ(read_text(a + "/log.jsonl"), log_before);  // nothing appended, nothing rotated
  // `--resume` with no file: the newest checkpoint of --out.
  auto req = tiny_request(data, a);
  req.resume = "";
  auto s = pretrain_run(req, 2);
  EXPECT_EQ(s.first_step, 1);
  EXPECT_EQ(s.last_step, 2);
  // An empty folder is fine for a fresh run.
  const auto empty = temp_dir("h_fresh_empty");
  EXPECT_EQ(pretrain_run(tiny_request(data, empty), 1).last_step, 1);
}

TEST(RunFolder, AutoResumeContinuesStartsOrStartsOverARunWithoutCheckpoint) {
  set_threads(2);
  auto data = harness_images("h_auto_data", 16);
  const auto a = temp_dir("h_auto_a");
  auto req = tiny_request(data, a);
  req.auto_resume = true;
  // A new folder: a fresh run; then its newest checkpoint, continued.
  auto s = pretrain_run(req, 1);
  EXPECT_EQ(s.first_step, 0);
  EXPECT_EQ(s.last_step, 1);
  s = pretrain_run(req, 2);
  EXPECT_EQ(s.first_step, 1);
  EXPECT_EQ(s.last_step, 2);
  EXPECT_EQ(logged(a, "step"), (std::vector<int64_t>{1, 2}));
  // A run that stopped before its first checkpoint (killed, or its disk full): a log alone.
  // Neither a fresh run nor --resume can take it; both say what can.
  fs::remove_all(a + "/checkpoints");
  fs::remove(a + "/summary.json");
  const auto old_log = read_text(a + "/log.jsonl");
  expect_error([&] { pretrain_run(tiny_request(data, a), 1); },
               {a + ": holds a run that stopped before its first checkpoint", "--auto-resume", "another --out"});
  auto bare = tiny_request(data, a);
  bare.resume = "";
  expect_error([&] { pretrain_run(bare, 1); },
               {a + ": no checkpoint to resume: its run stopped before the first checkpoint", "--auto-resume"});
  train::RunRequest named;
  named.resume = a;
  expect_error([&] { pretrain_run(named, 1); }, {a + ": no checkpoint to resume", "--auto-resume"});
  EXPECT_EQ(read_text(a + "/log.jsonl"), old_log);  // the refusals changed nothing
  // --auto-resume starts it again, from step 0, its old log kept aside and said so.
  testing::internal::CaptureStderr();
  s = pretrain_run(req, 1);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(s.first_step, 0);
  EXPECT_EQ(s.last_step, 1);
  EXPECT_NE(err.find(a + ": its run stopped before the first checkpoint; starting it again (its log is now "
                         "log.interrupted.jsonl)"),
            std::string::npos)
      << err;
  EXPECT_EQ(read_text(a + "/log.interrupted.jsonl"), old_log);
  EXPECT_EQ(logged(a, "step"), (std::vector<int64_t>{1}));
  // Once more: the first log set aside is not replaced.
  fs::remove_all(a + "/checkpoints");
  EXPECT_EQ(pretrain_run(req, 1).first_step, 0);
  EXPECT_EQ(read_text(a + "/log.interrupted.jsonl"), old_log);
  EXPECT_TRUE(fs::exists(a + "/log.interrupted.2.jsonl"));
  // A folder whose run has weights is never started over (best.pt alone, a finetuning run
  // whose checkpoints were deleted): refused as any run.
  const auto b = temp_dir("h_auto_b");
  pretrain_run(tiny_request(data, b), 1);
  fs::rename(train::latest_checkpoint(b), b + "/best.pt");
  auto over = tiny_request(data, b);
  over.auto_resume = true;
  // --resume would fail there: the refusals say what best.pt serves for instead.
  expect_error([&] { pretrain_run(over, 1); },
               {b + ": already holds a run (best.pt, log.jsonl) with no checkpoint to continue from; evaluate them with "
                    "cp2 evaluate " + b + ", or finetune from them into another folder with --init " + b + "/best.pt"});
  auto resume_b = tiny_request(data, b);
  resume_b.resume = b;
  expect_error([&] { pretrain_run(resume_b, 1); },
               {b + ": no checkpoint to resume: it holds best.pt (weights only, no optimizer state)", "--init " + b + "/best.pt"});
  auto both = req;
  both.resume = a;
  expect_error([&] { pretrain_run(both, 1); }, {"--auto-resume and --resume: give one"});
}

TEST(RunFolder, TempFilesOfKilledWritesAreRemovedOnOpening) {
  // temp_path() names, and only those, carry a pid.
  EXPECT_EQ(io::temp_path_pid(fs::path(io::temp_path("/x/checkpoint_00000002.pt")).filename().string()), getpid());
  EXPECT_EQ(io::temp_path_pid("summary.json.4194304.tmp"), 4194304);
  for (const char* other : {"notes.tmp", "a.12x.tmp", ".123.tmp", "a.123.tmp.bak", "a.123", "a..tmp", "a.12345678901.tmp"})
    EXPECT_EQ(io::temp_path_pid(other), 0) << other;
  set_threads(2);
  auto data = harness_images("h_temp_data", 16);
  const auto a = temp_dir("h_temp_a");
  pretrain_run(tiny_request(data, a), 1);
  // 4194304 is above every Linux pid (pid_max <= 2^22): a process that cannot be alive.
  const std::string dead_ckpt = a + "/checkpoints/checkpoint_00000002.pt.4194304.tmp",
                    dead_json = a + "/summary.json.4194304.tmp",
                    live = a + "/config.yaml." + std::to_string(getppid()) + ".tmp", other = a + "/notes.tmp";
  std::ofstream(dead_ckpt) << std::string(3 << 20, 'x');
  std::ofstream(dead_json) << "{";
  std::ofstream(live) << "x";
  std::ofstream(other) << "x";
  auto req = tiny_request(data, a);
  req.resume = "";
  testing::internal::CaptureStderr();
  EXPECT_EQ(pretrain_run(req, 2).last_step, 2);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find(a + ": removed 2 unfinished files (3.0 MiB) of a write that was killed: "
                         "checkpoints/checkpoint_00000002.pt.4194304.tmp, ..."),
            std::string::npos)
      << err;
  EXPECT_FALSE(fs::exists(dead_ckpt));
  EXPECT_FALSE(fs::exists(dead_json));
  EXPECT_TRUE(fs::exists(live));  // a live process's write is left alone
  EXPECT_TRUE(fs::exists(other));
  // Nothing to remove: nothing said.
  testing::internal::CaptureStderr();
  EXPECT_EQ(pretrain_run(req, 3).last_step, 3);
  EXPECT_EQ(testing::internal::GetCapturedStderr().find("unfinished"), std::string::npos);
}

TEST(RunFolder, InitTakesARunFolderAsItsNewestCheckpoint) {
  set_threads(2);
  auto data = harness_images("h_init_data", 16);
  const auto a = temp_dir("h_init_a");
  pretrain_run(tiny_request(data, a), 2);
  const auto newest = a + "/checkpoints/checkpoint_00000002.pt";
  ASSERT_TRUE(fs::exists(newest));
  // Finetuning from a pretraining run folder: its config records the checkpoint itself.
  seg::FinetuneConfig fc;
  train::RunRequest freq;
  freq.src.file = std::string(CP2_CONFIGS) + "/cpu_seg_tiny.yaml";
  freq.src.flags = {{"data.root", data}, {"train.init", a + "/"}, {"train.out", temp_dir("h_init_ft")}};
  train::resolve_run(fc, freq, train::finetune_kind());
  EXPECT_EQ(fc.train.init, newest);
  // Quick Tuning from one: the run starts from it (a step is taken).
  pretrain::PretrainConfig pc;
  auto qt = tiny_request(data, temp_dir("h_init_qt"));
  qt.src.flags.emplace_back("train.init", a);
  EXPECT_EQ(pretrain_run(qt, 1, &pc).last_step, 1);
  EXPECT_EQ(pc.train.init, newest);
  EXPECT_NE(read_text(pc.train.out + "/config.yaml").find(newest), std::string::npos);
  // A file is kept as given; a folder without checkpoints is an error naming it.
  freq.src.flags = {{"data.root", data}, {"train.init", newest}};
  train::resolve_run(fc, freq, train::finetune_kind());
  EXPECT_EQ(fc.train.init, newest);
  const auto empty = temp_dir("h_init_empty");
  freq.src.flags = {{"data.root", data}, {"train.init", empty}};
  expect_error([&] { train::resolve_run(fc, freq, train::finetune_kind()); },
               {"train.init", empty, "checkpoints/checkpoint_*.pt"});
}

TEST(RunFolder, SecondRunOnAFolderFailsNamingTheHolder) {
  const auto dir = temp_dir("h_lock");
  train::RunFolder holder(dir, /*resuming=*/false);
  expect_error([&] { train::RunFolder second(dir, /*resuming=*/true); },
               {dir, "in use by another cp2 run", "pid " + std::to_string(getpid())});
}

TEST(RunFolder, LogContinuesFromTheCheckpointAndStoredConfigIsWhatRan) {
  set_threads(2);
  auto data = harness_images("h_log_data", 16);
  const auto a = temp_dir("h_log_a");
  // Checkpoints at steps 2 and 3; losing the newest emulates a kill after step 3 was logged.
  pretrain::PretrainConfig cfg;
  train::resolve_run(cfg, tiny_request(data, a, {"train.checkpoint_every_iters=2"}), train::pretrain_kind());
  cfg.train.epochs = 3;  // changed after the YAML was made: the run must store what ran
  pretrain::RunControl rc;
  rc.max_steps = 3;
  rc.progress = false;
  pretrain::run_pretrain(cfg, rc);
  EXPECT_NE(read_text(a + "/config.yaml").find("epochs: 3"), std::string::npos);
  fs::remove(a + "/checkpoints/checkpoint_00000003.pt");
  EXPECT_EQ(logged(a, "step"), (std::vector<int64_t>{1, 2, 3}));
  train::RunRequest req;
  req.resume = a;
  auto s = pretrain_run(req, 4);
  EXPECT_EQ(s.first_step, 2);
  EXPECT_EQ(logged(a, "step"), (std::vector<int64_t>{1, 2, 3, 4}));
}

TEST(RunFolder, ResumingAFinishedRunChangesNothing) {
  set_threads(2);
  auto data = harness_images("h_done_data", 16);
  const auto a = temp_dir("h_done_a");
  auto first = pretrain_run(tiny_request(data, a, {"train.epochs=1"}));
  ASSERT_TRUE(first.finished);
  const auto summary = read_text(a + "/summary.json"), log = read_text(a + "/log.jsonl");
  EXPECT_NE(summary.find("\"final_loss\": "), std::string::npos);
  train::RunRequest req;
  req.resume = a;
  auto again = pretrain_run(req);
  EXPECT_TRUE(again.already_finished);
  EXPECT_TRUE(again.losses.empty());
  EXPECT_EQ(read_text(a + "/summary.json"), summary);
  EXPECT_EQ(read_text(a + "/log.jsonl"), log);
}

TEST(RunFolder, ResumeMixUpsSayWhatToDo) {
  set_threads(2);
  auto data = harness_images("h_mix_data", 16);
  const auto a = temp_dir("h_mix_a");
  pretrain_run(tiny_request(data, a), 1);
  // An architecture change on resume: one line naming the key, not hundreds of tensors.
  train::RunRequest req;
  req.resume = a;
  req.src.sets = {"model.arch=34"};
  try {
    pretrain_run(req, 2);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("model.arch: the checkpoint has 18, asked 34"), std::string::npos) << msg;
    EXPECT_NE(msg.find("--init"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  // A resume after the dataset changed: warned with both counts.
  for (int i = 0; i < 2; ++i)
    fs::copy_file(data::list_images(data)[static_cast<size_t>(i)], data + "/extra_" + std::to_string(i) + ".jpg");
  train::RunRequest grown;
  grown.resume = a;
  testing::internal::CaptureStderr();
  auto s = pretrain_run(grown, 2);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(s.last_step, 2);
  EXPECT_NE(err.find("dataset changed"), std::string::npos) << err;
  EXPECT_NE(err.find("16 images then, 18 now"), std::string::npos) << err;
  // A finetune checkpoint given to pretraining's resume.
  const auto seg_ckpt = fixture("seg_r18_os16.pt");
  train::RunRequest wrong;
  wrong.resume = seg_ckpt;
  wrong.src.flags = {{"train.out", temp_dir("h_mix_b")}};
  expect_error([&] { pretrain_run(wrong); }, {seg_ckpt, "not a cp2 pretraining checkpoint", "--init"});
  // Keys named as users write them.
  expect_error([&] { pretrain_run(tiny_request(data, temp_dir("h_mix_c"), {"data.prefetch=0"})); },
               {"data.prefetch: expected >= 1, found 0"});
  // data.workers is a count or auto, so a negative one is refused as its value is read.
  expect_error([&] { pretrain_run(tiny_request(data, temp_dir("h_mix_c"), {"data.workers=-1"})); },
               {"--set: key 'data.workers': expected auto or an integer >= 0, found '-1'"});
  // ... after where the value came from: --set, a flag, the config file.
  expect_error([&] { pretrain_run(tiny_request(data, temp_dir("h_mix_c"), {"model.arch=7"})); },
               {"--set: model.arch: expected one of 18, 34, 50, 101, found 7"});
  expect_error([&] { pretrain_run(tiny_request(data, temp_dir("h_mix_c"), {"model.queue=0"})); },
               {"--set: model.queue: expected >= 1, found 0"});
  expect_error([&] { pretrain_run(tiny_request(data, temp_dir("h_mix_c"), {"model.query_bn_splits=0"})); },
               {"--set: model.query_bn_splits: expected >= 1, found 0"});
  auto flagged = tiny_request(data, temp_dir("h_mix_c"));
  flagged.src.flags.emplace_back("train.batch", "0");
  expect_error([&] { pretrain_run(flagged); }, {"command line: train.batch: expected >= 1, found 0"});
  const auto bad_yaml = temp_dir("h_mix_d") + "/bad.yaml";
  std::ofstream(bad_yaml) << "model:\n  arch: 10\n";
  auto from_file = tiny_request(data, temp_dir("h_mix_c"));
  from_file.src.file = bad_yaml;
  expect_error([&] { pretrain_run(from_file); }, {bad_yaml + ": model.arch: expected one of 18, 34, 50, 101, found 10"});
}

// A tiny generated VOC-layout set.
std::string seg_data(const std::string& name, int train, int val) {
  const auto dir = temp_dir(name);
  seg::SynthSegOptions so;
  so.train = train;
  so.val = val;
  so.width = 48;
  so.height = 40;
  seg::write_synthetic_dataset(dir, so);
  return dir;
}

// The finetune config on it, resolved as `cp2 finetune` does.
seg::FinetuneConfig seg_cfg(const std::string& data, const std::string& out, std::vector<std::string> sets) {
  seg::FinetuneConfig cfg;
  train::RunRequest req;
  req.src.file = std::string(CP2_CONFIGS) + "/cpu_seg_tiny.yaml";
  req.src.flags = {{"data.root", data}, {"train.out", out}};
  req.src.sets = std::move(sets);
  train::resolve_run(cfg, req, train::finetune_kind());
  return cfg;
}

TEST(RunFolder, CheckpointComesBeforeAnEvaluationThatFails) {
  set_threads(2);
  const auto data = seg_data("h_eval_data", 4, 2);
  const auto out = temp_dir("h_eval_run");
  const std::vector<std::string> sets = {"train.iters=4", "train.eval_every=2", "train.checkpoint_every=2"};
  auto cfg = seg_cfg(data, out, sets);
  // An unreadable validation image: evaluation at iteration 2 fails.
  const std::string val_img = data + "/JPEGImages/val_000000.jpg";
  const std::string good = read_text(val_img);
  { std::ofstream(val_img, std::ios::binary) << "not a jpeg"; }
  seg::FinetuneControl fc;
  fc.progress = false;
  expect_error([&] { seg::run_finetune(cfg, fc); }, {"val_000000.jpg"});
  EXPECT_TRUE(fs::exists(out + "/checkpoints/checkpoint_00000002.pt"));  // the training is kept
  auto summary = nlohmann::json::parse(read_text(out + "/summary.json"));
  EXPECT_FALSE(summary["finished"].get<bool>());
  EXPECT_NE(summary["error"].get<std::string>().find("val_000000.jpg"), std::string::npos);
  // --check-data lists the bad file up front.
  seg::FinetuneControl check;
  check.progress = false;
  check.check_data = true;
  auto cfg2 = seg_cfg(data, temp_dir("h_eval_check"), sets);
  expect_error([&] { seg::run_finetune(cfg2, check); }, {"--check-data: 1 of 6", "val_000000.jpg"});
  // Mended, the resumed run first makes up the evaluation of iteration 2.
  { std::ofstream(val_img, std::ios::binary) << good; }
  fc.resume = out;
  auto s = seg::run_finetune(cfg, fc);
  EXPECT_TRUE(s.finished);
  EXPECT_EQ(logged(out, "iteration", /*evals=*/true), (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(logged(out, "iteration"), (std::vector<int64_t>{4}));  // log_every 10: the last iteration only
  auto ck = io::load_checkpoint(s.last_checkpoint).root;
  EXPECT_EQ(ck->get("evaluated_iteration")->i, 4);
  EXPECT_GE(s.best_miou, 0.0);
  EXPECT_LE(s.best_miou, 100.0);
}

TEST(RunFolder, FinetuneCheckpointsOfTheFractionEraResumeInPercent) {
  set_threads(2);
  const auto data = seg_data("h_fmt_data", 4, 1);
  const auto out = temp_dir("h_fmt_run");
  auto cfg = seg_cfg(data, out, {"train.iters=6", "train.eval_every=2", "train.checkpoint_every=1"});
  seg::FinetuneControl fc;
  fc.progress = false;
  fc.max_iters = 3;  // evaluated at 2; checkpoint 3 carries that best
  auto first = seg::run_finetune(cfg, fc);
  ASSERT_GT(first.best_miou, 0.0);
  // As cp2 wrote it before percent: format 1, mIoU as a fraction.
  const auto ck = out + "/checkpoints/checkpoint_00000003.pt";
  auto root = io::load_checkpoint(ck).root;
  root->get("cp2")->get("format")->i = 1;
  root->get("best")->get("miou")->f = first.best_miou / 100;
  root->get("miou")->f = first.best_miou / 100;
  io::save_checkpoint(ck, root);
  fc.resume = out;  // continues to iteration 3 at once: no step, no evaluation, just the summary
  auto second = seg::run_finetune(cfg, fc);
  EXPECT_EQ(second.first_iter, 3);
  EXPECT_NEAR(second.best_miou, first.best_miou, 1e-9);
  EXPECT_EQ(second.best_iter, 2);
}

TEST(RunFolder, NonFiniteFinetuneLossIsNumberedAsProgressShowsIt) {
  set_threads(2);
  const auto data = seg_data("h_nan_data", 4, 1);
  // The error of a finetuning run that diverges at lr 1e30 (with `extra` keys set).
  auto diverge = [&](const std::string& name, std::vector<std::string> extra) {
    std::vector<std::string> keys{"train.iters=3", "optim.lr=1e30", "optim.min_lr=0"};
    keys.insert(keys.end(), extra.begin(), extra.end());
    seg::FinetuneControl fc;
    fc.progress = false;
    try {
      seg::run_finetune(seg_cfg(data, temp_dir(name), keys), fc);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    ADD_FAILURE() << "expected a non-finite loss";
    return std::string();
  };
  auto msg = diverge("h_nan_run", {});
  ASSERT_EQ(msg.rfind("iteration ", 0), 0u) << msg;
  EXPECT_GE(std::stoll(msg.substr(10)), 2) << msg;  // the first iteration (1) is finite; never "iteration 0"
  // With loss scaling the non-finite loss is a skipped step, until the overflow has reached
  // BatchNorm's running statistics: then the run stops, saying why skipping cannot help.
  msg = diverge("h_nan_scaled", {"train.loss_scale=dynamic"});
  ASSERT_EQ(msg.rfind("iteration ", 0), 0u) << msg;
  EXPECT_NE(msg.find("BatchNorm's running statistics took non-finite values"), std::string::npos) << msg;
}

// The rule after a non-finite loss: go on only where loss scaling skipped the step and the
// buffers stayed finite.
TEST(RunFolder, NonFiniteStepGoesOnOnlyWhenSkippedWithFiniteBuffers) {
  train::HarnessOptions o;
  o.kind = train::finetune_kind();
  o.out = temp_dir("h_skip_rule");
  o.unit = "iteration";
  o.progress = false;
  train::Harness h(o);
  train::Optimizer scaled({}, {}), plain({}, {});
  scaled.enable_loss_scaling(1024);
  scaled.skip_step();  // as the trainers do before asking
  EXPECT_NO_THROW(h.non_finite_step(5, "loss nan", scaled, /*buffers_finite=*/true));
  expect_error([&] { h.non_finite_step(6, "loss nan", scaled, false); },
               {"iteration 6: loss is not finite (loss nan; the forward pass overflowed", "running statistics",
                "resume from the last checkpoint in bf16 or fp32"});
  expect_error([&] { h.non_finite_step(7, "loss inf", plain, true); },
               {"iteration 7: loss is not finite (loss inf); stopped without updating"});
  // A CUDA graph's replay without loss scaling has applied its update: said, not denied.
  expect_error([&] { h.non_finite_step(8, "loss inf", plain, true, /*updated=*/true); },
               {"iteration 8: loss is not finite (loss inf); stopped after its update, which a CUDA graph's "
                "replay applies whatever the loss (in memory only: nothing of it is saved). No checkpoint"});
}

}  // namespace
}  // namespace cp2::test

namespace cp2::test {
namespace {

// The starved-loader watch: each window judged on its own share (an early quiet or slow
// stretch does not dilute or trigger a later verdict); under auto the first verdict raises
// the loader to normal priority and the watch goes on at normal; advice is said once,
// naming the key that helps for the loader's priority.
TEST(DataWaitWatch, RaisesAutoThenAdvisesOnceNamingTheKey) {
  train::DataWaitWatch w("idle", 2, /*window_s=*/60, /*min_share=*/0.25);
  EXPECT_EQ(w.update(5, 30).message, "");    // no whole window yet
  EXPECT_EQ(w.update(10, 70).message, "");   // 0-70 s: 14 % waiting
  EXPECT_EQ(w.update(40, 100).message, "");  // 70-100 s: 100 % so far, but only 30 s
  const auto a = w.update(40, 130);          // 70-130 s: 30 of 60 s waiting
  EXPECT_FALSE(a.raise_priority);
  EXPECT_NE(a.message.find("50 % of the last 60 s (30.0 s)"), std::string::npos) << a.message;
  EXPECT_NE(a.message.find("2 loader threads run at data.priority: idle (SCHED_IDLE)"), std::string::npos) << a.message;
  EXPECT_NE(a.message.find("--set data.priority=auto"), std::string::npos) << a.message;
  EXPECT_EQ(w.update(100, 200).message, "");  // said once per run

  train::DataWaitWatch autow("auto", 2, 60, 0.25);
  const auto r = autow.update(45, 60);
  EXPECT_TRUE(r.raise_priority);
  EXPECT_NE(r.message.find("75 % of the last 60 s"), std::string::npos) << r.message;
  EXPECT_NE(r.message.find("normal priority from now on (data.priority: auto"), std::string::npos) << r.message;
  EXPECT_EQ(autow.update(50, 120).message, "");  // raised: 8 % waiting now
  const auto n = autow.update(80, 180);          // still starved at normal: the loader is too slow
  EXPECT_FALSE(n.raise_priority);
  EXPECT_NE(n.message.find("2 loader threads (data.priority: normal) are slower than the step; more of them "
                           "(data.workers)"), std::string::npos) << n.message;
  EXPECT_EQ(autow.update(140, 240).message, "");

  train::DataWaitWatch low("low", 1, 60, 0.25);
  EXPECT_NE(low.update(20, 60).message.find("1 loader thread runs at data.priority: low (nice 19)"), std::string::npos);
  train::DataWaitWatch normal("normal", 1, 60, 0.25);
  EXPECT_EQ(normal.update(14, 60).message, "");  // 23 %: under the bar
  EXPECT_NE(normal.update(44, 120).message.find("1 loader thread (data.priority: normal) is slower"), std::string::npos);
  train::DataWaitWatch inline_loading("auto", 0, 60, 0.25);
  const auto z = inline_loading.update(60, 60);
  EXPECT_FALSE(z.raise_priority);
  EXPECT_NE(z.message.find("training thread (data.workers: 0)"), std::string::npos);

  // A 50 s evaluation inside a window is left out: 20 s waited in 40 s of training is 50 %,
  // not 20 of 90 s (22 %, under the bar).
  train::DataWaitWatch ev("normal", 2, 30, 0.25);
  ev.exclude(50);
  const auto e = ev.update(20, 90);
  EXPECT_NE(e.message.find("50 % of the last 40 s (20.0 s)"), std::string::npos) << e.message;
  train::DataWaitWatch plain("normal", 2, 30, 0.25);
  EXPECT_EQ(plain.update(20, 90).message, "");
}

}  // namespace
}  // namespace cp2::test

TEST(Progress, BarFillsInProportionAndClamps) {
  EXPECT_EQ(cp2::train::bar(3, 10, 10), "[###.......]");
  EXPECT_EQ(cp2::train::bar(0, 10, 4), "[....]");
  EXPECT_EQ(cp2::train::bar(15, 10, 4), "[####]");  // past the end: full, never wider
  EXPECT_EQ(cp2::train::bar(0, 0, 3), "[...]");     // no total yet
  EXPECT_EQ(cp2::train::bar(1, 3), "[######..............]");  // default width 20
}

// Both loops' log records end with the same figures, counted the same way: images/s over this
// session's steps, the ETA at that pace, and fp16's loss scale only where it is kept.
TEST(Progress, PaceFieldsAreWhatBothLoopsLog) {
  const cp2::train::Pace pace{3, 7, 4, 2.0};  // 3 steps of 4 images in 2 s, 7 to go
  EXPECT_DOUBLE_EQ(pace.img_per_s(), 6.0);
  EXPECT_DOUBLE_EQ(pace.eta_s(), 7 * 2.0 / 3);
  EXPECT_DOUBLE_EQ((cp2::train::Pace{0, 5, 4, 0.0}.eta_s()), 0.0);  // before the first step: no ETA, no NaN
  cp2::train::NamedTensors ps{{"w", torch::zeros({2}).set_requires_grad(true)}};
  cp2::train::Optimizer opt(ps, cp2::train::OptimOptions{});
  auto j = cp2::train::pace_fields(pace, 0.5, 0.25, opt);
  EXPECT_DOUBLE_EQ(j.at("img_per_s").get<double>(), 6.0);
  EXPECT_DOUBLE_EQ(j.at("data_wait_s").get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(j.at("elapsed_s").get<double>(), 2.0);
  EXPECT_DOUBLE_EQ(j.at("grad_allreduce_wait_s").get<double>(), 0.25);
  EXPECT_GT(j.at("rss_mib").get<double>(), 1.0);  // this process's resident set, in MiB
  EXPECT_EQ(j.size(), 5u) << j.dump();
  opt.enable_loss_scaling(1024);
  j = cp2::train::pace_fields(pace, 0.5, 0.25, opt);
  EXPECT_DOUBLE_EQ(j.at("loss_scale").get<double>(), 1024);
  EXPECT_EQ(j.at("skipped_steps").get<int64_t>(), 0);
}
