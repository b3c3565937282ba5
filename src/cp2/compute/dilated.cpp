#include "cp2/compute/dilated.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "cp2/common.h"
#include "cp2/compute/apply.h"
#include "cp2/compute/flops.h"
#include "cp2/compute/gemm.h"
#include "cp2/compute/precision.h"

namespace cp2::compute {

namespace {

// The output extent [lo, hi) over which tap k (0, 1, 2: offset (k-1)·d) reads the image of
// extent n; empty when d >= n for an outer tap.
struct Extent {
  int64_t lo, hi;
};
Extent extent(int64_t n, int64_t d, int k) {
  const int64_t off = (k - 1) * d;
  return {std::max<int64_t>(0, -off), std::min(n, n - off)};
}

// One tap that reads the image somewhere: its output rectangle and input offset.
struct Tap {
  int ky, kx;
  int64_t r0, r1, c0, c1;  // output rows [r0, r1), columns [c0, c1)
  int64_t dy, dx;          // input = output + (dy, dx)
  int64_t pixels(int64_t n) const { return n * (r1 - r0) * (c1 - c0); }
  bool centre() const { return ky == 1 && kx == 1; }
};

std::vector<Tap> taps(int64_t h, int64_t w, int64_t d) {
  std::vector<Tap> t;
  for (int ky = 0; ky < 3; ++ky)
    for (int kx = 0; kx < 3; ++kx) {
      const auto r = extent(h, d, ky), c = extent(w, d, kx);
      if (r.lo < r.hi && c.lo < c.hi) t.push_back({ky, kx, r.lo, r.hi, c.lo, c.hi, (ky - 1) * d, (kx - 1) * d});
    }
  return t;
}

// The most pixels an outer tap covers: the size of the per-tap buffers (the centre tap's
// GEMMs read and write the maps in place).
int64_t outer_pixels(const std::vector<Tap>& ts, int64_t n) {
  int64_t most = 0;
  for (const auto& t : ts)
    if (!t.centre()) most = std::max(most, t.pixels(n));
  return most;
}

float* floats(const at::Tensor& t) { return t.data_ptr<float>(); }

// The tap GEMMs (compute/gemm.h), named in their errors.
void tap_gemm(char ta, char tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
              int64_t ldb, float beta, float* c, int64_t ldc) {
  sgemm("dilated convolution", ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc);
}

// NHWC maps as [n][h][w][ch] floats. A rectangle of pixels (rows [r0, r1), columns [c0, c1)
// of every image) is a run of (c1-c0)·ch contiguous floats per image row.
struct Map {
  float* p;
  int64_t n, h, w, ch;
  float* at(int64_t i, int64_t r, int64_t c) const { return p + ((i * h + r) * w + c) * ch; }
};

// dst[pixels][ch] = the rectangle of `m` at rows r0.., columns c0.., of size rows × cols.
void gather(const Map& m, int64_t r0, int64_t rows, int64_t c0, int64_t cols, float* dst) {
  const int64_t run = cols * m.ch;
  at::parallel_for(0, m.n * rows, 16, [&](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; ++j)
      std::memcpy(dst + j * run, m.at(j / rows, r0 + j % rows, c0), sizeof(float) * run);
  });
}

// The rectangle of `m` += src[pixels][ch].
void scatter_add(const Map& m, int64_t r0, int64_t rows, int64_t c0, int64_t cols, const float* src) {
  const int64_t run = cols * m.ch;
  at::parallel_for(0, m.n * rows, 16, [&](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; ++j) {
      float* out = m.at(j / rows, r0 + j % rows, c0);
      const float* in = src + j * run;
      for (int64_t i = 0; i < run; ++i) out[i] += in[i];
    }
  });
}

at::Tensor nhwc(const at::Tensor& t) { return t.permute({0, 2, 3, 1}).contiguous(); }
Map map_of(const at::Tensor& t) { return {floats(t), t.size(0), t.size(1), t.size(2), t.size(3)}; }

