#include "cp2/compute/winograd_tiles.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdlib>
#include <vector>

#include "cp2/common.h"
#include "cp2/compute/apply.h"
#include "cp2/compute/flops.h"
#include "cp2/compute/gemm.h"
#include "cp2/compute/precision.h"
#include "cp2/compute/winograd.h"
#include "cp2/compute/winograd_avx2.h"

namespace cp2::compute {

namespace {

using wino::Geometry;

// The Winograd-domain buffers of one call (filters, tiles, products) live only during it. A
// per-thread arena grown to the largest call's need holds them, as oneDNN's path does its
// scratchpads (winograd.cpp): fresh buffers of these sizes are a fresh mmap and page faults
// per call wherever cp2's caching allocator is not installed (LibTorch 2.x builds, tests),
// which at 32 tiles cost more than the GEMMs saved. Each call reserves its total first, then
// carves its buffers; a reserve() ends the previous call's.
class Arena {
 public:
  Arena() = default;
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  ~Arena() { std::free(p_); }
  void reserve(int64_t floats) {
    used_ = 0;
    if (floats <= cap_) return;
    std::free(p_);
    p_ = static_cast<float*>(std::aligned_alloc(64, static_cast<size_t>(floats) * sizeof(float)));
    if (!p_) {
      cap_ = 0;
      throw Error("winograd: could not allocate " + std::to_string((floats * sizeof(float)) >> 20) +
                  " MiB for the Winograd domain");
    }
    cap_ = floats;
  }
  float* take(int64_t floats) {
    if (used_ + floats > cap_) throw Error("winograd: arena overrun (internal error)");
    float* p = p_ + used_;
    used_ += floats;
    return p;
  }

