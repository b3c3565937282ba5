// mmsegmentation's train and test pipelines (SPEC §5), on H x W x 3 uint8 RGB images and
// H x W uint8 labels: Resize (ratio range, aspect kept; bilinear images, nearest labels),
// RandomCrop with cat_max_ratio rejection, RandomFlip, PhotoMetricDistortion, Normalize,
// Pad (image 0, label 255). Each step is exposed so tests can pin its semantics.
#pragma once
#include <ATen/core/Tensor.h>

#include <array>
#include <utility>

#include "cp2/data/rng.h"

namespace cp2::seg {

struct PipelineOptions {
  int scale_long = 2048, scale_short = 512;  // img_scale (2048, 512)
  double ratio_min = 0.5, ratio_max = 2.0;   // train-time ratio range
  int crop_h = 512, crop_w = 512;
  double cat_max_ratio = 0.75;  // reject crops where one class holds >= this share (1 = off)
  double flip_p = 0.5;
  bool photometric = true;
  int brightness_delta = 32;
  double contrast_min = 0.5, contrast_max = 1.5, saturation_min = 0.5, saturation_max = 1.5;
  int hue_delta = 18;
  std::array<double, 3> mean{123.675, 116.28, 103.53}, std{58.395, 57.12, 57.375};  // RGB, 0..255
  void validate() const;
};

// mmcv.rescale_size with a (long, short) scale: the largest size, aspect kept, whose long
// edge is <= long_edge and short edge <= short_edge; rounded as int(x * f + 0.5).
// Returns (h, w).
std::pair<int, int> rescale_size(int h, int w, double long_edge, double short_edge);

at::Tensor resize_image(const at::Tensor& img, int h, int w);  // bilinear (cv2 INTER_LINEAR)
at::Tensor resize_label(const at::Tensor& lab, int h, int w);  // nearest (cv2 INTER_NEAREST)

struct CropBox {
  int y0 = 0, x0 = 0, h = 0, w = 0;
};
// mmseg RandomCrop.get_crop_bbox: offsets uniform in [0, max(H - ch, 0)]. With
// cat_max_ratio < 1, a crop is redrawn (up to 10 times) while its labelled pixels
// (255 excluded) hold a single class or one class with a share >= cat_max_ratio;
// after 10 rejections the next draw is used as is.
CropBox random_crop_box(const at::Tensor& label, int crop_h, int crop_w, double cat_max_ratio, data::Rng& rng);
at::Tensor crop(const at::Tensor& t, const CropBox& b);  // uint8 H x W [x C]
at::Tensor hflip(const at::Tensor& t);                   // uint8 H x W [x C]

// PhotoMetricDistortion (mmseg 0.x): brightness, then contrast first or last (random
// mode), saturation and hue in OpenCV's 8-bit HSV; every op applied with probability
// 1/2, values clipped and truncated to uint8 after each. In place on H x W x 3 uint8.
void photometric_distortion(at::Tensor& img, const PipelineOptions& o, data::Rng& rng);

// (img - mean) / std, H x W x 3 uint8 -> 3 x H x W float.
using Rgb = std::array<double, 3>;
at::Tensor normalize(const at::Tensor& img, const Rgb& mean, const Rgb& std);

// Pads 3 x H x W float (value 0) and H x W uint8 labels (value 255) on the bottom/right
// to at least h x w.
std::pair<at::Tensor, at::Tensor> pad(const at::Tensor& chw, const at::Tensor& lab, int h, int w);

struct TrainSample {
  at::Tensor image;  // 3 x crop_h x crop_w float, normalised
  at::Tensor label;  // crop_h x crop_w int64 (255 = ignore)
};
// The whole train pipeline for one image.
TrainSample train_transform(const at::Tensor& img, const at::Tensor& lab, const PipelineOptions& o, data::Rng& rng);

}  // namespace cp2::seg
