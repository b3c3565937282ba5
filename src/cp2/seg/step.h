// The finetuning step and its loss (SPEC §5: mmsegmentation's loss_decode and one SGD
// step), apart from the loop: what `cp2 finetune`, `cp2 bench finetune`, the multi-process
// tests and the LibTorch-only GPU check (cmake -DCP2_CORE_ONLY=ON, cp2_gpu_check) share, as
// pretrain/step.h is for pretraining.
#pragma once
#include <ATen/core/Tensor.h>

#include "cp2/train/optim.h"

namespace cp2::models {
class SegmentorImpl;
struct SegmentorOptions;
}
namespace cp2::dist {
class Comm;
class GradientReducer;
}

namespace cp2::seg {

// The finetuned model (`model.*` keys; SPEC §5, the authors' DeepLabV3 R50 for VOC by
// default): here rather than in config.h so that the LibTorch-only GPU check builds the
// model `cp2 finetune` builds.
struct SegModelConfig {
  int arch = 50, output_stride = 16, head_channels = 512;
  double dropout = 0.1;
  int num_classes = 0;  // 0 = the dataset's
  bool align_corners = false;
  models::SegmentorOptions segmentor(int classes) const;  // validated
};

// The segmentor's parameters under their state-dict names: the optimizer's keys (as
// pretrain::query_parameters).
train::NamedTensors model_parameters(models::SegmentorImpl& m);

// The authors' finetuning optimizer (their config_finetune.py, mmsegmentation 0.x): SGD lr
// 0.003, momentum 0.9, no weight decay, poly decay power 0.9 to 1e-4 per iteration (SPEC §5).
train::OptimOptions finetune_optim();

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
// loop, the benchmark and cp2_gpu_check share it, as pretrain::train_step. Multi-process
// (`comm` of world size > 1): loss and accuracy are means over ranks (so every rank agrees on
// finiteness), `reducer` averages the gradients.
SegStepResult train_step(models::SegmentorImpl& model, train::Optimizer& opt, const at::Tensor& image,
                         const at::Tensor& label, double lr, const SegStepOptions& o, dist::Comm* comm = nullptr,
                         dist::GradientReducer* reducer = nullptr);
}  // namespace cp2::seg