// Counted as the dilated 3×3 (N,C,H,W) by (O,C,3,3) the taps make up: compute/flops.h counts its
// products that read the image, the ones the taps do.
void count(int64_t n, int64_t c, int64_t h, int64_t w, int64_t o, int64_t d, double times) {
  if (times > 0) count_conv_flops(same_conv3x3({n, c, h, w}, {o, c, 3, 3}, d), times);
}

// Weights as [O][3][3][C] (OHWI): tap (ky, kx) is the [O][C] matrix at (ky·3+kx)·C, leading
// dimension 9·C.
constexpr int64_t kTaps = 9;

struct TapConvFn : torch::autograd::Function<TapConvFn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            int64_t d) {
    ctx->save_for_backward({x, w});
    ctx->saved_data["d"] = d;
    const int64_t n = x.size(0), c = x.size(1), h = x.size(2), wd = x.size(3), o = w.size(0);
    const bool channels_last = is_channels_last(x);
    if (channels_last && onednn_avx512()) {
      // On channels-last input oneDNN's AVX-512 direct forward kernels skip most products over
      // the padding themselves and beat the tap GEMMs (cp2 bench conv: rate 12 on 32², 0.12 vs
      // 0.16 s); its AVX2 ones do not (rate 18 on 32²: 0.30 s, the taps 0.12 s), nor do any in
      // NCHW or in the backward passes. Counted here, as on the taps' path.
      at::Tensor y;
      {
        at::DisableRecordFunctionGuard uncounted;
        y = at::conv2d(x, w, {}, 1, d, d);
      }
      count(n, c, h, wd, o, d, 1);
      return y;
    }
    const auto ts = taps(h, wd, d);
    const auto xh = nhwc(x);
    const auto wo = nhwc(w);  // OHWI
    auto yh = at::empty({n, h, wd, o}, x.options());
    const Map X = map_of(xh), Y = map_of(yh);
    // The centre tap reads the image everywhere: one GEMM writes every output.
    tap_gemm('N', 'T', n * h * wd, o, c, floats(xh), c, floats(wo) + 4 * c, kTaps * c, 0.f, floats(yh), o);
    const int64_t most = outer_pixels(ts, n);
    auto a = at::empty({most * c}, x.options()), part = at::empty({most * o}, x.options());
    for (const auto& t : ts) {
      if (t.centre()) continue;
      const int64_t rows = t.r1 - t.r0, cols = t.c1 - t.c0, m = t.pixels(n);
      gather(X, t.r0 + t.dy, rows, t.c0 + t.dx, cols, floats(a));
      tap_gemm('N', 'T', m, o, c, floats(a), c, floats(wo) + (t.ky * 3 + t.kx) * c, kTaps * c, 0.f, floats(part), o);
      scatter_add(Y, t.r0, rows, t.c0, cols, floats(part));
    }
    count(n, c, h, wd, o, d, 1);
    const auto y = yh.permute({0, 3, 1, 2});  // channels-last memory, as the input's
    return channels_last ? y : y.contiguous();
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& w = saved[1];
    const int64_t d = ctx->saved_data["d"].toInt();
    const int64_t n = x.size(0), c = x.size(1), h = x.size(2), wd = x.size(3), o = w.size(0);
    const bool want_dx = ctx->needs_input_grad(0), want_dw = ctx->needs_input_grad(1);
    // Layout copies only for what is asked: x for the weight gradient, w for the input one.
    const auto gh = nhwc(grads[0]);
    const auto xh = want_dw ? nhwc(x) : at::Tensor();
    const auto wo = want_dx ? nhwc(w) : at::Tensor();
    const Map G = map_of(gh), X = want_dw ? map_of(xh) : Map{};
    const auto ts = taps(h, wd, d);
    const int64_t all = n * h * wd;
    at::Tensor dxh, dwo;
    if (want_dx) {
      dxh = at::empty({n, h, wd, c}, x.options());
      tap_gemm('N', 'N', all, c, o, floats(gh), o, floats(wo) + 4 * c, kTaps * c, 0.f, floats(dxh), c);
    }
    if (want_dw) {
      // Taps that never read the image get no gradient; the others are written below.
      dwo = ts.size() == kTaps ? at::empty({o, 3, 3, c}, w.options()) : at::zeros({o, 3, 3, c}, w.options());
      tap_gemm('T', 'N', o, c, all, floats(gh), o, floats(xh), c, 0.f, floats(dwo) + 4 * c, kTaps * c);
    }
    const int64_t most = outer_pixels(ts, n);
    auto g = at::empty({most * o}, x.options()), a = at::empty({most * c}, x.options());
    const Map DX = want_dx ? map_of(dxh) : Map{};
    for (const auto& t : ts) {
      if (t.centre()) continue;
      const int64_t rows = t.r1 - t.r0, cols = t.c1 - t.c0, m = t.pixels(n);
      const int64_t tap = (t.ky * 3 + t.kx) * c;
      gather(G, t.r0, rows, t.c0, cols, floats(g));
      if (want_dw) {
        gather(X, t.r0 + t.dy, rows, t.c0 + t.dx, cols, floats(a));
        tap_gemm('T', 'N', o, c, m, floats(g), o, floats(a), c, 0.f, floats(dwo) + tap, kTaps * c);
      }
      if (want_dx) {
        tap_gemm('N', 'N', m, c, o, floats(g), o, floats(wo) + tap, kTaps * c, 0.f, floats(a), c);
        scatter_add(DX, t.r0 + t.dy, rows, t.c0 + t.dx, cols, floats(a));
      }
    }
    count(n, c, h, wd, o, d, (want_dx ? 1 : 0) + (want_dw ? 1 : 0));
    at::Tensor dx, dw;
    if (want_dx) {
      dx = dxh.permute({0, 3, 1, 2});
      if (!is_channels_last(x)) dx = dx.contiguous();
    }
    if (want_dw) {
      dw = dwo.permute({0, 3, 1, 2});
      if (!is_channels_last(w)) dw = dw.contiguous();
    }
    return {dx, dw, at::Tensor()};
  }
};

}  // namespace

