#include "cp2/seg/pipeline.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <opencv2/imgproc.hpp>

#include "cp2/common.h"

namespace cp2::seg {

namespace {

cv::Mat as_mat(const at::Tensor& t) {  // a view; t must be contiguous uint8 HxW or HxWx3
  const int type = t.dim() == 3 ? CV_8UC(static_cast<int>(t.size(2))) : CV_8UC1;
  return cv::Mat(static_cast<int>(t.size(0)), static_cast<int>(t.size(1)), type, t.data_ptr<uint8_t>());
}

at::Tensor resize_with(const at::Tensor& src, int h, int w, int interp) {
  auto s = src.contiguous();
  auto out = s.dim() == 3 ? torch::empty({h, w, s.size(2)}, torch::kUInt8) : torch::empty({h, w}, torch::kUInt8);
  cv::Mat dst = as_mat(out);
  if (s.size(0) == h && s.size(1) == w) {
    as_mat(s).copyTo(dst);
    return out;
  }
  cv::resize(as_mat(s), dst, cv::Size(w, h), 0, 0, interp);
  return out;
}

// mmseg's convert(): float32 img * alpha + beta, clipped to [0, 255], truncated to uint8.
void convert(uint8_t* p, int64_t n, int64_t step, float alpha, float beta) {
  for (int64_t i = 0; i < n; i += step) {
    float v = static_cast<float>(p[i]) * alpha + beta;
    v = std::min(255.f, std::max(0.f, v));
    p[i] = static_cast<uint8_t>(v);
  }
}

}  // namespace

void PipelineOptions::validate() const {
  auto fail = [](const std::string& key, const std::string& exp, const std::string& found) {
    throw Error("pipeline." + key + ": expected " + exp + ", found " + found);
  };
  if (scale_long < 1 || scale_short < 1) fail("scale_long/scale_short", "positive edges", std::to_string(scale_long) + "x" + std::to_string(scale_short));
  if (!(ratio_min > 0 && ratio_max >= ratio_min)) fail("ratio_min/ratio_max", "0 < min <= max", num_str(ratio_min) + ", " + num_str(ratio_max));
  if (crop_h < 1 || crop_w < 1) fail("crop_h/crop_w", ">= 1", std::to_string(crop_h) + "x" + std::to_string(crop_w));
  if (!(cat_max_ratio > 0 && cat_max_ratio <= 1)) fail("cat_max_ratio", "in (0, 1]", num_str(cat_max_ratio));
  if (!(flip_p >= 0 && flip_p <= 1)) fail("flip_p", "in [0, 1]", num_str(flip_p));
  for (int c = 0; c < 3; ++c)
    if (!(std[c] > 0)) fail("std", "positive values", num_str(std[c]));
}

std::pair<int, int> rescale_size(int h, int w, double a, double b) {
  const double long_edge = std::max(a, b), short_edge = std::min(a, b);  // mmcv: max(scale), min(scale)
  const double f = std::min(long_edge / std::max(h, w), short_edge / std::min(h, w));
  return {static_cast<int>(h * f + 0.5), static_cast<int>(w * f + 0.5)};
}

at::Tensor resize_image(const at::Tensor& img, int h, int w) { return resize_with(img, h, w, cv::INTER_LINEAR); }
at::Tensor resize_label(const at::Tensor& lab, int h, int w) { return resize_with(lab, h, w, cv::INTER_NEAREST); }

CropBox random_crop_box(const at::Tensor& label, int ch, int cw, double cat_max_ratio, data::Rng& rng) {
  const int H = static_cast<int>(label.size(0)), W = static_cast<int>(label.size(1));
  auto draw = [&] {
    CropBox b;
    b.y0 = static_cast<int>(rng.randint(0, std::max(H - ch, 0) + 1));
    b.x0 = static_cast<int>(rng.randint(0, std::max(W - cw, 0) + 1));
    b.h = std::min(ch, H - b.y0);
    b.w = std::min(cw, W - b.x0);
    return b;
  };
  CropBox box = draw();
  if (cat_max_ratio >= 1) return box;
  auto lab = label.contiguous();
  const uint8_t* p = lab.data_ptr<uint8_t>();
  for (int t = 0; t < 10; ++t) {
    int64_t cnt[256] = {0};
    for (int y = box.y0; y < box.y0 + box.h; ++y)
      for (int x = box.x0; x < box.x0 + box.w; ++x) ++cnt[p[static_cast<int64_t>(y) * W + x]];
    int64_t total = 0, mx = 0, kinds = 0;
    for (int c = 0; c < 255; ++c)
      if (cnt[c]) {
        total += cnt[c];
        mx = std::max(mx, cnt[c]);
        ++kinds;
      }
    if (kinds > 1 && static_cast<double>(mx) / static_cast<double>(total) < cat_max_ratio) break;
    box = draw();
  }
  return box;
}

// The pipeline runs on loader threads, so it uses OpenCV and plain loops rather than ATen
// kernels, which would start intra-op parallel regions competing with the training step.
at::Tensor crop(const at::Tensor& t, const CropBox& b) {
  auto src = t.contiguous();
  auto out = t.dim() == 3 ? torch::empty({b.h, b.w, t.size(2)}, torch::kUInt8) : torch::empty({b.h, b.w}, torch::kUInt8);
  cv::Mat dst = as_mat(out);
  as_mat(src)(cv::Rect(b.x0, b.y0, b.w, b.h)).copyTo(dst);
  return out;
}

at::Tensor hflip(const at::Tensor& t) {
  auto src = t.contiguous();
  auto out = torch::empty(src.sizes(), torch::kUInt8);
  cv::Mat dst = as_mat(out);
  cv::flip(as_mat(src), dst, 1);
  return out;
}

void photometric_distortion(at::Tensor& img, const PipelineOptions& o, data::Rng& rng) {
  uint8_t* p = img.data_ptr<uint8_t>();
  const int64_t n = img.numel();
  auto contrast = [&] {
    if (rng.randint(0, 2)) convert(p, n, 1, static_cast<float>(rng.uniform(o.contrast_min, o.contrast_max)), 0.f);
  };
  if (rng.randint(0, 2))
    convert(p, n, 1, 1.f, static_cast<float>(rng.uniform(-o.brightness_delta, o.brightness_delta)));
  const bool contrast_first = rng.randint(0, 2) == 1;
  if (contrast_first) contrast();
  cv::Mat m = as_mat(img);
  if (rng.randint(0, 2)) {  // saturation
    cv::cvtColor(m, m, cv::COLOR_RGB2HSV);
    convert(p + 1, n - 1, 3, static_cast<float>(rng.uniform(o.saturation_min, o.saturation_max)), 0.f);
    cv::cvtColor(m, m, cv::COLOR_HSV2RGB);
  }
  if (rng.randint(0, 2)) {  // hue: OpenCV's 8-bit hue is 0..179
    cv::cvtColor(m, m, cv::COLOR_RGB2HSV);
    const int d = static_cast<int>(rng.randint(-o.hue_delta, o.hue_delta));
    for (int64_t i = 0; i < n; i += 3) p[i] = static_cast<uint8_t>(((p[i] + d) % 180 + 180) % 180);
    cv::cvtColor(m, m, cv::COLOR_HSV2RGB);
  }
  if (!contrast_first) contrast();
}

at::Tensor normalize(const at::Tensor& img, const Rgb& mean, const Rgb& std) {
  const int64_t H = img.size(0), W = img.size(1);
  auto out = torch::empty({3, H, W});
  auto src = img.contiguous();
  const uint8_t* s = src.data_ptr<uint8_t>();
  float* d = out.data_ptr<float>();
  for (int c = 0; c < 3; ++c) {
    const float m = static_cast<float>(mean[c]), inv = static_cast<float>(1.0 / std[c]);
    float* dc = d + c * H * W;
    for (int64_t i = 0; i < H * W; ++i) dc[i] = (static_cast<float>(s[i * 3 + c]) - m) * inv;
  }
  return out;
}

std::pair<at::Tensor, at::Tensor> pad(const at::Tensor& chw, const at::Tensor& lab, int h, int w) {
  const int64_t H = chw.size(1), W = chw.size(2);
  if (H >= h && W >= w) return {chw, lab};
  const int bottom = static_cast<int>(std::max<int64_t>(h - H, 0)), right = static_cast<int>(std::max<int64_t>(w - W, 0));
  const int64_t C = chw.size(0);
  auto img = torch::empty({C, H + bottom, W + right});
  auto src = chw.contiguous();
  for (int64_t c = 0; c < C; ++c) {  // planar layout: pad each channel plane
    cv::Mat in(static_cast<int>(H), static_cast<int>(W), CV_32F, src.data_ptr<float>() + c * H * W);
    cv::Mat out(static_cast<int>(H) + bottom, static_cast<int>(W) + right, CV_32F, img.data_ptr<float>() + c * (H + bottom) * (W + right));
    cv::copyMakeBorder(in, out, 0, bottom, 0, right, cv::BORDER_CONSTANT, cv::Scalar(0));
  }
  auto l = torch::empty({H + bottom, W + right}, torch::kUInt8);
  auto lsrc = lab.contiguous();
  cv::Mat lout = as_mat(l);
  cv::copyMakeBorder(as_mat(lsrc), lout, 0, bottom, 0, right, cv::BORDER_CONSTANT, cv::Scalar(255));
  return {img, l};
}

TrainSample train_transform(const at::Tensor& img0, const at::Tensor& lab0, const PipelineOptions& o,
                            data::Rng& rng) {
  // Resize: img_scale x ratio, then keep-ratio rescale (mmseg Resize, ratio_range mode).
  const double ratio = rng.uniform(o.ratio_min, o.ratio_max);
  const auto [h, w] = rescale_size(static_cast<int>(img0.size(0)), static_cast<int>(img0.size(1)),
                                   static_cast<int>(o.scale_long * ratio), static_cast<int>(o.scale_short * ratio));
  auto img = resize_image(img0, h, w);
  auto lab = resize_label(lab0, h, w);
  const auto box = random_crop_box(lab, o.crop_h, o.crop_w, o.cat_max_ratio, rng);
  img = crop(img, box);
  lab = crop(lab, box);
  if (rng.uniform01() < o.flip_p) {
    img = hflip(img);
    lab = hflip(lab);
  }
  if (o.photometric) photometric_distortion(img, o, rng);
  auto [x, y] = pad(normalize(img, o.mean, o.std), lab, o.crop_h, o.crop_w);
  auto y64 = torch::empty(y.sizes(), torch::kLong);
  const uint8_t* ys = y.data_ptr<uint8_t>();
  int64_t* yd = y64.data_ptr<int64_t>();
  for (int64_t i = 0; i < y.numel(); ++i) yd[i] = ys[i];
  return {x, y64};
}

}  // namespace cp2::seg
