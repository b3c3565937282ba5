// One run of an experiment protocol (`cp2 ablate`, `cp2 trials`, `cp2 demo`): a
// pretraining or finetuning job in its own run folder that a rerun of the protocol skips
// when it finished and resumes exactly when it was interrupted (the run folder's newest
// checkpoint, through the same harness as `cp2 pretrain/finetune --resume`).
#pragma once
#include <cstdint>
#include <string>

#include "cp2/config/fields.h"

namespace cp2::study {

enum class StageKind { Pretrain, Finetune };

struct StageSpec {
  std::string name;  // folder name under the protocol's output folder
  StageKind kind = StageKind::Pretrain;
  config::Sources src;  // config file + flags; train.out is set by run_stage
};

struct StageResult {
  std::string name, folder;
  StageKind kind = StageKind::Pretrain;
  std::string checkpoint;        // pretraining: the last checkpoint; finetuning: best.pt
  double miou = -1;              // finetuning: best val mIoU (%)
  int64_t best_iter = 0;
  double seconds = 0;            // this invocation's training time (0 when skipped)
  bool skipped = false;          // finished before: nothing ran
  bool resumed = false;          // continued an interrupted run
  int signal = 0;                // stopped by a signal (checkpoint written)
  uint64_t seed = 0;
  std::string budget;            // e.g. "3 epochs x 32 steps, batch 32" / "200 iterations, batch 8"
};

// Runs (fresh), resumes (the folder holds a checkpoint) or skips (the run finished) the
// stage in out/<spec.name>.
StageResult run_stage(const StageSpec& spec, const std::string& out, bool progress);

}  // namespace cp2::study
