// The pretraining loop (SPEC §5): data → CP² step → SGD/AdamW with cosine decay, with
// Quick Tuning initialisation, atomic checkpoints, exact resume, progress and JSONL logs.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "cp2/pretrain/config.h"
#include "cp2/pretrain/step.h"

namespace cp2::dist {
class Comm;
}

namespace cp2::pretrain {

// How to run: the run folder is cfg.train.out (a resumed run writes there too, never
// into the folder its checkpoint names: see train::locate_resume).
struct RunControl {
  std::string resume;      // checkpoint file to continue; "" = a fresh run
  bool take_over = false;  // a fresh run may start over a run that stopped before its first checkpoint
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
  int signal = 0;                 // the stop signal that ended the run (checkpoint written)
};

// Runs (or resumes) a pretraining job in cfg.train.out. Throws cp2::Error on bad input,
// and on a non-finite loss (naming the step; the last good checkpoint stays); a failed
// run's summary.json holds the error.
RunSummary run_pretrain(const PretrainConfig& cfg, const RunControl& rc);

}  // namespace cp2::pretrain
