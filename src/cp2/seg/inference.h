// Test-time inference and evaluation as mmsegmentation's (SPEC §5): resize keeping the
// aspect, whole-image or sliding-window logits, softmax, optional flip and multi-scale
// averaging of the probabilities, resized back to the original size; then the
// confusion matrix over all pixels of a dataset split.
#pragma once
#include <ATen/core/Tensor.h>

#include <functional>
#include <string>

#include "cp2/eval/metrics.h"
#include "cp2/models/segmentor.h"
#include "cp2/seg/config.h"
#include "cp2/seg/dataset.h"

namespace cp2::dist {
class Comm;
}

namespace cp2::seg {

// Class probabilities (C x H x W float, on the model's device) for one H x W x 3 uint8
// RGB image at its original size. The model must be in eval mode.
at::Tensor predict_probs(models::SegmentorImpl& m, const at::Tensor& image, const EvalOptions& o);

// Logits of a normalised 1 x 3 x h x w input: whole (resized to the input) or sliding
// windows (crop/stride, windows clamped to the image and averaged where they overlap).
at::Tensor infer_logits(models::SegmentorImpl& m, const at::Tensor& x, const EvalOptions& o);

struct EvalResult {
  eval::Metrics metrics;
  at::Tensor confusion;
  int64_t images = 0;
  double seconds = 0;
  LabelStats label_stats;
};

// Evaluates a split; `on_image(done, total)` reports progress. Images are read ahead on
// `workers` threads. With `comm` (world size > 1) each rank evaluates images
// rank, rank + world, ... and the confusion matrices are summed over ranks, so every rank
// returns the whole split's metrics.
EvalResult evaluate(models::SegmentorImpl& m, SegDataset& ds, const EvalOptions& o, int workers = 1,
                    const std::function<void(int64_t, int64_t)>& on_image = {}, dist::Comm* comm = nullptr);

}  // namespace cp2::seg
