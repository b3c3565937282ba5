#include "cp2/seg/inference.h"

#include <torch/torch.h>

#include <chrono>

#include "cp2/common.h"
#include "cp2/dist/comm.h"
#include "cp2/data/prefetch.h"
#include "cp2/seg/pipeline.h"

namespace cp2::seg {

namespace {

namespace F = torch::nn::functional;

at::Tensor resize_logits(const at::Tensor& t, int64_t h, int64_t w, bool align_corners) {
  if (t.size(2) == h && t.size(3) == w) return t;
  return F::interpolate(t, F::InterpolateFuncOptions()
                               .size(std::vector<int64_t>{h, w})
                               .mode(torch::kBilinear)
                               .align_corners(align_corners));
}

}  // namespace

at::Tensor infer_logits(models::SegmentorImpl& m, const at::Tensor& x, const EvalOptions& o) {
  if (o.mode == "whole") return m.predict(x);
  // mmseg slide_inference: a grid of ceil((H - crop) / stride) + 1 windows per axis, the
  // last ones shifted back inside the image; overlapping logits averaged.
  const int64_t H = x.size(2), W = x.size(3), ch = o.crop_h, cw = o.crop_w;
  const int64_t gh = std::max<int64_t>(H - ch + o.stride_h - 1, 0) / o.stride_h + 1;
  const int64_t gw = std::max<int64_t>(W - cw + o.stride_w - 1, 0) / o.stride_w + 1;
  at::Tensor sum, count = torch::zeros({1, 1, H, W}, x.options());
  for (int64_t i = 0; i < gh; ++i)
    for (int64_t j = 0; j < gw; ++j) {
      int64_t y1 = i * o.stride_h, x1 = j * o.stride_w;
      const int64_t y2 = std::min(y1 + ch, H), x2 = std::min(x1 + cw, W);
      y1 = std::max<int64_t>(y2 - ch, 0);
      x1 = std::max<int64_t>(x2 - cw, 0);
      auto logits = m.predict(x.slice(2, y1, y2).slice(3, x1, x2).contiguous());  // strided input: slow conv path
      if (!sum.defined()) sum = torch::zeros({1, logits.size(1), H, W}, x.options());
      sum.slice(2, y1, y2).slice(3, x1, x2) += logits;
      count.slice(2, y1, y2).slice(3, x1, x2) += 1;
    }
  return sum / count;
}

at::Tensor predict_probs(models::SegmentorImpl& m, const at::Tensor& image, const EvalOptions& o) {
  torch::NoGradGuard ng;
  const auto device = m.parameters().front().device();
  const int H = static_cast<int>(image.size(0)), W = static_cast<int>(image.size(1));
  const bool ac = m.options().head.align_corners;
  at::Tensor probs;
  for (double r : o.scales) {
    int h = H, w = W;
    if (o.scale_long > 0 && o.scale_short > 0) {
      // mmseg MultiScaleFlipAug: scale = img_scale x ratio, then keep-ratio Resize.
      std::tie(h, w) = rescale_size(H, W, static_cast<int>(o.scale_long * r), static_cast<int>(o.scale_short * r));
    } else if (r != 1.0) {
      h = static_cast<int>(H * r + 0.5);
      w = static_cast<int>(W * r + 0.5);
    }
    auto x = normalize(resize_image(image, h, w), o.mean, o.std).unsqueeze(0).to(device);
    for (int f = 0; f < (o.flip ? 2 : 1); ++f) {
      auto in = f ? x.flip({3}) : x;
      auto logits = resize_logits(infer_logits(m, in, o), H, W, ac);
      auto p = torch::softmax(logits, 1);
      if (f) p = p.flip({3});
      probs = probs.defined() ? probs + p : p;
    }
  }
  const double n = static_cast<double>(o.scales.size() * (o.flip ? 2 : 1));
  return (probs / n)[0];
}

EvalResult evaluate(models::SegmentorImpl& m, SegDataset& ds, const EvalOptions& o, int workers,
                    const std::function<void(int64_t, int64_t)>& on_image, dist::Comm* comm) {
  o.validate();
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t total = o.max_images > 0 ? std::min(o.max_images, ds.size()) : ds.size();
  const int64_t W = comm ? comm->size() : 1, R = comm ? comm->rank() : 0;
  const int64_t n = total > R ? (total - R + W - 1) / W : 0;  // this rank's images: R, R + W, ...
  struct Item {
    at::Tensor image, label;
  };
  data::Prefetcher<Item> pre(
      [&ds, W, R](int64_t, int64_t k) {
        const int64_t i = R + k * W;
        Item it;
        it.image = ds.image(i);
        it.label = ds.label(i, it.image.size(0), it.image.size(1));
        return it;
      },
      std::max(workers, 0), 4, "normal");
  pre.start(0, 0, n);
  if (m.options().head.num_classes != ds.num_classes())
    throw Error("the model predicts " + std::to_string(m.options().head.num_classes) + " classes, the " +
                ds.options().type + " dataset at " + ds.options().root + " has " + std::to_string(ds.num_classes()));
  eval::ConfusionMatrix cm(ds.num_classes());
  const bool was_training = m.is_training();
  m.eval();
  int64_t done = 0;
  while (auto it = pre.next()) {
    auto probs = predict_probs(m, it->image, o);
    cm.update(eval::predicted_class(probs, 0).to(torch::kCPU), it->label.to(torch::kLong));
    if (on_image) on_image(++done, n);
  }
  m.train(was_training);
  EvalResult r;
  r.confusion = cm.matrix();
  if (W > 1) {
    r.confusion = r.confusion.clone();
    comm->all_reduce_sum(r.confusion);
  }
  r.metrics = eval::compute_metrics(r.confusion);
  r.images = total;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.label_stats = ds.take_label_stats();
  return r;
}

}  // namespace cp2::seg