 private:
  float* p_ = nullptr;
  int64_t cap_ = 0, used_ = 0;
};

Arena& arena() {
  thread_local Arena a;
  return a;
}

// A [P][rows][cols] buffer (P = 36 or 25 planes, Geometry::planes) whose planes lie a little
// more than rows·cols floats apart: plane sizes are often powers of two (512·512), and
// streams a power of two apart share cache sets (winograd_avx2.h). 16 floats = one cache
// line, which keeps each buffer aligned.
int64_t plane_floats(int64_t rows, int64_t cols) { return rows * cols + 16; }
int64_t planes_floats(const Geometry& g, int64_t rows, int64_t cols) { return g.planes() * plane_floats(rows, cols); }

at::Tensor planes(const Geometry& g, int64_t rows, int64_t cols, const at::TensorOptions& opts) {
  const int64_t plane = plane_floats(rows, cols);
  return at::from_blob(arena().take(g.planes() * plane), {g.planes(), rows, cols}, {plane, cols, 1}, opts);
}

float* data(const at::Tensor& t) { return t.data_ptr<float>(); }

// Filters (O,C,3,3) in the Winograd domain of g's tiles, [P][O][C] (turned 180° when
// `flip`), read in their memory: OIHW, or OHWI for channels-last weights.
at::Tensor weight_tiles(const Geometry& g, const at::Tensor& w0, bool flip) {
  const bool ohwi = !w0.is_contiguous() && w0.is_contiguous(at::MemoryFormat::ChannelsLast);
  const auto w = ohwi ? w0 : w0.contiguous();
  const int64_t o = w.size(0), c = w.size(1);
  auto u = planes(g, o, c, w.options());
  at::parallel_for(0, o, 8, [&](int64_t b, int64_t e) {
    wino::weight_tiles(g.m, data(w), ohwi, c, flip, data(u), u.stride(0), b, e);
  });
  return u;
}

// The weight gradient (O,C,3,3) back from the Winograd domain du [P][O][C] of g's tiles, in
// the memory format `fmt` (the weight's).
at::Tensor weight_grad(const Geometry& g, const at::Tensor& du, at::MemoryFormat fmt) {
  const int64_t o = du.size(1), c = du.size(2);
  const bool ohwi = fmt == at::MemoryFormat::ChannelsLast;
  auto dw = at::empty({o, c, 3, 3}, du.options().memory_format(ohwi ? fmt : at::MemoryFormat::Contiguous));
  at::parallel_for(0, o, 8, [&](int64_t b, int64_t e) {
    wino::weight_grad(g.m, data(du), du.stride(0), o, c, data(dw), ohwi, b, e);
  });
  return dw;
}

// out[ξ] = op(a[ξ]) · op(b[ξ]) for every plane ξ, row-major; op(a) = a, or aᵀ when trans_a
// (likewise b). Operands as planes() makes them (rows dense, planes strided), or views of them
// narrowed to a range of columns, or a matrix expanded over the planes.
void gemm_planes(const at::Tensor& a, bool trans_a, const at::Tensor& b, bool trans_b, const at::Tensor& out) {
  if (!sgemm_is_onednn()) {  // one batched LibTorch call rather than one per plane
    auto o = out;            // a view (narrowed columns) is written in place
    at::bmm_out(o, trans_a ? a.transpose(1, 2) : a, trans_b ? b.transpose(1, 2) : b);
    return;
  }
  const int64_t m = out.size(1), n = out.size(2), k = trans_a ? a.size(1) : a.size(2);
  for (int64_t i = 0; i < out.size(0); ++i)
    sgemm("winograd", trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, data(a) + i * a.stride(0), a.stride(1),
          data(b) + i * b.stride(0), b.stride(1), 0.f, data(out) + i * out.stride(0), out.stride(1));
}

// Runs `kernel(begin, end)` over the tiles on LibTorch's intra-op threads.
template <class F>
void over_tiles(int64_t tiles, const F& kernel) {
  at::parallel_for(0, tiles, 8, [&](int64_t b, int64_t e) { kernel(b, e); });
}

// The geometry of F(m×m, 3×3) tiles over x (N,C,H,W), dilation d.
Geometry geometry(const at::Tensor& x, int64_t m, int64_t d) { return Geometry{x.size(0), x.size(2), x.size(3), m, d}; }

// Counted as the dilated convolution the sub-grids stand for (compute/flops.h).
OpShape counted_shape(const at::Tensor& x, const at::Tensor& w, int64_t d) {
  return same_conv3x3(x.sizes().vec(), w.sizes().vec(), d);
}

// x: (N,C,H,W) channels-last (NHWC memory) by the filters w (O,C,3,3) at dilation d → y
// (N,O,H,W) channels-last, in tiles of `tile` pixels; with `flip`, by w turned 180° with in
// and out channels swapped (the input gradient: x is then dy (N,O,H,W) and y is (N,C,H,W)).
// With `skip`, w's first `skip` input channels are left out: with flip, y is the other
// C − skip channels' gradient (tiles_conv3x3_pooled's rest).
at::Tensor forward_nhwc(const at::Tensor& x, const at::Tensor& w, bool flip, int64_t tile, int64_t d,
                        int64_t skip = 0) {
  const int64_t c = x.size(1), o = flip ? w.size(1) - skip : w.size(0);
  const Geometry g = geometry(x, tile, d);
  const int64_t tiles = g.tiles();
  arena().reserve(planes_floats(g, w.size(0), w.size(1)) + planes_floats(g, tiles, c) + planes_floats(g, tiles, o));
  const auto u = weight_tiles(g, w, flip);  // [P][O][C] of w
  auto m = planes(g, tiles, o, x.options());
  auto v = planes(g, tiles, c, x.options());
  over_tiles(tiles, [&](int64_t b, int64_t e) { wino::input_tiles(data(x), g, c, data(v), v.stride(0), b, e); });
  gemm_planes(v, false, u.narrow(2, skip, u.size(2) - skip), !flip, m);
  auto y = at::empty({g.n, o, g.h, g.w}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  over_tiles(tiles, [&](int64_t b, int64_t e) { wino::output_tiles(data(m), m.stride(0), g, o, data(y), b, e); });
  return y;
}

// dL/dw for x (N,C,H,W) and dy (N,O,H,W), both channels-last, dilation d, in tiles of size m.
at::Tensor weight_grad_nhwc(const at::Tensor& x, const at::Tensor& dy, at::MemoryFormat fmt, int64_t tile,
                            int64_t d) {
  const int64_t c = x.size(1), o = dy.size(1);
  const Geometry g = geometry(x, tile, d);
  const int64_t tiles = g.tiles();
  arena().reserve(planes_floats(g, tiles, c) + planes_floats(g, tiles, o) + planes_floats(g, o, c));
  auto v = planes(g, tiles, c, x.options());
  auto z = planes(g, tiles, o, x.options());
  over_tiles(tiles, [&](int64_t b, int64_t e) {
    wino::input_tiles(data(x), g, c, data(v), v.stride(0), b, e);
    wino::grad_output_tiles(data(dy), g, o, data(z), z.stride(0), b, e);
  });
  auto du = planes(g, o, c, x.options());
  gemm_planes(z, true, v, false, du);  // dU[ξ] = Z[ξ]ᵀ V[ξ], [O][C]
  return weight_grad(g, du, fmt);
}

// A prefix of channels constant over the map (ASPP's image-pool branch; tiles_conv3x3_pooled).

// What input_tiles makes of one channel that is 1 over an h×w map (zero padding around it):
// [P][the tiles of one image], small integers, exact in fp32. A channel constant at v has
// v times these tiles. Most entries are 0, so the taps below list the others.
at::Tensor constant_tiles(const Geometry& g, const at::TensorOptions& opts) {
  const Geometry one{1, g.h, g.w, g.m, 1};
  const auto ones = at::ones({1, 8, g.h, g.w}, opts).contiguous(at::MemoryFormat::ChannelsLast);
  auto v = at::empty({one.planes(), one.tiles(), 8}, opts);
  wino::input_tiles(data(ones), one, 8, data(v), v.stride(0), 0, one.tiles());
  return v.select(2, 0).contiguous();
}

// The constant tiles' non-zero entries (plane ξ, tile l of an image, value), in plane order.
struct ConstantTap {
  int64_t plane, tile;
  float value;
};
std::vector<ConstantTap> constant_taps(const at::Tensor& t) {
  std::vector<ConstantTap> taps;
  const float* p = data(t);
  for (int64_t xi = 0; xi < t.size(0); ++xi)
    for (int64_t l = 0; l < t.size(1); ++l)
      if (p[xi * t.size(1) + l] != 0.f) taps.push_back({xi, l, p[xi * t.size(1) + l]});
  return taps;
}

// m[ξ][n·per + l][·] += value · q[ξ][n][·] for each constant tap (ξ, l, value) and image n:
// the constant channels' products, made once per image (q), added to their tiles.
void add_constant_products(const std::vector<ConstantTap>& taps, const at::Tensor& q, int64_t per, at::Tensor& m) {
  const int64_t n = q.size(1), o = q.size(2);
  at::parallel_for(0, static_cast<int64_t>(taps.size()) * n, 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const auto& tap = taps[i / n];
      const int64_t img = i % n;
      const float* qr = data(q) + tap.plane * q.stride(0) + img * q.stride(1);
      float* mr = data(m) + tap.plane * m.stride(0) + (img * per + tap.tile) * m.stride(1);
      for (int64_t k = 0; k < o; ++k) mr[k] += tap.value * qr[k];
    }
  });
}

// Its adjoint: zs[ξ][n][·] = Σ over the taps of plane ξ of value · z[ξ][n·per + l][·] (zero
// for a plane without taps).
at::Tensor sum_constant_products(const std::vector<ConstantTap>& taps, const at::Tensor& z, int64_t n, int64_t per,
                                 const Geometry& g) {
  const int64_t o = z.size(2);
  auto zs = planes(g, n, o, z.options());
  at::parallel_for(0, g.planes() * n, 4, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t xi = i / n, img = i % n;
      float* out = data(zs) + xi * zs.stride(0) + img * zs.stride(1);
      std::fill(out, out + o, 0.f);
      for (const auto& tap : taps) {
        if (tap.plane != xi) continue;
        const float* zr = data(z) + xi * z.stride(0) + (img * per + tap.tile) * z.stride(1);
        for (int64_t k = 0; k < o; ++k) out[k] += tap.value * zr[k];
      }
    }
  });
  return zs;
}

