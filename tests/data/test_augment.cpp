// Augmentation parity with torchvision (tools/aug_fixtures.py) and sampling semantics.
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <tuple>
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

// resized_crop has two loop nests (resize.cpp): the plain one, and on AVX2 one that runs across
// eight output rows at a time between two transposes. Both must give the bits of this per-output
// loop, each sum's terms in tap order: interleaved and planar input, down- and upscaling, output
// sizes and crop widths off the blocks of eight.
at::Tensor per_output_resized_crop(const at::Tensor& img_u8, const Box& b, int size) {
  struct Axis {
    std::vector<int64_t> start;
    std::vector<std::vector<float>> w;
  };
  auto axis = [](int64_t in, int64_t out) {
    Axis a;
    const double scale = double(in) / out, support = std::max(scale, 1.0);
    const auto taps = int64_t(std::ceil(support)) * 2 + 1;
    for (int64_t o = 0; o < out; ++o) {
      const double c = (o + 0.5) * scale;
      const int64_t lo = std::max<int64_t>(int64_t(c - support + 0.5), 0);
      const int64_t n = std::min(std::min<int64_t>(int64_t(c + support + 0.5), in) - lo, taps);
      std::vector<double> t(n);
      double total = 0;
      for (int64_t k = 0; k < n; ++k) total += t[k] = std::max(0.0, 1.0 - std::abs((k + lo - c + 0.5) / support));
      a.start.push_back(lo);
      a.w.emplace_back();
      for (int64_t k = 0; k < n; ++k) a.w.back().push_back(float(total > 0 ? t[k] / total : 0));
    }
    return a;
  };
  const auto ax = axis(b.width, size), ay = axis(b.height, size);
  const auto planar = img_u8.contiguous();
  auto img = planar.accessor<uint8_t, 3>();
  std::vector<float> tmp(3 * size * b.width);
  for (int c = 0; c < 3; ++c)
    for (int o = 0; o < size; ++o)
      for (int64_t x = 0; x < b.width; ++x) {
        float acc = 0;
        for (size_t k = 0; k < ay.w[o].size(); ++k)
          acc += ay.w[o][k] * float(img[c][b.top + ay.start[o] + int64_t(k)][b.left + x]);
        tmp[(c * size + o) * b.width + x] = acc;
      }
  auto out = torch::empty({3, size, size});
  auto d = out.accessor<float, 3>();
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < size; ++y)
      for (int o = 0; o < size; ++o) {
        float acc = 0;
        for (size_t k = 0; k < ax.w[o].size(); ++k) acc += ax.w[o][k] * tmp[(c * size + y) * b.width + ax.start[o] + int64_t(k)];
        const float v = acc * (1.f / 255.f);
        d[c][y][o] = v < 0.f ? 0.f : (v > 1.f ? 1.f : v);
      }
  return out;
}

TEST(AugmentResize, BlockedLoopsEqualThePerOutputSums) {
  torch::manual_seed(5);
  const auto hwc = torch::randint(0, 256, {83, 117, 3}, torch::kByte).permute({2, 0, 1});  // read_image's layout
  const auto planar = hwc.contiguous();
  ASSERT_EQ(hwc.stride(0), 1);
  const struct {
    Box box;
    int size;
  } cases[] = {{{0, 0, 83, 117}, 56},  {{11, 17, 70, 90}, 48}, {{5, 3, 30, 25}, 64},  {{2, 9, 13, 7}, 37},
               {{40, 60, 43, 57}, 8},  {{0, 0, 83, 117}, 83},  {{1, 1, 1, 1}, 9},     {{70, 100, 13, 17}, 224},
               {{3, 4, 80, 31}, 21},   {{0, 0, 83, 117}, 13}};
  for (const auto& t : cases) {
    const auto want = per_output_resized_crop(planar, t.box, t.size);
    for (bool simd : {false, true})
      for (const auto* in : {&hwc, &planar}) {
        const auto got = resized_crop(*in, t.box, t.size, simd);
        EXPECT_TRUE(torch::equal(got, want))
            << "box " << t.box.top << "," << t.box.left << " " << t.box.height << "x" << t.box.width << " -> "
            << t.size << (simd ? " simd" : " scalar") << (in == &hwc ? " interleaved" : " planar")
            << ": max |diff| " << (got - want).abs().max().item<float>();
      }
  }
}

// gaussian_blur's loops are compiled for the baseline and for AVX2 (augment.cpp; simd = false
// runs the baseline's on any CPU); both must give the bits of this per-output loop: the row
// pass then the column pass, each sum 0 + k0 x0 + k1 x1 + ... in tap order, reflect padding,
// maps narrower than the kernel included.
TEST(AugmentBlur, EqualsThePerOutputSums) {
  torch::manual_seed(6);
  using Case = std::tuple<int, int, int, double>;  // H, W, kernel, sigma
  for (auto [H, W, kernel, sigma] : std::vector<Case>{{61, 37, 13, 2.0}, {224, 224, 5, 0.7}, {9, 5, 7, 1.3}, {1, 17, 3, 0.4}}) {
    const auto img = torch::rand({3, H, W});
    std::vector<float> k(kernel);
    double total = 0;
    for (int i = 0; i < kernel; ++i) {
      const double x = (i - kernel / 2) / sigma;
      total += k[i] = float(std::exp(-0.5 * x * x));
    }
    for (auto& v : k) v = float(v / total);
    auto reflect = [](int64_t i, int64_t n) {
      while (n > 1 && (i < 0 || i >= n)) i = i < 0 ? -i : 2 * (n - 1) - i;
      return n > 1 ? i : 0;
    };
    auto a = img.accessor<float, 3>();
    auto rows = torch::empty({3, H, W}), want = torch::empty({3, H, W});
    auto t = rows.accessor<float, 3>(), d = want.accessor<float, 3>();
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < H; ++y)
        for (int x = 0; x < W; ++x) {
          float acc = 0;
          for (int i = 0; i < kernel; ++i) acc += k[i] * a[c][y][reflect(x + i - kernel / 2, W)];
          t[c][y][x] = acc;
        }
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < H; ++y)
        for (int x = 0; x < W; ++x) {
          float acc = 0;
          for (int i = 0; i < kernel; ++i) acc += k[i] * t[c][reflect(y + i - kernel / 2, H)][x];
          d[c][y][x] = acc;
        }
    for (bool simd : {false, true}) {
      const auto got = gaussian_blur(img, kernel, sigma, simd);
      EXPECT_TRUE(torch::equal(got, want)) << H << "x" << W << " kernel " << kernel << (simd ? " simd" : " plain")
                                           << ": max |diff| " << (got - want).abs().max().item<float>();
    }
  }
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
