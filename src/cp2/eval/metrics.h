// Segmentation metrics as mmsegmentation computes them (SPEC §5): a confusion matrix over
// all evaluated pixels (ignore label skipped), IoU = TP / (TP + FP + FN) per class, mIoU
// over the classes present in the ground truth or the prediction, per-class accuracy
// TP / (TP + FN) and its mean over classes present in the ground truth, pixel accuracy.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace cp2::eval {

class ConfusionMatrix {
 public:
  explicit ConfusionMatrix(int64_t num_classes, int64_t ignore_index = 255);
  // pred, label: integer tensors of the same shape, any device. Labels equal to the
  // ignore index are skipped; other labels outside [0, C) are skipped and counted.
  // Predictions must lie in [0, C).
  void update(const at::Tensor& pred, const at::Tensor& label);
  const at::Tensor& matrix() const { return m_; }  // C x C int64 (CPU): rows truth, columns prediction
  int64_t out_of_range_labels() const { return out_of_range_; }
  int64_t num_classes() const { return c_; }

 private:
  int64_t c_, ignore_;
  at::Tensor m_;
  int64_t out_of_range_ = 0;
};

struct Metrics {
  std::vector<double> iou, acc;  // per class; NaN where undefined (excluded from the means)
  double miou = 0, macc = 0, aacc = 0;
  int64_t pixels = 0;
};

Metrics compute_metrics(const at::Tensor& confusion);

// The predicted class: argmax of `scores` over dimension `dim` (the first of equal maxima, as
// torch.argmax), as int64. On the CPU, where the classes are not the innermost dimension
// (NCHW logits, C x H x W probabilities), one pass per class: ATen 1.13's argmax there is
// 2-8x slower (2x21x512x512 fp32: 101 vs 19 ms; 21x375x500: 38 vs 4.6 ms; 150x512x683: 84
// vs 39 ms; 2 threads, Zen 5). Where a score is NaN, torch.argmax picks it and this does not.
at::Tensor predicted_class(const at::Tensor& scores, int64_t dim);

// A per-class table (name, IoU, Acc in %, "-" for excluded classes) and the summary line.
std::string format_table(const Metrics& m, const std::vector<std::string>& class_names);

}  // namespace cp2::eval
