#include "cp2/data/augment.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

#include "cp2/common.h"
#include "cp2/data/simd.h"

// Everything here runs in loader threads: plain loops over CPU buffers, no ATen
// kernels, so the data pipeline never competes for LibTorch's intra-op thread pool.
namespace cp2::data {

void ViewOptions::validate() const {
  auto bad = [](const std::string& key, const std::string& expected, double found) {
    throw Error("view." + key + ": expected " + expected + ", found " + num_str(found));
  };
  if (size < 8) bad("size", ">= 8", size);
  if (!(scale_min > 0 && scale_min <= scale_max && scale_max <= 1)) bad("scale_min/scale_max", "0 < min <= max <= 1", scale_min);
  if (!(ratio_min > 0 && ratio_min <= ratio_max)) bad("ratio_min/ratio_max", "0 < min <= max", ratio_min);
  for (auto [k, v] : {std::pair{"jitter_p", jitter_p}, {"gray_p", gray_p}, {"blur_p", blur_p}, {"flip_p", flip_p}})
    if (v < 0 || v > 1) bad(k, "a probability in [0, 1]", v);
  if (brightness < 0 || contrast < 0 || saturation < 0) bad("brightness/contrast/saturation", ">= 0", std::min({brightness, contrast, saturation}));
  if (hue < 0 || hue > 0.5) bad("hue", "0..0.5", hue);
  if (!(sigma_min > 0 && sigma_min <= sigma_max)) bad("sigma_min/sigma_max", "0 < min <= max", sigma_min);
  if (blur_kernel < 0 || (blur_kernel > 0 && blur_kernel % 2 == 0)) bad("blur_kernel", "0 (auto) or an odd size", blur_kernel);
  for (double s : std) if (s <= 0) bad("std", "> 0", s);
}

// Python's round() (half to even), as torchvision's int(round(...)).
static int64_t pyround(double x) { return static_cast<int64_t>(std::nearbyint(x)); }

// The draw loop shared by torchvision's RandomResizedCrop and RandomErasing: 10 tries of
// (area share, log-uniform aspect), placed uniformly. RandomResizedCrop reads the aspect
// as w/h and accepts boxes up to the image size; RandomErasing reads it as h/w and needs
// boxes strictly smaller than the image.
static std::optional<Box> draw_box(int64_t H, int64_t W, double smin, double smax, double rmin, double rmax,
                                   bool erasing, Rng& rng) {
  const double area = static_cast<double>(H) * W, lr0 = std::log(rmin), lr1 = std::log(rmax);
  for (int t = 0; t < 10; ++t) {
    const double target = area * rng.uniform(smin, smax), aspect = std::exp(rng.uniform(lr0, lr1));
    const int64_t a = pyround(std::sqrt(target * aspect)), b = pyround(std::sqrt(target / aspect));
    const int64_t h = erasing ? a : b, w = erasing ? b : a;
    const bool fits = erasing ? (h < H && w < W) : (0 < w && w <= W && 0 < h && h <= H);
    if (!fits) continue;
    const int64_t i = rng.randint(0, H - h + 1), j = rng.randint(0, W - w + 1);
    return Box{i, j, h, w};
  }
  return std::nullopt;
}

Box sample_resized_crop(int64_t H, int64_t W, double smin, double smax, double rmin, double rmax, Rng& rng) {
  if (auto b = draw_box(H, W, smin, smax, rmin, rmax, /*erasing=*/false, rng)) return *b;
  double in_ratio = static_cast<double>(W) / H;
  int64_t w = W, h = H;
  if (in_ratio < rmin) h = pyround(w / rmin);
  else if (in_ratio > rmax) w = pyround(h * rmax);
  return {(H - h) / 2, (W - w) / 2, h, w};
}

Box sample_erasing(int64_t H, int64_t W, double smin, double smax, double rmin, double rmax, Rng& rng) {
  if (auto b = draw_box(H, W, smin, smax, rmin, rmax, /*erasing=*/true, rng)) return *b;
  const double area = static_cast<double>(H) * W;
  // Fallback (see header): centred, minimum area, ratio 1, shrunk to fit, never empty.
  int64_t side = std::max<int64_t>(1, pyround(std::sqrt(area * smin)));
  int64_t h = std::min(side, H - 1 > 0 ? H - 1 : 1), w = std::min(side, W - 1 > 0 ? W - 1 : 1);
  return {(H - h) / 2, (W - w) / 2, h, w};
}

ViewParams draw_view(int64_t H, int64_t W, const ViewOptions& o, Rng& rng) {
  ViewParams p;
  p.crop = sample_resized_crop(H, W, o.scale_min, o.scale_max, o.ratio_min, o.ratio_max, rng);
  p.jitter = rng.bernoulli(o.jitter_p);
  if (p.jitter) {
    auto perm = rng.permutation(4);
    for (int i = 0; i < 4; ++i) p.order[i] = static_cast<int>(perm[i]);
    p.brightness = rng.uniform(std::max(0.0, 1 - o.brightness), 1 + o.brightness);
    p.contrast = rng.uniform(std::max(0.0, 1 - o.contrast), 1 + o.contrast);
    p.saturation = rng.uniform(std::max(0.0, 1 - o.saturation), 1 + o.saturation);
    p.hue = rng.uniform(-o.hue, o.hue);
  }
  p.gray = rng.bernoulli(o.gray_p);
  p.blur = rng.bernoulli(o.blur_p);
  if (p.blur) {
    p.sigma = rng.uniform(o.sigma_min, o.sigma_max);
    p.kernel = o.blur_kernel > 0 ? o.blur_kernel : 2 * static_cast<int>(std::ceil(3 * p.sigma)) + 1;
  }
  p.flip = rng.bernoulli(o.flip_p);
  return p;
}

namespace {

inline float gray_of(float r, float g, float b) { return 0.299f * r + 0.587f * g + 0.114f * b; }
inline float clamp01(float v) { return v < 0.f ? 0.f : (v > 1.f ? 1.f : v); }

// Four or eight floats as one value (GCC's vector extension): an SSE/NEON register in the
// baseline's entry point, an AVX2 one in AVX2's; element-wise + and * round as the scalar ones.
typedef float F4 __attribute__((vector_size(16)));
typedef float F8 __attribute__((vector_size(32)));

// out[x] = 0 + k0·src0[x] + k1·src1[x] + ... in tap order, x in [0, W): four vectors of
// outputs at a time summed in registers across the taps. Lane by lane the same operations as
// adding each tap's products into `out` in turn (the former loops), without loading and
// storing `out` per tap: 1.6× faster blurs at kernel 13 on AVX2.
template <class V>
__attribute__((always_inline)) inline void tap_sums(float* out, const float* const* src, const float* k, int64_t taps,
                                                    int64_t W) {
  constexpr int64_t L = sizeof(V) / sizeof(float);
  V ones;
  for (int64_t i = 0; i < L; ++i) ones[i] = 1.f;
  int64_t x = 0;
  for (; x + 4 * L <= W; x += 4 * L) {
    V a0 = {}, a1 = {}, a2 = {}, a3 = {};
    for (int64_t t = 0; t < taps; ++t) {
      const V kv = ones * k[t];  // broadcast, exact
      // Loads by memcpy, not a helper returning V: an AVX2 value returned by a baseline function
      // changes the ABI (GCC's -Wpsabi).
      const float* p = src[t] + x;
      V r0, r1, r2, r3;
      std::memcpy(&r0, p, sizeof r0);
      std::memcpy(&r1, p + L, sizeof r1);
      std::memcpy(&r2, p + 2 * L, sizeof r2);
      std::memcpy(&r3, p + 3 * L, sizeof r3);
      a0 += kv * r0;
      a1 += kv * r1;
      a2 += kv * r2;
      a3 += kv * r3;
    }
    std::memcpy(out + x, &a0, sizeof a0);
    std::memcpy(out + x + L, &a1, sizeof a1);
    std::memcpy(out + x + 2 * L, &a2, sizeof a2);
    std::memcpy(out + x + 3 * L, &a3, sizeof a3);
  }
  for (; x < W; ++x) {
    float acc = 0.f;
    for (int64_t t = 0; t < taps; ++t) acc += k[t] * src[t][x];
    out[x] = acc;
  }
}

// gaussian_blur's separable passes over the three planes of s (H x W each) into d, each over a
// reflect-padded copy (rows via rx into a row buffer, columns via ry over the row pass's
// output), so the inner loops are plain and vectorise. Inlined into a baseline and an AVX2
// entry point (simd.h): each output lane by lane, no reduction vectorised, so the same bits.
template <class V>
__attribute__((always_inline)) inline void blur_planes(const float* s, float* d, int64_t H, int64_t W,
                                                       const std::vector<float>& k, const std::vector<int64_t>& rx,
                                                       const std::vector<int64_t>& ry) {
  const auto kernel = static_cast<int64_t>(k.size()), half = kernel / 2;
  std::vector<float> row_buf(W + 2 * half), tmp_buf(H * W);
  std::vector<const float*> src(kernel);
  float *row = row_buf.data(), *tmp = tmp_buf.data();
  for (int64_t c = 0; c < 3; ++c) {
    const float* sc = s + c * H * W;
    for (int64_t t = 0; t < kernel; ++t) src[t] = row + t;
    for (int64_t y = 0; y < H; ++y) {
      for (int64_t x = 0; x < W + 2 * half; ++x) row[x] = sc[y * W + rx[x]];
      tap_sums<V>(tmp + y * W, src.data(), k.data(), kernel, W);
    }
    float* dc = d + c * H * W;
    for (int64_t y = 0; y < H; ++y) {
      for (int64_t t = 0; t < kernel; ++t) src[t] = tmp + ry[y + t] * W;
      tap_sums<V>(dc + y * W, src.data(), k.data(), kernel, W);
    }
  }
}

void blur_planes_plain(const float* s, float* d, int64_t H, int64_t W, const std::vector<float>& k,
                       const std::vector<int64_t>& rx, const std::vector<int64_t>& ry) {
  blur_planes<F4>(s, d, H, W, k, rx, ry);
}

#if defined(__x86_64__)
CP2_AVX2 void blur_planes_avx2(const float* s, float* d, int64_t H, int64_t W, const std::vector<float>& k,
                               const std::vector<int64_t>& rx, const std::vector<int64_t>& ry) {
  blur_planes<F8>(s, d, H, W, k, rx, ry);
}
#endif

}  // namespace

void check_float_image(const at::Tensor& img) {
  TORCH_CHECK(img.dim() == 3 && img.size(0) == 3 && img.scalar_type() == at::kFloat && img.is_contiguous() &&
                  img.device().is_cpu(),
              "expected a contiguous float 3 x H x W CPU image");
}

void adjust_brightness(at::Tensor& img, double f) {
  check_float_image(img);
  float* p = img.data_ptr<float>();
  for (int64_t i = 0, n = img.numel(); i < n; ++i) p[i] = clamp01(p[i] * static_cast<float>(f));
}

void adjust_contrast(at::Tensor& img, double f) {
  check_float_image(img);
  const int64_t n = img.size(1) * img.size(2);
  float* r = img.data_ptr<float>();
  float *g = r + n, *b = g + n;
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += gray_of(r[i], g[i], b[i]);
  const float mean = static_cast<float>(sum / n), ff = static_cast<float>(f), base = (1 - ff) * mean;
  for (int64_t i = 0; i < 3 * n; ++i) r[i] = clamp01(ff * r[i] + base);
}

void adjust_saturation(at::Tensor& img, double f) {
  check_float_image(img);
  const int64_t n = img.size(1) * img.size(2);
  float* r = img.data_ptr<float>();
  float *g = r + n, *b = g + n;
  const float ff = static_cast<float>(f);
  for (int64_t i = 0; i < n; ++i) {
    float base = (1 - ff) * gray_of(r[i], g[i], b[i]);
    r[i] = clamp01(ff * r[i] + base);
    g[i] = clamp01(ff * g[i] + base);
    b[i] = clamp01(ff * b[i] + base);
  }
}

void to_grayscale(at::Tensor& img) {
  check_float_image(img);
  const int64_t n = img.size(1) * img.size(2);
  float* r = img.data_ptr<float>();
  float *g = r + n, *b = g + n;
  for (int64_t i = 0; i < n; ++i) r[i] = g[i] = b[i] = gray_of(r[i], g[i], b[i]);
}

at::Tensor gaussian_blur(const at::Tensor& img, int kernel, double sigma, bool simd) {
  check_float_image(img);
  TORCH_CHECK(kernel > 0 && kernel % 2 == 1 && sigma > 0, "blur kernel must be odd and sigma > 0");
  const int64_t H = img.size(1), W = img.size(2);
  const int half = kernel / 2;
  // torchvision's kernel: exp(-x^2 / 2 sigma^2) on x = -half..half, normalised.
  std::vector<float> k(kernel);
  double total = 0;
  for (int i = 0; i < kernel; ++i) {
    double x = i - half;
    k[i] = static_cast<float>(std::exp(-0.5 * (x / sigma) * (x / sigma)));
    total += k[i];
  }
  for (auto& v : k) v = static_cast<float>(v / total);
  auto reflect = [](int64_t i, int64_t n) {  // numpy/torch "reflect" (edge not repeated)
    if (n == 1) return int64_t{0};
    while (i < 0 || i >= n) i = i < 0 ? -i : 2 * (n - 1) - i;
    return i;
  };
  std::vector<int64_t> rx(W + 2 * half), ry(H + 2 * half);
  for (int64_t x = 0; x < W + 2 * half; ++x) rx[x] = reflect(x - half, W);
  for (int64_t y = 0; y < H + 2 * half; ++y) ry[y] = reflect(y - half, H);
  auto out = torch::empty_like(img);
#if defined(__x86_64__)
  if (simd && has_avx2()) {
    blur_planes_avx2(img.data_ptr<float>(), out.data_ptr<float>(), H, W, k, rx, ry);
    return out;
  }
#else
  (void)simd;
#endif
  blur_planes_plain(img.data_ptr<float>(), out.data_ptr<float>(), H, W, k, rx, ry);
  return out;
}

void hflip(at::Tensor& img) {
  check_float_image(img);
  const int64_t H = img.size(1), W = img.size(2);
  float* p = img.data_ptr<float>();
  for (int64_t r = 0; r < 3 * H; ++r) std::reverse(p + r * W, p + (r + 1) * W);
}

void normalize(at::Tensor& img, const std::array<double, 3>& mean, const std::array<double, 3>& std) {
  check_float_image(img);
  const int64_t n = img.size(1) * img.size(2);
  float* p = img.data_ptr<float>();
  for (int c = 0; c < 3; ++c) {
    const float m = static_cast<float>(mean[c]), inv = static_cast<float>(1.0 / std[c]);
    for (int64_t i = 0; i < n; ++i) p[c * n + i] = (p[c * n + i] - m) * inv;
  }
}

at::Tensor apply_view(const at::Tensor& img_u8, const ViewParams& p, const ViewOptions& o) {
  auto x = resized_crop(img_u8, p.crop, o.size);
  if (p.jitter)
    for (int op : p.order) switch (op) {
        case 0: adjust_brightness(x, p.brightness); break;
        case 1: adjust_contrast(x, p.contrast); break;
        case 2: adjust_saturation(x, p.saturation); break;
        default: adjust_hue(x, p.hue); break;
      }
  if (p.gray) to_grayscale(x);
  if (p.blur) x = gaussian_blur(x, p.kernel, p.sigma);
  if (p.flip) hflip(x);
  normalize(x, o.mean, o.std);
  return x;
}

}  // namespace cp2::data
