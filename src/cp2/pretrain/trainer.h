// The pretraining loop (SPEC §5): data → CP² step → SGD/AdamW with cosine decay, with
// Quick Tuning initialisation, atomic checkpoints, exact resume, progress and JSONL logs.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "cp2/pretrain/config.h"

namespace cp2::dist {
class Comm;
class GradientReducer;
}  // namespace cp2::dist

namespace cp2::pretrain {

// How to run: the run folder is cfg.train.out (a resumed run writes there too, never
// into the folder its checkpoint names: see train::locate_resume).
struct RunControl {
  std::string resume;      // checkpoint file to continue; "" = a fresh run
  std::string dump_batch;  // write the first batch there and stop
  int64_t max_steps = 0;   // stop after this global step, writing a checkpoint (0 = run to the end)
  bool check_data = false;  // read every image first; stop listing the unreadable ones
  bool progress = true;    // progress bar / log lines on stderr
  // Data parallel over these processes (null or world size 1: one process). Rank 0 writes
  // the run folder; every rank resumes from rank 0's `resume` file.
  std::shared_ptr<dist::Comm> comm;
};

struct RunSummary {
  int64_t first_step = 0, last_step = 0;  // global steps run: [first_step, last_step)
  std::vector<double> losses;             // total loss per step run
  std::string last_checkpoint;
  double seconds = 0, images_per_s = 0;
  int64_t skipped_images = 0;
  bool finished = false;  // reached the last epoch (not stopped by max_steps or a signal)
  bool already_finished = false;  // resumed a finished run: nothing ran, nothing was written
  int signal = 0;                 // SIGINT/SIGTERM that stopped the run (checkpoint written)
};

// A model as a fresh run starts it: weights and queue drawn from `seed` (mmsegmentation's
// init for the query encoder), key encoder = query encoder.
CP2Model make_model(const CP2Options& o, uint64_t seed);
// The query encoder's parameters under their state-dict names (the optimizer's keys).
train::NamedTensors query_parameters(CP2ModelImpl& m);

struct StepResult {
  LossParts parts;
  double loss = 0;
  bool finite = true;  // false: nothing was updated
};

// One optimisation step on a batch (already on the model's device): forward (momentum
// update, both encoders, losses), then — if the loss is finite — backward, optimizer
// step at `lr`, enqueue. The loop, the benchmark and the tests share it. Multi-process
// (the model's comm, world size > 1): the logged values are means over ranks (so every
// rank agrees on finiteness), `reducer` averages the gradients.
StepResult train_step(CP2ModelImpl& model, train::Optimizer& opt, const data::Batch& batch, double lr,
                      dist::GradientReducer* reducer = nullptr);

// Runs (or resumes) a pretraining job in cfg.train.out. Throws cp2::Error on bad input,
// and on a non-finite loss (naming the step; the last good checkpoint stays); a failed
// run's summary.json holds the error.
RunSummary run_pretrain(const PretrainConfig& cfg, const RunControl& rc);

}  // namespace cp2::pretrain
