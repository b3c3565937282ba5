#include "cp2/seg/loader.h"

#include <torch/torch.h>

#include <cstring>

#include "cp2/common.h"
#include "cp2/data/rng.h"

namespace cp2::seg {

namespace {
enum : uint64_t { kStreamOrder = 11, kStreamSample = 12 };
}

SegTrainLoader::SegTrainLoader(std::shared_ptr<SegDataset> ds, PipelineOptions p, data::LoaderOptions l, uint64_t seed)
    : ds_(std::move(ds)),
      p_((p.validate(), p)),
      l_((l.validate(), l)),
      seed_(seed),
      prefetch_([this](int64_t, int64_t it) { return build(it); }, l_.workers, l_.prefetch, l_.priority) {}

int64_t SegTrainLoader::batches_per_epoch() const {
  const int64_t n = ds_->size() / l_.batch;
  if (n == 0)
    throw Error("training split: " + std::to_string(ds_->size()) + " images, fewer than one batch of " +
                std::to_string(l_.batch));
  return n;
}

SegBatch SegTrainLoader::build(int64_t iteration) {
  const int64_t bpe = batches_per_epoch(), B = l_.local_batch();
  const int64_t epoch = iteration / bpe, first = (iteration % bpe) * l_.batch + l_.shard * B;
  std::vector<int64_t> idx(B);
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (order_epoch_ != epoch) {
      order_ = data::Rng::derive(seed_, {kStreamOrder, static_cast<uint64_t>(epoch)}).permutation(ds_->size());
      order_epoch_ = epoch;
    }
    for (int64_t i = 0; i < B; ++i) idx[i] = order_[first + i];
  }
  SegBatch b;
  b.image = data::batch_tensor({B, 3, p_.crop_h, p_.crop_w}, at::kFloat, l_.pin_for);
  b.label = data::batch_tensor({B, p_.crop_h, p_.crop_w}, at::kLong, l_.pin_for);
  for (int64_t i = 0; i < B; ++i) {
    auto rng = data::Rng::derive(seed_, {kStreamSample, static_cast<uint64_t>(epoch), static_cast<uint64_t>(first + i)});
    auto img = ds_->image(idx[i]);
    auto lab = ds_->label(idx[i], img.size(0), img.size(1));
    auto s = train_transform(img, lab, p_, rng);
    // memcpy, not ATen copies: loader threads stay out of the intra-op pool.
    std::memcpy(b.image.data_ptr<float>() + i * s.image.numel(), s.image.data_ptr<float>(), s.image.numel() * 4);
    std::memcpy(b.label.data_ptr<int64_t>() + i * s.label.numel(), s.label.data_ptr<int64_t>(), s.label.numel() * 8);
  }
  return b;
}

}  // namespace cp2::seg
