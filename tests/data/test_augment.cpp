// Augmentation parity with torchvision (tools/aug_fixtures.py) and sampling semantics.
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

#include "cp2/data/augment.h"
#include "cp2/data/hue.h"
#include "cp2/data/image.h"
#include "../helpers.h"

namespace cp2::test {
namespace {

using namespace cp2::data;

struct AugRef {
  at::Tensor input;  // uint8 3 x H x W
  std::map<std::string, at::Tensor> ref;
  std::vector<double> params(const std::string& name) {
    auto t = ref.at(name + ".params").contiguous();
    return {t.data_ptr<double>(), t.data_ptr<double>() + t.numel()};
  }
};

AugRef& aug_ref() {
  static AugRef r{read_image(fixture("aug_input.png")), load_tensors(fixture("aug_ref.pt"))};
  return r;
}

at::Tensor as_float(const at::Tensor& u8) { return u8.to(torch::kFloat).div(255).contiguous(); }

// Mean |ours - torchvision| in grey levels (0..255).
double grey_diff(const at::Tensor& ours01, const at::Tensor& ref_u8) {
  EXPECT_EQ(ours01.sizes(), ref_u8.sizes());
  return (ours01.to(torch::kDouble) * 255 - ref_u8.to(torch::kDouble)).abs().mean().item<double>();
}

// Tolerances per op (mean absolute difference, grey levels). The issue allows 1.0 for
// every op; the tighter figures are what the implementation achieves, with margin, so a
// regression shows. PIL rounds (or truncates) to 8 bits after each op, cp2 keeps floats:
// ~0.25-0.46 on average; the hue op reproduces PIL's 8-bit HSV exactly.
struct OpCase {
  const char* name;
  double tol;
};

TEST(AugmentParity, SingleOpsMatchTorchvision) {
  auto& r = aug_ref();
  const OpCase cases[] = {{"crop_down", 0.6}, {"crop_up", 0.6},     {"crop_full", 0.6},   {"brightness0", 0.6},
                          {"brightness1", 0.6}, {"contrast0", 0.6},  {"contrast1", 0.6},   {"saturation0", 0.6},
                          {"saturation1", 0.6}, {"hue0", 0.1},       {"hue1", 0.1},        {"hue2", 0.1},
                          {"gray", 0.6},        {"blur0", 0.6},      {"blur1", 0.6},       {"flip", 0.01}};
  for (const auto& c : cases) {
    const std::string n = c.name;
    auto p = r.params(n);
    at::Tensor out;
    if (n.rfind("crop", 0) == 0) {
      out = resized_crop(r.input, {int64_t(p[0]), int64_t(p[1]), int64_t(p[2]), int64_t(p[3])}, int(p[4]));
    } else {
      out = as_float(r.input);
      if (n.rfind("brightness", 0) == 0) adjust_brightness(out, p[0]);
      else if (n.rfind("contrast", 0) == 0) adjust_contrast(out, p[0]);
      else if (n.rfind("saturation", 0) == 0) adjust_saturation(out, p[0]);
      else if (n.rfind("hue", 0) == 0) adjust_hue(out, p[0]);
      else if (n == "gray") to_grayscale(out);
      else if (n.rfind("blur", 0) == 0) out = gaussian_blur(out, int(p[0]), p[1]);
      else if (n == "flip") hflip(out);
    }
    double d = grey_diff(out, r.ref.at(n + ".out"));
    std::printf("[augment parity] %-12s mean |cp2 - torchvision| = %.4f grey levels (tol %.2f)\n", c.name, d, c.tol);
    EXPECT_LE(d, c.tol) << n;
  }
}

// adjust_hue looks up the per-pixel work that does not depend on the shift (hue.cpp's
// tables), eight pixels at a time with AVX2 where the CPU has it; pil_hue_shift computes
// PIL's path expression by expression. Both loops must agree with it on every 8-bit colour,
// at shifts of both signs, zero and the extremes; and on channels outside [0, 1] (clamped)
// and off the 8-bit grid, with each other and with adjust_hue.
TEST(AugmentHue, TablesEqualPilsPathOnEveryColour) {
  int64_t mismatches[2] = {0, 0}, changed = 0;
  std::string first;
  std::vector<float> img[2];
  for (double shift : {0.1, -0.5, 0.0, 0.0371}) {
    const uint8_t dh = hue_shift_byte(shift);
    for (int r = 0; r < 256; ++r) {
      for (int simd = 0; simd < 2; ++simd) {
        auto& p = img[simd];
        p.resize(3 * 65536);
        for (int i = 0; i < 65536; ++i) {
          p[i] = r / 255.f;
          p[65536 + i] = (i >> 8) / 255.f;
          p[2 * 65536 + i] = (i & 255) / 255.f;
        }
        hue_shift_pixels(p.data(), p.data() + 65536, p.data() + 2 * 65536, 65536, shift, simd);
      }
      for (int i = 0; i < 65536; ++i) {
        const int g = i >> 8, b = i & 255;
        const auto want = pil_hue_shift(r, g, b, dh);
        changed += want[0] != r || want[1] != g || want[2] != b;
        for (int simd = 0; simd < 2; ++simd)
          for (int c = 0; c < 3; ++c)
            if (img[simd][c * 65536 + i] != want[c] / 255.f && mismatches[simd]++ == 0)
              first = "rgb " + std::to_string(r) + "," + std::to_string(g) + "," + std::to_string(b) + " shift " +
                      std::to_string(shift) + (simd ? " (AVX2)" : " (scalar)");
      }
    }
  }
  EXPECT_EQ(mismatches[0], 0) << "first at " << first;
  EXPECT_EQ(mismatches[1], 0) << "first at " << first;
  EXPECT_GT(changed, 3 * (1 << 24) / 2);  // the non-zero shifts move most colours

  torch::manual_seed(3);
  auto x = torch::rand({3, 61, 37}) * 1.4 - 0.2;  // 2257 pixels: eight at a time and the rest
  auto scalar = x.clone(), simd = x.clone(), op = x.clone();
  const int64_t n = 61 * 37;
  hue_shift_pixels(scalar.data_ptr<float>(), scalar.data_ptr<float>() + n, scalar.data_ptr<float>() + 2 * n, n, -0.23,
                   false);
  hue_shift_pixels(simd.data_ptr<float>(), simd.data_ptr<float>() + n, simd.data_ptr<float>() + 2 * n, n, -0.23, true);
  adjust_hue(op, -0.23);
  EXPECT_TRUE(torch::equal(scalar, simd));
  EXPECT_TRUE(torch::equal(scalar, op));
  EXPECT_FALSE(torch::equal(scalar, x));
}

TEST(AugmentParity, BlurAgainstPilBoxApproximation) {
  // MoCo v2 calls PIL's GaussianBlur(radius=sigma), three box filters approximating a
  // Gaussian; cp2 (like torchvision) computes the Gaussian itself.
  auto& r = aug_ref();
  for (const char* n : {"pilblur0", "pilblur1"}) {
    auto p = r.params(n);
    double d = grey_diff(gaussian_blur(as_float(r.input), int(p[0]), p[1]), r.ref.at(std::string(n) + ".out"));
    std::printf("[augment parity] %-12s mean |cp2 - PIL box blur| = %.4f grey levels (tol 1.00)\n", n, d);
    EXPECT_LE(d, 1.0) << n;
  }
}

TEST(AugmentParity, WholeViewMatchesChainedTorchvision) {
  auto& r = aug_ref();
  auto p = r.params("view");
  ViewOptions o;
  o.size = int(p[4]);
  ViewParams v;
  v.crop = {int64_t(p[0]), int64_t(p[1]), int64_t(p[2]), int64_t(p[3])};
  v.jitter = true;
  for (int i = 0; i < 4; ++i) v.order[i] = int(p[5 + i]);
  v.brightness = p[9], v.contrast = p[10], v.saturation = p[11], v.hue = p[12];
  v.blur = true, v.sigma = p[13], v.kernel = int(p[14]);
  v.flip = true;
  auto out = apply_view(r.input, v, o);
  auto std = torch::tensor({0.229, 0.224, 0.225}, torch::kDouble).view({3, 1, 1});
  double d = ((out.to(torch::kDouble) - r.ref.at("view.out").to(torch::kDouble)) * std * 255).abs().mean().item<double>();
  std::printf("[augment parity] whole view   mean |cp2 - torchvision| = %.4f grey levels (tol 1.00)\n", d);
  EXPECT_LE(d, 1.0);
}

TEST(AugmentSampling, ResizedCropFollowsTorchvision) {
  Rng rng(3);
  for (int t = 0; t < 2000; ++t) {
    auto b = sample_resized_crop(120, 160, 0.2, 1.0, 3.0 / 4, 4.0 / 3, rng);
    ASSERT_GT(b.height, 0);
    ASSERT_GE(b.top, 0);
    ASSERT_LE(b.top + b.height, 120);
    ASSERT_LE(b.left + b.width, 160);
    double area = double(b.height) * b.width / (120.0 * 160);
    EXPECT_GE(area, 0.2 - 0.02);
    EXPECT_LE(area, 1.0);
  }
  // All 10 tries fail on a 10 x 1000 strip: torchvision's fallback is the centred crop
  // at the largest allowed ratio, h = 10, w = round(10 * 4/3) = 13.
  auto b = sample_resized_crop(10, 1000, 0.2, 1.0, 3.0 / 4, 4.0 / 3, rng);
  EXPECT_EQ(b.height, 10);
  EXPECT_EQ(b.width, 13);
  EXPECT_EQ(b.top, 0);
  EXPECT_EQ(b.left, (1000 - 13) / 2);
}

TEST(AugmentSampling, ErasingAreaRatioAndFallback) {
  Rng rng(5);
  double lo = 1, hi = 0;
  for (int t = 0; t < 5000; ++t) {
    auto b = sample_erasing(224, 224, 0.5, 0.8, 0.8, 1.25, rng);
    ASSERT_GT(b.height * b.width, 0);
    ASSERT_LE(b.top + b.height, 224);
    ASSERT_LE(b.left + b.width, 224);
    double a = double(b.height) * b.width / (224.0 * 224);
    lo = std::min(lo, a), hi = std::max(hi, a);
  }
  EXPECT_GE(lo, 0.49);
  EXPECT_LE(hi, 0.81);
  EXPECT_LT(lo, 0.52);  // the whole range is used
  EXPECT_GT(hi, 0.75);
  // Every try fails (area ~1): torchvision would erase nothing (empty mask); cp2 falls
  // back to a centred square that fits.
  auto b = sample_erasing(224, 224, 0.9999, 0.99999, 1.0, 1.0, rng);
  EXPECT_EQ(b.height, 223);
  EXPECT_EQ(b.width, 223);
}

TEST(AugmentSampling, DrawViewProbabilities) {
  ViewOptions o;
  Rng rng(11);
  int jitter = 0, gray = 0, blur = 0, flip = 0;
  const int n = 20000;
  for (int t = 0; t < n; ++t) {
    auto p = draw_view(200, 300, o, rng);
    jitter += p.jitter, gray += p.gray, blur += p.blur, flip += p.flip;
    if (p.jitter) {
      ASSERT_GE(p.brightness, 0.6);
      ASSERT_LT(p.brightness, 1.4);
      ASSERT_GE(p.hue, -0.1);
      ASSERT_LT(p.hue, 0.1);
    }
    if (p.blur) {
      ASSERT_GE(p.sigma, 0.1);
      ASSERT_LT(p.sigma, 2.0);
      ASSERT_EQ(p.kernel, 2 * int(std::ceil(3 * p.sigma)) + 1);
    }
  }
  EXPECT_NEAR(jitter / double(n), 0.8, 0.015);
  EXPECT_NEAR(gray / double(n), 0.2, 0.015);
  EXPECT_NEAR(blur / double(n), 0.5, 0.015);
  EXPECT_NEAR(flip / double(n), 0.5, 0.015);
}

TEST(AugmentOptions, ValidateNamesTheKey) {
  ViewOptions o;
  o.hue = 0.7;
  expect_error([&] { o.validate(); }, {"view.hue", "0..0.5", "0.7"});
  o = ViewOptions{};
  o.blur_kernel = 4;
  expect_error([&] { o.validate(); }, {"view.blur_kernel", "odd"});
}

}  // namespace
}  // namespace cp2::test
