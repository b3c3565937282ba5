// The finetuning loop (SPEC §5, mmsegmentation's recipe): DeepLabV3 from a pretrained
// checkpoint (or scratch), SGD with poly decay per iteration, cross-entropy ignoring 255,
// evaluation every N iterations keeping best.pt, atomic checkpoints, exact resume.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "cp2/seg/config.h"
#include "cp2/seg/step.h"

namespace cp2::dist {
class Comm;
}

namespace cp2::seg {

// How to run: the run folder is cfg.train.out (see train::resolve_run for resume).
struct FinetuneControl {
  std::string resume;       // checkpoint file to continue; "" = fresh
  bool take_over = false;   // a fresh run may start over a run that stopped before its first checkpoint
  int64_t max_iters = 0;    // stop after this iteration, with a checkpoint (0 = run to the end)
  bool check_data = false;  // read every train and val image and label first; stop listing the bad ones
  bool progress = true;
  // Data parallel with synchronised BatchNorm (the authors' SyncBN) over these processes;
  // null or world size 1: one process. Rank 0 writes the run folder.
  std::shared_ptr<dist::Comm> comm;
};

struct FinetuneSummary {
  int64_t first_iter = 0, last_iter = 0;
  std::vector<double> losses;
  double best_miou = -1;  // percent; -1 = no evaluation yet
  int64_t best_iter = 0;
  double last_miou = -1;  // percent
  std::string last_checkpoint, best_checkpoint;
  double seconds = 0, images_per_s = 0;
  bool finished = false;
  bool already_finished = false;  // resumed a finished run: nothing ran, nothing was written
  int signal = 0;                 // the stop signal that ended the run (checkpoint written)
};

// Runs (or resumes) finetuning in cfg.train.out. Every checkpoint is written before the
// evaluation of its iteration (an evaluation that fails loses no training); a resumed
// run first makes up an evaluation its checkpoint missed.
FinetuneSummary run_finetune(const FinetuneConfig& cfg, const FinetuneControl& fc);

}  // namespace cp2::seg
