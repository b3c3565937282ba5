#include "cp2/data/copypaste.h"

#include <torch/torch.h>

#include "cp2/common.h"

namespace cp2::data {

void CopyPasteOptions::validate() const {
  view.validate();
  if (!(erase_scale_min > 0 && erase_scale_min <= erase_scale_max && erase_scale_max < 1))
    throw Error("copy_paste.erase_scale_min/erase_scale_max: expected 0 < min <= max < 1, found " +
                num_str(erase_scale_min) + ".." + num_str(erase_scale_max));
  if (!(erase_ratio_min > 0 && erase_ratio_min <= erase_ratio_max))
    throw Error("copy_paste.erase_ratio_min/erase_ratio_max: expected 0 < min <= max, found " +
                num_str(erase_ratio_min) + ".." + num_str(erase_ratio_max));
}

namespace {

// Pastes `fg` into `bg` inside box b (bg is already normalised; the box region is
// replaced, which equals the authors' fg * mask + erased bg), fills the mask.
void paste(at::Tensor& bg, const at::Tensor& fg, const Box& b, at::Tensor& mask) {
  const int64_t S = bg.size(1);
  float* d = bg.data_ptr<float>();
  const float* s = fg.data_ptr<float>();
  float* m = mask.data_ptr<float>();
  for (int64_t y = b.top; y < b.top + b.height; ++y) {
    for (int64_t c = 0; c < 3; ++c) {
      const int64_t off = (c * S + y) * S + b.left;
      std::copy(s + off, s + off + b.width, d + off);
    }
    std::fill(m + y * S + b.left, m + y * S + b.left + b.width, 1.f);
  }
}

// S x S mask without an ATen fill kernel (loader threads stay off the intra-op pool).
at::Tensor filled(int64_t S, float value) {
  auto t = torch::empty({S, S});
  std::fill(t.data_ptr<float>(), t.data_ptr<float>() + S * S, value);
  return t;
}

}  // namespace

Sample compose(const at::Tensor& fg, const at::Tensor& bg0, const at::Tensor& bg1, const CopyPasteOptions& o,
               Rng& rng) {
  const auto& v = o.view;
  Sample s;
  auto view = [&](const at::Tensor& img) { return apply_view(img, draw_view(img.size(1), img.size(2), v, rng), v); };
  auto fq = view(fg);
  auto fk = view(fg);
  if (!o.copy_paste) {
    s.im_q = fq;
    s.im_k = fk;
    s.mask_q = filled(v.size, 1.f);
    s.mask_k = filled(v.size, 1.f);
    return s;
  }
  auto composite = [&](const at::Tensor& bg_img, const at::Tensor& f, at::Tensor& img, at::Tensor& mask) {
    img = view(bg_img);
    auto box = sample_erasing(v.size, v.size, o.erase_scale_min, o.erase_scale_max, o.erase_ratio_min,
                              o.erase_ratio_max, rng);
    mask = filled(v.size, 0.f);
    paste(img, f, box, mask);
  };
  composite(bg0, fq, s.im_q, s.mask_q);
  composite(bg1, fk, s.im_k, s.mask_k);
  return s;
}

}  // namespace cp2::data