double dilated_taps_kept(int64_t h, int64_t w, int64_t d) {
  if (h <= 0 || w <= 0 || d < 1) return 1.0;
  auto share = [d](int64_t n) {
    int64_t s = 0;
    for (int k = 0; k < 3; ++k) {
      const auto e = extent(n, d, k);
      s += std::max<int64_t>(0, e.hi - e.lo);
    }
    return static_cast<double>(s) / (3.0 * static_cast<double>(n));
  };
  return share(h) * share(w);
}

at::Tensor dilated_conv3x3_taps(const at::Tensor& x, const at::Tensor& weight, int64_t d) {
  if (x.dim() != 4 || weight.dim() != 4 || weight.size(2) != 3 || weight.size(3) != 3 || x.size(1) != weight.size(1))
    throw Error("dilated_conv3x3_taps: expected input (N,C,H,W) and weight (O,C,3,3), found " +
                shape_str(x.sizes().vec()) + " and " + shape_str(weight.sizes().vec()));
  if (!x.device().is_cpu() || x.scalar_type() != at::kFloat || weight.scalar_type() != at::kFloat)
    throw Error("dilated_conv3x3_taps: expected fp32 CPU tensors");
  if (d < 1) throw Error("dilated_conv3x3_taps: expected dilation >= 1, found " + std::to_string(d));
  RECORD_USER_SCOPE("cp2::dilated_conv3x3_taps");  // its forward in cp2 bench --profile
  return apply_function<TapConvFn>(x, weight, d);
}

}  // namespace cp2::compute
