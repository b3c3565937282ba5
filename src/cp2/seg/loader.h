// Finetuning batches: the train pipeline over a dataset, iteration-based as mmseg's
// IterBasedRunner. Iteration t reads batch t mod (images / batch) of epoch
// t div (images / batch); every draw is keyed by (seed, epoch, position), so batches do
// not depend on worker count or timing and a resumed run sees the same batches.
#pragma once
#include <ATen/core/Tensor.h>

#include <memory>
#include <mutex>
#include <optional>

#include "cp2/data/loader.h"
#include "cp2/data/prefetch.h"
#include "cp2/seg/dataset.h"
#include "cp2/seg/pipeline.h"

namespace cp2::seg {

struct SegBatch {
  at::Tensor image;  // B x 3 x crop_h x crop_w float
  at::Tensor label;  // B x crop_h x crop_w int64, 255 = ignore
};

class SegTrainLoader {
 public:
  SegTrainLoader(std::shared_ptr<SegDataset> ds, PipelineOptions p, data::LoaderOptions l, uint64_t seed);
  int64_t batches_per_epoch() const;  // drop_last; throws when the split is smaller than a batch
  // Iterations [first, end).
  void start(int64_t first, int64_t end) { prefetch_.start(0, first, end); }
  std::optional<SegBatch> next() { return prefetch_.next(); }
  // The loader threads' priority from now on (data.priority: auto raises it to normal).
  void set_priority(const std::string& priority) { prefetch_.set_priority(priority); }
  SegBatch build(int64_t iteration);

 private:
  std::shared_ptr<SegDataset> ds_;
  PipelineOptions p_;
  data::LoaderOptions l_;
  uint64_t seed_;
  std::mutex mu_;
  int64_t order_epoch_ = -1;
  std::vector<int64_t> order_;
  data::Prefetcher<SegBatch> prefetch_;
};

}  // namespace cp2::seg
