// The one training harness under both loops (pretraining, finetuning): each loop keeps
// its step and its evaluation; the harness owns what a run folder users can trust needs:
// the lock, fresh-run refusal, resume (kind, model-key and dataset checks, the log
// continued from the checkpoint), atomic checkpoints with rotation, config.yaml, the
// summary for every exit (finished, stopped, signalled, failed), the stop signals (signals.h), and
// one numbering of steps (1-based, as the progress line shows).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "cp2/common.h"
#include "cp2/train/progress.h"
#include "cp2/train/run_folder.h"
#include "cp2/train/signals.h"
#include "cp2/train/state.h"

namespace cp2::dist {
class Comm;
}

namespace cp2::train {

class Optimizer;

struct HarnessOptions {
  CheckpointKind kind;
  std::string out;          // run folder
  std::string resume;       // checkpoint file to continue ("" = a fresh run)
  std::string config_yaml;  // the resolved config that runs (config.yaml; stored in checkpoints)
  std::string unit = "step";  // the log's position key: "step" or "iteration"
  bool progress = true;
  int64_t log_every = 10;
  int keep_last = 2;
  // Data parallel: only rank 0 (main) holds the folder's lock and writes the log,
  // checkpoints, config and summary; the other ranks load the same `resume` file (rank
  // 0's, already resolved to a checkpoint) and write nothing.
  bool main = true;
  // A fresh run (`--auto-resume` without a checkpoint) may start over a run that stopped
  // before its first checkpoint; its log.jsonl is renamed log.interrupted.jsonl.
  bool take_over = false;
};

class Harness {
 public:
  // Locks the run folder (refusing a fresh run where a run is) and, when resuming, loads
  // the checkpoint (kind checked, model keys compared with the stored config).
  explicit Harness(HarnessOptions o);
  ~Harness();

  bool resuming() const { return !o_.resume.empty(); }
  const py::ObjPtr& resumed() const { return resumed_; }  // the resumed checkpoint's root
  // Drops the resumed checkpoint once the loop has taken its state, and hands its memory back
  // to the system: held for the whole run it kept a second copy of every weight, buffer and
  // momentum (a resumed cpu_tiny R18 run: 1171 MiB RSS against a fresh run's 817).
  void release_resumed();
  const std::string& resumed_path() const { return o_.resume; }
  Progress& progress() { return progress_; }
  const fs::path& path() const { return path_; }  // the run folder
  bool main() const { return o_.main; }
  const HarnessOptions& options() const { return o_; }

  // Warns when a resumed run's dataset no longer has the size stored at `key`.
  void check_dataset(const std::string& key, int64_t now, const std::string& what);
  // The run starts (or continues) at `position`: config.yaml written, the log kept up to
  // `position` (records with unit <= position that `keep` also accepts), the stop signals
  // handled, the clock started.
  void start(int64_t position, const std::function<bool(const nlohmann::json&)>& keep = nullptr);
  void log(const nlohmann::json& record);
  // An atomic checkpoint at `position`, rotated; remembered as the last checkpoint.
  std::string save(int64_t position, const py::ObjPtr& root);
  const std::string& last_checkpoint() const { return last_; }
  // RUN/<name>, atomically (rank 0 only).
  void write(const std::string& name, const std::string& text) const;
  // The stop signal received since start() (0 if none).
  int stop_signal() const;
  // Whether any rank received one: every rank must call it at the same point (one small
  // all-reduce), so that a signal reaching one rank a step before another stops them at
  // the same step instead of leaving one waiting in the next step's collectives.
  bool stop_agreed() const;
  // The non-finite-loss error for the step numbered `position` (1-based). `updated`: the step
  // applied its update anyway (a CUDA graph's replay without loss scaling, which cannot skip);
  // the message then says so, and that nothing of it is saved.
  [[noreturn]] void non_finite(int64_t position, const std::string& detail, bool updated = false) const;
  // After a step whose loss is not finite: stops the run as non_finite() does, unless `opt`
  // scales the loss (it has skipped the step then, fp16's forward overflow, as GradScaler's
  // loop) and the model's buffers (BatchNorm's running statistics) stayed finite on every
  // rank; then says so and returns.
  void non_finite_step(int64_t position, const std::string& detail, const Optimizer& opt, bool buffers_finite,
                       bool updated = false);
  // summary.json (atomic): `fields` plus finished, stopped_by and checkpoint.
  void summary(nlohmann::json fields, bool finished) const;
  // summary.json of a run that failed: `fields` plus the error.
  void failed(const std::string& error, nlohmann::json fields) const;
  double seconds() const { return seconds_since(t0_); }

 private:
  HarnessOptions o_;
  std::unique_ptr<RunFolder> folder_;  // rank 0 only
  fs::path path_;
  Progress progress_;
  py::ObjPtr resumed_;
  std::unique_ptr<StopSignals> signals_;
  std::string last_;
  Clock::time_point t0_ = Clock::now();
  dist::Comm* comm_ = nullptr;  // set by open_harness; outlives the harness
  friend std::unique_ptr<Harness> open_harness(dist::Comm& comm, HarnessOptions o);
};

// The harness of a data-parallel run: rank 0 opens the run folder (and resolves --resume
// to a checkpoint file), the other ranks then load that same file; a failure on any rank
// fails every rank with its message. World size 1: Harness(o).
std::unique_ptr<Harness> open_harness(dist::Comm& comm, HarnessOptions o);

// How far a loop has come this session, for its log records, progress line and summary: both loops
// count rate and ETA the same way.
struct Pace {
  int64_t done = 0;       // steps (iterations) run this session
  int64_t left = 0;       // steps still to run to the end of the run
  int64_t batch = 1;      // images per step, all processes together
  double elapsed_s = 0;   // this session's wall time
  double img_per_s() const;
  double eta_s() const;   // left steps at this session's pace
};

// The tail every log record of both loops carries: img_per_s, data_wait_s, elapsed_s,
// grad_allreduce_wait_s, rss_mib, and loss_scale / skipped_steps where `opt` scales the loss
// (fp16).
nlohmann::json pace_fields(const Pace& pace, double data_wait_s, double allreduce_wait_s, const Optimizer& opt);

// "key: stored A, asked B" for each model.* key on which two resolved configs differ.
std::vector<std::string> model_key_changes(const std::string& stored_yaml, const std::string& yaml);

}  // namespace cp2::train

namespace cp2::train {

// --check-data: calls read(i) for i in [0, n) on `threads` threads; returns "what: error"
// for each item that throws (in index order). `progress` sees (done, n).
std::vector<std::string> check_items(int64_t n, const std::function<void(int64_t)>& read, int threads,
                                     const std::function<void(int64_t, int64_t)>& progress = nullptr);

}  // namespace cp2::train
