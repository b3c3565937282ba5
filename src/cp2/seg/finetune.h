// The finetuning loop (SPEC §5, mmsegmentation's recipe): DeepLabV3 from a pretrained
// checkpoint (or scratch), SGD with poly decay per iteration, cross-entropy ignoring 255,
// evaluation every N iterations keeping best.pt, atomic checkpoints, exact resume.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "cp2/seg/config.h"

namespace cp2::dist {
class Comm;
class GradientReducer;
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

// Cross-entropy as mmseg's loss_decode: logits (N x C x h x w) are resized to the label
// size, pixels labelled 255 are ignored, and the sum is divided by all pixels
// (avg_non_ignore false, mmseg 0.x) or by the labelled ones. Also returns pixel accuracy
// over labelled pixels (%).
struct SegLoss {
  at::Tensor loss;
  double acc = 0;
  double value = 0;  // loss as a number, read with the pixel counts in one device sync
  at::Tensor values;  // those numbers on the device until read: valid pixels, hits, loss
  void read();        // fills acc and value from `values`
};
// read = false leaves acc and value to SegLoss::read(), so that nothing waits for the device.
SegLoss seg_loss(const at::Tensor& logits, const at::Tensor& label, bool avg_non_ignore, bool align_corners,
                 bool read = true);

struct SegStepOptions {
  bool avg_non_ignore = false;  // train.avg_non_ignore
  bool align_corners = false;   // model.align_corners
};
struct SegStepResult {
  double loss = 0, acc = 0;  // means over ranks
  bool finite = true;        // false: nothing was updated (a skipped step with loss scaling)
  bool stepped = false;      // the optimizer updated the weights (not where loss scaling skipped the step)
};
// One finetuning step on a batch already on the model's device: forward, seg_loss, backward,
// the loss and accuracy read (one device sync, with the backward pass queued; train::backward
// says why), then — if the loss is finite — the optimizer step at `lr`; a non-finite loss
// updates nothing (with loss scaling the step counts as skipped, as GradScaler's loop). The
// loop and the benchmark share it, as pretrain::train_step. Multi-process (`comm` of world
// size > 1): loss and accuracy are means over ranks (so every rank agrees on finiteness),
// `reducer` averages the gradients.
SegStepResult train_step(models::SegmentorImpl& model, train::Optimizer& opt, const at::Tensor& image,
                         const at::Tensor& label, double lr, const SegStepOptions& o, dist::Comm* comm = nullptr,
                         dist::GradientReducer* reducer = nullptr);

}  // namespace cp2::seg
