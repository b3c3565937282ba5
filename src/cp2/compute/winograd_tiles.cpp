#include "cp2/compute/winograd_tiles.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdlib>

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
// (likewise b). Operands as planes() makes them: rows dense, planes strided.
void gemm_planes(const at::Tensor& a, bool trans_a, const at::Tensor& b, bool trans_b, at::Tensor& out) {
  if (!sgemm_is_onednn()) {  // one batched LibTorch call rather than one per plane
    at::bmm_out(out, trans_a ? a.transpose(1, 2) : a, trans_b ? b.transpose(1, 2) : b);
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
at::Tensor forward_nhwc(const at::Tensor& x, const at::Tensor& w, bool flip, int64_t tile, int64_t d) {
  const int64_t c = x.size(1), o = flip ? w.size(1) : w.size(0);
  const Geometry g = geometry(x, tile, d);
  const int64_t tiles = g.tiles();
  arena().reserve(planes_floats(g, w.size(0), w.size(1)) + planes_floats(g, tiles, c) + planes_floats(g, tiles, o));
  const auto u = weight_tiles(g, w, flip);  // [P][O][C] of w
  auto m = planes(g, tiles, o, x.options());
  auto v = planes(g, tiles, c, x.options());
  over_tiles(tiles, [&](int64_t b, int64_t e) { wino::input_tiles(data(x), g, c, data(v), v.stride(0), b, e); });
  gemm_planes(v, false, u, !flip, m);
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

}  // namespace cp2::compute
