// The MoCo v2 view augmentation of SPEC §1 with torchvision's sampling semantics, split
// into "draw the parameters" and "apply them" so each op can be checked against
// torchvision with the same parameters (tests/data/test_augment.cpp).
// Images are 3 x H x W float tensors in [0, 1] (CPU) between ops; no intermediate
// rounding to 8 bits (PIL rounds after every op: differences stay within one grey level).
#pragma once
#include <ATen/core/Tensor.h>

#include <array>
#include <string>

#include "cp2/data/rng.h"

namespace cp2::data {

struct ViewOptions {
  int size = 224;
  double scale_min = 0.2, scale_max = 1.0;            // RandomResizedCrop area range
  double ratio_min = 3.0 / 4.0, ratio_max = 4.0 / 3.0;
  double jitter_p = 0.8, brightness = 0.4, contrast = 0.4, saturation = 0.4, hue = 0.1;
  double gray_p = 0.2;
  double blur_p = 0.5, sigma_min = 0.1, sigma_max = 2.0;
  // Gaussian kernel size; 0 = 2*ceil(3 sigma)+1 for each drawn sigma (a full Gaussian,
  // which PIL's GaussianBlur(radius=sigma) in MoCo v2 approximates with box filters).
  int blur_kernel = 0;
  double flip_p = 0.5;
  std::array<double, 3> mean{0.485, 0.456, 0.406}, std{0.229, 0.224, 0.225};
  void validate() const;  // throws naming the key
};

struct Box {
  int64_t top = 0, left = 0, height = 0, width = 0;
};

// torchvision RandomResizedCrop.get_params: 10 tries of (area, log-uniform ratio),
// then the centre crop clamped to the ratio range.
Box sample_resized_crop(int64_t H, int64_t W, double scale_min, double scale_max, double ratio_min, double ratio_max,
                        Rng& rng);

// torchvision RandomErasing.get_params (10 tries). When every try fails (a rectangle
// of the drawn shape does not fit, e.g. area 0.8 and ratio ~1 on a square), torchvision
// erases nothing and the authors' copy-paste mask is empty (NaN dense loss). cp2 falls
// back to the centred rectangle of the minimum area at ratio 1, shrunk to fit: the
// foreground is never empty.
Box sample_erasing(int64_t H, int64_t W, double scale_min, double scale_max, double ratio_min, double ratio_max,
                   Rng& rng);

struct ViewParams {
  Box crop;
  bool jitter = false;
  std::array<int, 4> order{0, 1, 2, 3};  // 0 brightness, 1 contrast, 2 saturation, 3 hue
  double brightness = 1, contrast = 1, saturation = 1, hue = 0;
  bool gray = false;
  bool blur = false;
  double sigma = 0;
  int kernel = 0;
  bool flip = false;
};

ViewParams draw_view(int64_t H, int64_t W, const ViewOptions& o, Rng& rng);

// Throws unless img is what the single ops take: a contiguous float 3 x H x W CPU image.
void check_float_image(const at::Tensor& img);

// The single ops (float 3 x H x W in [0, 1] in, same out), torchvision semantics.
// Antialiased bilinear (resize.cpp); `simd`: AVX2 loops where the CPU has them, the same bits.
at::Tensor resized_crop(const at::Tensor& img_u8, const Box& b, int size, bool simd = true);
void adjust_brightness(at::Tensor& img, double f);
void adjust_contrast(at::Tensor& img, double f);    // blend with the mean grey level
void adjust_saturation(at::Tensor& img, double f);  // blend with the grey image
void adjust_hue(at::Tensor& img, double shift);     // rotate H in PIL's 8-bit HSV, shift in [-0.5, 0.5] (hue.h)
void to_grayscale(at::Tensor& img);                 // 0.299 R + 0.587 G + 0.114 B, 3 channels
// Reflect padding; `simd` as resized_crop's.
at::Tensor gaussian_blur(const at::Tensor& img, int kernel, double sigma, bool simd = true);
void hflip(at::Tensor& img);
void normalize(at::Tensor& img, const std::array<double, 3>& mean, const std::array<double, 3>& std);

// All of the above in MoCo v2's order; returns a normalised 3 x size x size view.
at::Tensor apply_view(const at::Tensor& img_u8, const ViewParams& p, const ViewOptions& o);

}  // namespace cp2::data
