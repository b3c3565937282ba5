// The finetuning loop (SPEC §5, mmsegmentation's recipe): DeepLabV3 from a pretrained
// checkpoint (or scratch), SGD with poly decay per iteration, cross-entropy ignoring 255,
// evaluation every N iterations keeping best.pt, atomic checkpoints, exact resume.
#pragma once
#include <string>
#include <vector>

#include "cp2/seg/config.h"

namespace cp2::seg {

struct FinetuneControl {
  std::string config_text;  // resolved config (YAML), stored in checkpoints
  std::string resume;       // checkpoint file or run folder; "" = fresh
  int64_t max_iters = 0;    // stop after this iteration, with a checkpoint (0 = run to the end)
  bool progress = true;
};

struct FinetuneSummary {
  int64_t first_iter = 0, last_iter = 0;
  std::vector<double> losses;
  double best_miou = -1;  // -1 = no evaluation yet
  int64_t best_iter = 0;
  double last_miou = -1;
  std::string last_checkpoint, best_checkpoint;
  double seconds = 0, images_per_s = 0;
  bool finished = false;
};

FinetuneSummary run_finetune(const FinetuneConfig& cfg, const FinetuneControl& fc);

// The resolved config stored in a cp2 finetune checkpoint.
std::string finetune_checkpoint_config(const std::string& path);

// Cross-entropy as mmseg's loss_decode: logits (N x C x h x w) are resized to the label
// size, pixels labelled 255 are ignored, and the sum is divided by all pixels
// (avg_non_ignore false, mmseg 0.x) or by the labelled ones. Also returns pixel accuracy
// over labelled pixels (%).
struct SegLoss {
  at::Tensor loss;
  double acc = 0;
};
SegLoss seg_loss(const at::Tensor& logits, const at::Tensor& label, bool avg_non_ignore, bool align_corners);

}  // namespace cp2::seg