// y = the convolution of [v broadcast over the map, x] (channels-last, NHWC memory) by w
// (O, Cp + Cr, 3, 3): the rest's products as forward_nhwc's; the constant channels' v·U[ξ]ᵀ
// once per image, added to its tiles times their constant taps.
at::Tensor pooled_forward_nhwc(const at::Tensor& v, const at::Tensor& x, const at::Tensor& w, int64_t tile) {
  const int64_t n = x.size(0), cp = v.size(1), cr = x.size(1), o = w.size(0);
  const Geometry g = geometry(x, tile, 1);
  const int64_t tiles = g.tiles();
  const auto taps = constant_taps(constant_tiles(g, x.options()));
  arena().reserve(planes_floats(g, o, cp + cr) + planes_floats(g, tiles, cr) + planes_floats(g, n, o) +
                  planes_floats(g, tiles, o));
  const auto u = weight_tiles(g, w, false);  // [P][O][Cp + Cr]
  auto vx = planes(g, tiles, cr, x.options());
  over_tiles(tiles, [&](int64_t b, int64_t e) { wino::input_tiles(data(x), g, cr, data(vx), vx.stride(0), b, e); });
  auto q = planes(g, n, o, x.options());
  gemm_planes(v.expand({g.planes(), n, cp}), false, u.narrow(2, 0, cp), true, q);  // Q[ξ] = v U[ξ][·, :Cp]ᵀ
  auto m = planes(g, tiles, o, x.options());
  gemm_planes(vx, false, u.narrow(2, cp, cr), true, m);
  add_constant_products(taps, q, tiles / n, m);
  auto y = at::empty({n, o, g.h, g.w}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  over_tiles(tiles, [&](int64_t b, int64_t e) { wino::output_tiles(data(m), m.stride(0), g, o, data(y), b, e); });
  return y;
}

// The gradient of the constant channels v (N,Cp) for dy (N,O,H,W): Σ over the map of the
// input gradient, = Σ over o and the taps (i,j) of w[o][c][i][j] · S[n][o][i][j], where S
// sums dy over the outputs at which tap (i,j) reads the map, not its padding: all of dy less
// its first row where i = 0, its last where i = 2, likewise the columns for j, plus the corner
// both took. A GEMM of [N][O·9] by [O·9][Cp]: what one image's Winograd domain would take
// (Σ_ξ Zs[ξ] U[ξ]ᵀ) costs a transform of the weights' first Cp channels, here ~15 % of
// backward at 6×6 maps.
at::Tensor constant_input_grad(const at::Tensor& dy, const at::Tensor& w, int64_t cp) {
  const int64_t h = dy.size(2), wd = dy.size(3);
  const auto total = dy.sum({2, 3});
  const at::Tensor rows[3] = {dy.select(2, 0).sum(2), at::Tensor(), dy.select(2, h - 1).sum(2)};
  const at::Tensor cols[3] = {dy.select(3, 0).sum(2), at::Tensor(), dy.select(3, wd - 1).sum(2)};
  std::vector<at::Tensor> s;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      auto t = total;
      if (i != 1) t = t - rows[i];
      if (j != 1) t = t - cols[j];
      if (i != 1 && j != 1) t = t + dy.select(2, i == 0 ? 0 : h - 1).select(2, j == 0 ? 0 : wd - 1);
      s.push_back(t);
    }
  const auto sn = at::stack(s, 2).reshape({dy.size(0), -1});  // [N][O·9], (o, i, j)
  return at::mm(sn, w.narrow(1, 0, cp).permute({0, 2, 3, 1}).reshape({-1, cp}));
}

