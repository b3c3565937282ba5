#include "cp2/data/view_bench.h"

#include <torch/torch.h>

#include <cstdio>
#include <functional>
#include <vector>

#include "cp2/common.h"
#include "cp2/data/augment.h"
#include "cp2/data/hue.h"
#include "cp2/data/image.h"

namespace cp2::data {

void ViewBenchOptions::validate() const {
  auto bad = [](const std::string& key, const std::string& expected, double found) {
    throw Error("--" + key + ": expected " + expected + ", found " + num_str(found));
  };
  if (image.empty() && (width < 8 || height < 8)) bad(width < 8 ? "width" : "height", ">= 8", std::min(width, height));
  if (size < 8) bad("size", ">= 8", size);
  if (rounds < 1) bad("rounds", ">= 1", rounds);
}

namespace {

// ms per call of f(i), i = 0..rounds-1: the best of three timings after one untimed call.
double ms_per_call(int rounds, const std::function<void(int)>& f) {
  f(0);
  double best = 1e300;
  for (int t = 0; t < 3; ++t) {
    const auto t0 = Clock::now();
    for (int i = 0; i < rounds; ++i) f(i);
    best = std::min(best, seconds_since(t0));
  }
  return 1000 * best / rounds;
}

}  // namespace

void bench_view(const ViewBenchOptions& o) {
  o.validate();
  at::Tensor img;
  double decode_ms = 0;
  if (!o.image.empty()) {
    decode_ms = ms_per_call(std::max(1, o.rounds / 10), [&](int) { img = read_image(o.image); });
  } else {
    // Random pixels in the interleaved layout read_image returns.
    auto hwc = torch::empty({o.height, o.width, 3}, torch::kByte);
    Rng pixels(1);
    uint8_t* px = hwc.data_ptr<uint8_t>();
    for (int64_t i = 0; i < hwc.numel(); ++i) px[i] = static_cast<uint8_t>(pixels.uniform01() * 256);
    img = hwc.permute({2, 0, 1});
  }
  const int64_t H = img.size(1), W = img.size(2);
  ViewOptions vo;
  vo.size = o.size;
  vo.validate();
  // The same crop boxes (RandomResizedCrop's draw) for both loop nests.
  Rng rng(7);
  std::vector<Box> boxes;
  for (int i = 0; i < o.rounds; ++i)
    boxes.push_back(sample_resized_crop(H, W, vo.scale_min, vo.scale_max, vo.ratio_min, vo.ratio_max, rng));
  std::printf("cp2 bench view: %s (%lldx%lld), %d px views, %d calls per timing (best of 3), one thread\n",
              o.image.empty() ? "random pixels" : o.image.c_str(), static_cast<long long>(W), static_cast<long long>(H),
              o.size, o.rounds);
  if (!o.image.empty()) std::printf("  %-36s %8.3f ms\n", "decode (read_image)", decode_ms);
  auto line = [](const char* name, double ms, const char* note = "") {
    std::printf("  %-36s %8.3f ms%s\n", name, ms, note);
  };
  const double crop_simd = ms_per_call(o.rounds, [&](int i) { resized_crop(img, boxes[i], o.size, true); });
  const double crop_plain = ms_per_call(o.rounds, [&](int i) { resized_crop(img, boxes[i], o.size, false); });
  line("resized_crop, AVX2 loops", crop_simd, "  (plain loops where the CPU has no AVX2)");
  line("resized_crop, plain loops", crop_plain);
  // The colour ops on one view, in place, with factors that keep it in [0, 1] on average.
  auto x = resized_crop(img, boxes[0], o.size);
  line("adjust_brightness", ms_per_call(o.rounds, [&](int i) { adjust_brightness(x, i % 2 ? 1.1 : 0.9); }));
  line("adjust_contrast", ms_per_call(o.rounds, [&](int i) { adjust_contrast(x, i % 2 ? 1.1 : 0.9); }));
  line("adjust_saturation", ms_per_call(o.rounds, [&](int i) { adjust_saturation(x, i % 2 ? 1.1 : 0.9); }));
  const int64_t n = x.size(1) * x.size(2);
  float* p = x.data_ptr<float>();
  auto hue = [&](bool simd) {
    return ms_per_call(o.rounds, [&](int i) { hue_shift_pixels(p, p + n, p + 2 * n, n, i % 2 ? 0.05 : -0.05, simd); });
  };
  line("adjust_hue, AVX2 loop", hue(true), "  (scalar loop where the CPU has no AVX2)");
  line("adjust_hue, scalar loop", hue(false));
  line("to_grayscale", ms_per_call(o.rounds, [&](int) { to_grayscale(x); }));
  auto blur = [&](int kernel, double sigma, bool simd) {
    return ms_per_call(o.rounds, [&](int) { gaussian_blur(x, kernel, sigma, simd); });
  };
  line("gaussian_blur k13 (sigma 2), AVX2", blur(13, 2.0, true), "  (plain loops where the CPU has no AVX2)");
  line("gaussian_blur k13 (sigma 2), plain", blur(13, 2.0, false));
  line("gaussian_blur k5 (sigma 0.7), AVX2", blur(5, 0.7, true));
  line("gaussian_blur k5 (sigma 0.7), plain", blur(5, 0.7, false));
  line("hflip", ms_per_call(o.rounds, [&](int) { hflip(x); }));
  // Mean 0 and std 1: the same operations, without the values growing call after call.
  line("normalize", ms_per_call(o.rounds, [&](int) { normalize(x, {0, 0, 0}, {1, 1, 1}); }));
  // Whole views with parameters drawn as in training (MoCo v2's probabilities).
  std::vector<ViewParams> params;
  for (int i = 0; i < o.rounds; ++i) params.push_back(draw_view(H, W, vo, rng));
  const double view = ms_per_call(o.rounds, [&](int i) { apply_view(img, params[i], vo); });
  line("apply_view, drawn parameters", view);
  // A CP² sample (copypaste.cpp's compose): the image and two backgrounds decoded, two views
  // of the image and one of each background.
  std::printf("  a CP2 sample (3 decodes, 4 views): %.1f samples/s per loader thread%s, before pasting and collation\n",
              1000.0 / (4 * view + 3 * decode_ms), o.image.empty() ? " without the decodes" : "");
}

}  // namespace cp2::data
