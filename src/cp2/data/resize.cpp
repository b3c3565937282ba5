// RandomResizedCrop's resize (augment.h's resized_crop): PIL's antialiased bilinear filter,
// separable, in floats without rounding in between. The vertical pass goes first (PIL runs the
// horizontal one first; without the rounding the order changes nothing but round-off): it runs
// over whole crop rows and shrinks a tall crop before the per-output pass. Two loop nests
// give the same bits: the plain one (a sum per output) everywhere, and on AVX2 one that runs
// across outputs (eight rows of a column at a time, after a transpose) while each output's sum
// keeps its terms in tap order. 2.5x the plain one on a 224 px view (Intel Xeon).
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "cp2/data/augment.h"
#include "cp2/data/simd.h"

namespace cp2::data {

namespace {

// PIL / torchvision antialiased bilinear weights for one axis: output o samples the
// triangle filter widened by the downscale factor around centre (o + 0.5) * scale.
struct AxisWeights {
  std::vector<int64_t> start, count;
  std::vector<float> w;  // count[o] weights at o * taps
  int64_t taps = 0;
};

AxisWeights axis_weights(int64_t in, int64_t out) {
  AxisWeights a;
  const double scale = static_cast<double>(in) / out, fscale = std::max(scale, 1.0), support = fscale;
  a.taps = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  a.start.resize(out);
  a.count.resize(out);
  a.w.assign(out * a.taps, 0.f);
  for (int64_t o = 0; o < out; ++o) {
    const double c = (o + 0.5) * scale;
    int64_t lo = std::max<int64_t>(static_cast<int64_t>(c - support + 0.5), 0);
    int64_t hi = std::min<int64_t>(static_cast<int64_t>(c + support + 0.5), in);
    int64_t n = std::min(hi - lo, a.taps);
    double total = 0;
    std::vector<double> tmp(n);
    for (int64_t k = 0; k < n; ++k) {
      double x = (k + lo - c + 0.5) / fscale;
      tmp[k] = std::max(0.0, 1.0 - std::abs(x));
      total += tmp[k];
    }
    for (int64_t k = 0; k < n; ++k) a.w[o * a.taps + k] = static_cast<float>(total > 0 ? tmp[k] / total : 0);
    a.start[o] = lo;
    a.count[o] = n;
  }
  return a;
}

// Where a crop lies in the source: byte strides of a channel, a row and a pixel
// (interleaved H x W x 3: 1, 3W, 3; planar: HW, W, 1).
struct Source {
  const uint8_t* data;
  int64_t ch, row, px, top, left;
  bool interleaved() const { return px == 3; }
  const uint8_t* at(int64_t c, int64_t y) const { return data + c * ch + (top + y) * row + left * px; }
};

// The vertical pass's sums for output row o over n source values from channel c: the whole
// crop row (all three channels, interleaved) or one channel's (planar). Always inlined, so that
// the AVX2 loop nest has it vectorised for AVX2.
__attribute__((always_inline)) inline void vertical_row(const Source& s, const AxisWeights& ay, int64_t o, int64_t c,
                                                        int64_t n, float* __restrict a) {
  std::fill(a, a + n, 0.f);
  const float* w = ay.w.data() + o * ay.taps;
  for (int64_t k = 0; k < ay.count[o]; ++k) {
    const uint8_t* __restrict r = s.at(c, ay.start[o] + k);
    const float wk = w[k];
    for (int64_t j = 0; j < n; ++j) a[j] += wk * static_cast<float>(r[j]);
  }
}

inline float to_unit(float sum) {
  const float v = sum * (1.f / 255.f);
  return v < 0.f ? 0.f : (v > 1.f ? 1.f : v);
}

// The plain loop nest: the vertical pass to a 3 x size x width buffer, then one sum per output.
void resize_plain(const Source& s, int64_t Wc, int64_t S, const AxisWeights& ax, const AxisWeights& ay, float* out) {
  std::vector<float> tmp(3 * S * Wc), acc(3 * Wc);
  for (int64_t c = 0; c < (s.interleaved() ? 1 : 3); ++c)
    for (int64_t o = 0; o < S; ++o) {
      const int64_t n = s.interleaved() ? 3 * Wc : Wc;
      vertical_row(s, ay, o, c, n, acc.data());
      if (!s.interleaved()) {
        std::copy(acc.begin(), acc.begin() + Wc, tmp.begin() + (c * S + o) * Wc);
        continue;
      }
      for (int64_t cc = 0; cc < 3; ++cc) {  // de-interleaved
        float* t = tmp.data() + (cc * S + o) * Wc;
        for (int64_t x = 0; x < Wc; ++x) t[x] = acc[3 * x + cc];
      }
    }
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t y = 0; y < S; ++y) {
      const float* t = tmp.data() + (c * S + y) * Wc;
      float* d = out + (c * S + y) * S;
      for (int64_t o = 0; o < S; ++o) {
        const float* w = ax.w.data() + o * ax.taps;
        const float* r = t + ax.start[o];
        float acc = 0;
        for (int64_t k = 0; k < ax.count[o]; ++k) acc += w[k] * r[k];
        d[o] = to_unit(acc);
      }
    }
}

#if defined(__x86_64__)
// The 8 x 8 floats at in[i * in_stride + j] (i, j < 8) to out[j] (rows i as lanes).
CP2_AVX2 inline void transpose8(const float* in, int64_t in_stride, __m256 (&out)[8]) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(in + i * in_stride);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    out[i] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x20);
    out[i + 4] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x31);
  }
}

