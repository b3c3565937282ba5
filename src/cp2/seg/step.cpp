#include "cp2/seg/step.h"

#include <torch/torch.h>

#include <cmath>

#include "cp2/dist/comm.h"
#include "cp2/dist/reducer.h"
#include "cp2/eval/metrics.h"
#include "cp2/models/segmentor.h"
#include "cp2/train/optim.h"

namespace cp2::seg {

train::NamedTensors model_parameters(models::SegmentorImpl& m) {
  train::NamedTensors params;
  for (auto& p : m.named_parameters()) params.emplace_back(p.key(), p.value());
  return params;
}

models::SegmentorOptions SegModelConfig::segmentor(int classes) const {
  models::SegmentorOptions o;
  o.backbone.depth = arch;
  o.backbone.output_stride = output_stride;
  o.head.channels = head_channels;
  o.head.proj_channels = 0;
  o.head.num_classes = num_classes > 0 ? num_classes : classes;
  o.head.dropout = dropout;
  o.head.align_corners = align_corners;
  o.validate();
  return o;
}

train::OptimOptions finetune_optim() {
  train::OptimOptions o;
  o.name = "sgd";
  o.lr = 0.003;
  o.momentum = 0.9;
  o.weight_decay = 0;
  o.schedule = "poly";
  o.power = 0.9;
  o.min_lr = 1e-4;
  return o;
}

SegLoss seg_loss(const at::Tensor& logits, const at::Tensor& label, bool avg_non_ignore, bool align_corners,
                 bool read) {
  namespace F = torch::nn::functional;
  // A named options object: the temporary made GCC 12 warn falsely (-Wmaybe-uninitialized,
  // its unset scale_factor) against LibTorch 2.10's headers.
  const auto resize = F::InterpolateFuncOptions()
                          .size(std::vector<int64_t>{label.size(1), label.size(2)})
                          .mode(torch::kBilinear)
                          .align_corners(align_corners);
  auto up = F::interpolate(logits, resize);
  auto per_pixel = F::cross_entropy(up, label, F::CrossEntropyFuncOptions().ignore_index(255).reduction(torch::kNone));
  auto valid = label != 255;
  auto nvalid = valid.sum();
  SegLoss r;
  r.loss = avg_non_ignore ? per_pixel.sum() / nvalid.clamp_min(1) : per_pixel.mean();
  torch::NoGradGuard ng;
  // Both counts and the loss, read in one device sync (now, or by SegLoss::read).
  const auto hits = (eval::predicted_class(up, 1) == label).logical_and(valid).sum();
  r.values = torch::stack({nvalid.to(torch::kDouble), hits.to(torch::kDouble), r.loss.detach().to(torch::kDouble)});
  if (read) r.read();
  return r;
}

void SegLoss::read() {
  const auto d = train::read_numbers(values, 3, "SegLoss::read", "seg_loss");
  const auto n = static_cast<int64_t>(d[0]), correct = static_cast<int64_t>(d[1]);
  value = d[2];
  acc = n ? 100.0 * static_cast<double>(correct) / static_cast<double>(n) : 0.0;
}

SegStepResult train_step(models::SegmentorImpl& model, train::Optimizer& opt, const at::Tensor& image,
                         const at::Tensor& label, double lr, const SegStepOptions& o, dist::Comm* comm,
                         dist::GradientReducer* reducer) {
  SegStepResult r;
  auto l = seg_loss(model.logits(image), label, o.avg_non_ignore, o.align_corners, /*read=*/false);
  train::backward(opt, l.loss, reducer);
  l.read();
  r.loss = l.value;
  r.acc = l.acc;
  if (comm && comm->size() > 1) {
    const auto m = dist::mean_over_ranks(*comm, {l.value, l.acc});
    r.loss = m[0];
    r.acc = m[1];
  }
  r.finite = std::isfinite(r.loss);
  r.stepped = train::step_if_finite(opt, r.finite, lr);
  return r;
}

}  // namespace cp2::seg