// The gradients of pooled_forward_nhwc for dy (NHWC): of x (forward_nhwc's flipped
// convolution, the rest's channels), of the weight (the rest's columns of dU as
// weight_grad_nhwc's, the constant ones' Zsᵀ v, where Zs sums each image's output-gradient
// tiles times the constant taps: the exact gradients of the forward's arithmetic) and of v
// (constant_input_grad: the convolution's).
struct PooledGrads {
  at::Tensor dv, dx, dw;
};
PooledGrads pooled_backward_nhwc(const at::Tensor& v, const at::Tensor& x, const at::Tensor& w, const at::Tensor& dy,
                                 int64_t tile, bool need_v, bool need_x, bool need_w) {
  const int64_t n = x.size(0), cp = v.size(1), cr = x.size(1), c = cp + cr, o = w.size(0);
  const Geometry g = geometry(x, tile, 1);
  const int64_t tiles = g.tiles();
  PooledGrads out;
  if (need_x) out.dx = forward_nhwc(dy, w, true, tile, 1, cp);
  if (need_v) out.dv = constant_input_grad(dy, w, cp);
  if (!need_w) return out;
  const auto taps = constant_taps(constant_tiles(g, x.options()));
  arena().reserve(planes_floats(g, tiles, o) + planes_floats(g, n, o) + planes_floats(g, tiles, cr) +
                  planes_floats(g, o, c));
  auto z = planes(g, tiles, o, x.options());
  over_tiles(tiles, [&](int64_t b, int64_t e) { wino::grad_output_tiles(data(dy), g, o, data(z), z.stride(0), b, e); });
  const auto zs = sum_constant_products(taps, z, n, tiles / n, g);
  auto vx = planes(g, tiles, cr, x.options());
  over_tiles(tiles, [&](int64_t b, int64_t e) { wino::input_tiles(data(x), g, cr, data(vx), vx.stride(0), b, e); });
  auto du = planes(g, o, c, x.options());
  gemm_planes(z, true, vx, false, du.narrow(2, cp, cr));                             // dU[ξ][·, Cp:] = Z[ξ]ᵀ V[ξ]
  gemm_planes(zs, true, v.expand({g.planes(), n, cp}), false, du.narrow(2, 0, cp));  // dU[ξ][·, :Cp] = Zs[ξ]ᵀ v
  out.dw = weight_grad(g, du, w.suggest_memory_format());
  return out;
}