// The blocked loop nest. Output rows go eight at a time: the vertical pass's 8 x n sums (the
// compiler vectorises vertical_row here for AVX2) are transposed into blocks of 3 x width x 8,
// eight rows of one column and channel side by side, so that the horizontal pass multiplies and
// adds one 8-lane vector per tap and gives eight rows of an output column at once; a second
// transpose puts eight such columns back into rows. Each lane's sum is 0 + w0 x0 + w1 x1 + ...,
// as in resize_plain, multiplies and adds apart (-ffp-contract=off; no FMA here).
CP2_AVX2 void resize_blocked(const Source& s, int64_t Wc, int64_t S, const AxisWeights& ax, const AxisWeights& ay,
                             float* out) {
  const int64_t n = s.interleaved() ? 3 * Wc : Wc;  // sums per source row
  std::unique_ptr<float[]> buf(new float[8 * n + 3 * Wc * 8 + S * 8]);  // each written before read
  float *acc = buf.get(), *tmp = acc + 8 * n, *cols = tmp + 3 * Wc * 8;
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.f), inv255 = _mm256_set1_ps(1.f / 255.f);
  for (int64_t o0 = 0; o0 < S; o0 += 8) {
    const int64_t rows = std::min<int64_t>(8, S - o0);
    for (int64_t c = 0; c < (s.interleaved() ? 1 : 3); ++c) {
      for (int64_t r = 0; r < 8; ++r)
        if (r < rows) vertical_row(s, ay, o0 + r, c, n, acc + r * n);
        else std::fill(acc + r * n, acc + (r + 1) * n, 0.f);
      // Sum j of a row: channel j % 3 of column j / 3 (interleaved) or column j of channel c.
      auto block = [&](int64_t j) {
        return tmp + (s.interleaved() ? (j % 3) * Wc + j / 3 : c * Wc + j) * 8;
      };
      int64_t j = 0;
      for (__m256 v[8]; j + 8 <= n; j += 8) {
        transpose8(acc + j, n, v);
        for (int i = 0; i < 8; ++i) _mm256_storeu_ps(block(j + i), v[i]);
      }
      for (; j < n; ++j)
        for (int64_t r = 0; r < 8; ++r) block(j)[r] = acc[r * n + j];
    }
    for (int64_t c = 0; c < 3; ++c) {
      for (int64_t o = 0; o < S; ++o) {
        __m256 v = zero;
        const float* w = ax.w.data() + o * ax.taps;
        for (int64_t k = 0; k < ax.count[o]; ++k)
          v = _mm256_add_ps(v, _mm256_mul_ps(_mm256_set1_ps(w[k]), _mm256_loadu_ps(tmp + (c * Wc + ax.start[o] + k) * 8)));
        // to_unit lane by lane: the sums are >= 0 and never NaN, so min-then-max clamps alike.
        _mm256_storeu_ps(cols + o * 8, _mm256_max_ps(_mm256_min_ps(_mm256_mul_ps(v, inv255), one), zero));
      }
      float* d = out + (c * S + o0) * S;
      int64_t x = 0;
      for (__m256 v[8]; x + 8 <= S; x += 8) {
        transpose8(cols + x * 8, 8, v);
        for (int64_t r = 0; r < rows; ++r) _mm256_storeu_ps(d + r * S + x, v[r]);
      }
      for (; x < S; ++x)
        for (int64_t r = 0; r < rows; ++r) d[r * S + x] = cols[x * 8 + r];
    }
  }
}
#endif

}  // namespace

at::Tensor resized_crop(const at::Tensor& img_u8, const Box& b, int size, bool simd) {
  TORCH_CHECK(img_u8.dim() == 3 && img_u8.size(0) == 3 && img_u8.scalar_type() == at::kByte, "expected uint8 3 x H x W");
  const int64_t H = img_u8.size(1), W = img_u8.size(2);
  TORCH_CHECK(b.top >= 0 && b.left >= 0 && b.height > 0 && b.width > 0 && b.top + b.height <= H && b.left + b.width <= W,
              "crop box outside the image");
  TORCH_CHECK(size > 0, "resized_crop: expected an output size > 0, found ", size);
  // Interleaved (H x W x 3 memory viewed as 3 x H x W, what read_image returns) or planar.
  const bool hwc = img_u8.stride(0) == 1 && img_u8.stride(2) == 3 && img_u8.stride(1) == 3 * W;
  auto src = hwc ? img_u8 : img_u8.contiguous();
  const Source s{src.data_ptr<uint8_t>(), hwc ? 1 : H * W, hwc ? 3 * W : W, hwc ? 3 : 1, b.top, b.left};
  const auto ax = axis_weights(b.width, size), ay = axis_weights(b.height, size);
  auto out = torch::empty({3, size, size}, torch::kFloat);
#if defined(__x86_64__)
  if (simd && has_avx2()) {
    resize_blocked(s, b.width, size, ax, ay, out.data_ptr<float>());
    return out;
  }
#else
  (void)simd;
#endif
  resize_plain(s, b.width, size, ax, ay, out.data_ptr<float>());
  return out;
}

}  // namespace cp2::data