struct TilesConvFn : torch::autograd::Function<TilesConvFn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            int64_t tile, int64_t d) {
    ctx->save_for_backward({x, w});
    ctx->saved_data["tile"] = tile;
    ctx->saved_data["dilation"] = d;
    // Counted once, as the convolution it replaces (below), not as its GEMMs.
    at::DisableRecordFunctionGuard uncounted;
    const auto y = forward_nhwc(contiguous_as(x, true), w, false, tile, d);
    count_conv_flops(counted_shape(x, w, d), 1);
    return contiguous_as(y, is_channels_last(x));
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    at::DisableRecordFunctionGuard uncounted;
    const auto& x = saved[0];
    const auto& w = saved[1];
    const int64_t tile = ctx->saved_data["tile"].toInt(), d = ctx->saved_data["dilation"].toInt();
    const auto dy = contiguous_as(grads[0], true);
    at::Tensor dx, dw;
    if (ctx->needs_input_grad(0))
      // The same convolution of dy by the filters turned 180°, in and out channels swapped.
      dx = contiguous_as(forward_nhwc(dy, w, true, tile, d), is_channels_last(x));
    if (ctx->needs_input_grad(1))
      dw = weight_grad_nhwc(contiguous_as(x, true), dy, w.suggest_memory_format(), tile, d);
    count_conv_flops(counted_shape(x, w, d), (dx.defined() ? 1 : 0) + (dw.defined() ? 1 : 0));
    return {dx, dw, at::Tensor(), at::Tensor()};
  }
};

// v (N,Cp) and x (N,Cr,H,W) to the convolution of [v broadcast over the map, x] by w.
struct PooledTilesConvFn : torch::autograd::Function<PooledTilesConvFn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& v, const at::Tensor& x,
                            const at::Tensor& w, int64_t tile) {
    ctx->save_for_backward({v, x, w});
    ctx->saved_data["tile"] = tile;
    at::DisableRecordFunctionGuard uncounted;  // counted once, as the convolution it stands for
    const auto y = pooled_forward_nhwc(v.contiguous(), contiguous_as(x, true), w, tile);
    count_conv_flops(pooled_shape(x, w), 1);
    return contiguous_as(y, is_channels_last(x));
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    at::DisableRecordFunctionGuard uncounted;
    const auto &v = saved[0], &x = saved[1], &w = saved[2];
    const bool need_v = ctx->needs_input_grad(0), need_x = ctx->needs_input_grad(1), need_w = ctx->needs_input_grad(2);
    auto g = pooled_backward_nhwc(v.contiguous(), contiguous_as(x, true), w, contiguous_as(grads[0], true),
                                  ctx->saved_data["tile"].toInt(), need_v, need_x, need_w);
    if (g.dx.defined()) g.dx = contiguous_as(g.dx, is_channels_last(x));
    count_conv_flops(pooled_shape(x, w), (need_v || need_x ? 1 : 0) + (need_w ? 1 : 0));
    return {g.dv, g.dx, g.dw, at::Tensor()};
  }

  // The convolution the call stands for: the input with its constant channels.
  static OpShape pooled_shape(const at::Tensor& x, const at::Tensor& w) {
    return same_conv3x3({x.size(0), w.size(1), x.size(2), x.size(3)}, w.sizes().vec(), 1);
  }
};

}  // namespace

bool tiles_available(std::string* why) {
  static const bool ok = wino::cpu_supported();
  if (!ok && why) *why = "cp2's Winograd kernels need an x86-64 CPU with AVX2 and FMA";
  return ok;
}

bool tiles_fit(int64_t in_channels, int64_t out_channels) { return in_channels % 8 == 0 && out_channels % 8 == 0; }

int64_t winograd_tiles(int64_t n, int64_t h, int64_t w) { return Geometry{n, h, w}.tiles(); }

bool tiles_pay_off(int64_t n, int64_t in_channels, int64_t out_channels, int64_t h, int64_t w) {
  const Geometry g{n, h, w};
  const double full = static_cast<double>(h * w) / static_cast<double>(g.tiles_h() * g.m * g.tiles_w() * g.m);
  const int64_t channels = std::min(in_channels, out_channels);
  return tiles_fit(in_channels, out_channels) && g.tiles() >= kMinWinogradTiles &&
         (full >= 0.75 ? channels >= 128 || (channels >= 64 && g.tiles() >= 64) : full >= 0.5 && channels >= 256);
}

bool tiles_beat_onednn(int64_t in_channels, int64_t out_channels, bool channels_last) {
  const int64_t line = channels_last ? kTilesBeatOnednnChannelsCl : kTilesBeatOnednnChannels;
  return std::min(in_channels, out_channels) >= line;
}

double tiles_products(int64_t h, int64_t w, int64_t m) {
  const Geometry g{1, h, w, m};
  return static_cast<double>(g.tiles() * g.planes()) / static_cast<double>(h * w);
}

int64_t tiles_size(int64_t h, int64_t w) { return tiles_products(h, w, 3) < tiles_products(h, w, 4) ? 3 : 4; }

bool tiles3_pay_off(int64_t n, int64_t in_channels, int64_t out_channels, int64_t h, int64_t w) {
  const int64_t tiles = Geometry{n, h, w, 3}.tiles(), channels = std::min(in_channels, out_channels);
  if (!tiles_fit(in_channels, out_channels) || tiles_size(h, w) != 3) return false;
  // Against oneDNN's AVX-512 direct kernels, which skip the padding, only larger calls pay.
  if (onednn_avx512()) return (tiles >= 64 && channels >= 256) || (tiles >= 256 && channels >= 128);
  return tiles >= kMinWinogradTiles && channels >= 64;
}

at::Tensor tiles_conv3x3(const at::Tensor& x, const at::Tensor& weight, int64_t tile, int64_t dilation) {
  if (dilation < 1) throw Error("tiles_conv3x3: expected dilation >= 1, found " + std::to_string(dilation));
  if (tile == 0) tile = tiles_size(subgrid_side(x.size(2), dilation), subgrid_side(x.size(3), dilation));
  if (tile != 3 && tile != 4)
    throw Error("tiles_conv3x3: expected tiles of 3 or 4 pixels, found " + std::to_string(tile));
  return apply_function<TilesConvFn>(x, weight, tile, dilation);
}

at::Tensor tiles_conv3x3_pooled(const at::Tensor& v, const at::Tensor& x, const at::Tensor& weight, int64_t tile) {
  if (v.dim() != 4 || x.dim() != 4 || weight.dim() != 4 || v.size(0) != x.size(0) || v.size(2) != 1 ||
      v.size(3) != 1 || weight.size(1) != v.size(1) + x.size(1) || weight.size(2) != 3 || weight.size(3) != 3)
    throw Error("tiles_conv3x3_pooled: expected v (N,Cp,1,1), x (N,Cr,H,W) and weight (O,Cp+Cr,3,3), found " +
                shape_str(v.sizes().vec()) + ", " + shape_str(x.sizes().vec()) + " and " +
                shape_str(weight.sizes().vec()));
  if (!tiles_fit(v.size(1), x.size(1)) || !tiles_fit(x.size(1), weight.size(0)))
    throw Error("tiles_conv3x3_pooled: expected channel counts that are multiples of 8, found " +
                shape_str(weight.sizes().vec()) + " over " + std::to_string(v.size(1)) + " + " +
                std::to_string(x.size(1)));
  if (tile != 3 && tile != 4)
    throw Error("tiles_conv3x3_pooled: expected tiles of 3 or 4 pixels, found " + std::to_string(tile));
  RECORD_USER_SCOPE("cp2::winograd_pooled_conv3x3");  // its forward in cp2 bench --profile
  return apply_function<PooledTilesConvFn>(v.reshape({v.size(0), v.size(1)}), x, weight, tile);
}

}  // namespace cp2::compute
