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
#include "cp2/compute/winograd_avx2.h"

namespace cp2::compute {

namespace {

using wino43::Geometry;

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

// A [36][rows][cols] buffer whose 36 planes lie a little more than rows·cols floats apart:
// plane sizes are often powers of two (512·512), and 36 streams a power of two apart share
// cache sets (winograd_avx2.h). 16 floats = one cache line, which keeps each buffer aligned.
int64_t plane_floats(int64_t rows, int64_t cols) { return rows * cols + 16; }
int64_t planes_floats(int64_t rows, int64_t cols) { return 36 * plane_floats(rows, cols); }

at::Tensor planes(int64_t rows, int64_t cols, const at::TensorOptions& opts) {
  const int64_t plane = plane_floats(rows, cols);
  return at::from_blob(arena().take(36 * plane), {36, rows, cols}, {plane, cols, 1}, opts);
}

float* data(const at::Tensor& t) { return t.data_ptr<float>(); }

// Filters (O,C,3,3) in the Winograd domain, [36][O][C] (turned 180° when `flip`), read in
// their memory: OIHW, or OHWI for channels-last weights.
at::Tensor weight_tiles(const at::Tensor& w0, bool flip) {
  const bool ohwi = !w0.is_contiguous() && w0.is_contiguous(at::MemoryFormat::ChannelsLast);
  const auto w = ohwi ? w0 : w0.contiguous();
  const int64_t o = w.size(0), c = w.size(1);
  auto u = planes(o, c, w.options());
  at::parallel_for(0, o, 8, [&](int64_t b, int64_t e) {
    wino43::weight_tiles(data(w), ohwi, o, c, flip, data(u), u.stride(0), b, e);
  });
  return u;
}

// The weight gradient (O,C,3,3) back from the Winograd domain du [36][O][C], in the memory
// format `fmt` (the weight's).
at::Tensor weight_grad(const at::Tensor& du, at::MemoryFormat fmt) {
  const int64_t o = du.size(1), c = du.size(2);
  const bool ohwi = fmt == at::MemoryFormat::ChannelsLast;
  auto dw = at::empty({o, c, 3, 3}, du.options().memory_format(ohwi ? fmt : at::MemoryFormat::Contiguous));
  at::parallel_for(0, o, 8, [&](int64_t b, int64_t e) {
    wino43::weight_grad(data(du), du.stride(0), o, c, data(dw), ohwi, b, e);
  });
  return dw;
}

// out[ξ] = op(a[ξ]) · op(b[ξ]) for the 36 ξ, row-major; op(a) = a, or aᵀ when trans_a
// (likewise b). Operands as planes() makes them: rows dense, planes strided.
void gemm36(const at::Tensor& a, bool trans_a, const at::Tensor& b, bool trans_b, at::Tensor& out) {
  if (!sgemm_available()) {
    at::bmm_out(out, trans_a ? a.transpose(1, 2) : a, trans_b ? b.transpose(1, 2) : b);
    return;
  }
  const int64_t m = out.size(1), n = out.size(2), k = trans_a ? a.size(1) : a.size(2);
  for (int64_t i = 0; i < 36; ++i)
    sgemm("winograd", trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, data(a) + i * a.stride(0), a.stride(1),
          data(b) + i * b.stride(0), b.stride(1), 0.f, data(out) + i * out.stride(0), out.stride(1));
}

// Runs `kernel(begin, end)` over the tiles on LibTorch's intra-op threads.
template <class F>
void over_tiles(int64_t tiles, const F& kernel) {
  at::parallel_for(0, tiles, 8, [&](int64_t b, int64_t e) { kernel(b, e); });
}

// x: (N,C,H,W) channels-last (NHWC memory) by the filters w (O,C,3,3) → y (N,O,H,W)
// channels-last; with `flip`, by w turned 180° with in and out channels swapped (the input
// gradient: x is then dy (N,O,H,W) and y is (N,C,H,W)).
at::Tensor forward_nhwc(const at::Tensor& x, const at::Tensor& w, bool flip) {
  const int64_t c = x.size(1), o = flip ? w.size(1) : w.size(0);
  const Geometry g{x.size(0), x.size(2), x.size(3)};
  const int64_t tiles = g.tiles();
  arena().reserve(planes_floats(w.size(0), w.size(1)) + planes_floats(tiles, c) + planes_floats(tiles, o));
  const auto u = weight_tiles(w, flip);  // [36][O][C] of w
  auto m = planes(tiles, o, x.options());
  auto v = planes(tiles, c, x.options());
  over_tiles(tiles, [&](int64_t b, int64_t e) { wino43::input_tiles(data(x), g, c, data(v), v.stride(0), b, e); });
  gemm36(v, false, u, !flip, m);
  auto y = at::empty({g.n, o, g.h, g.w}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  over_tiles(tiles, [&](int64_t b, int64_t e) { wino43::output_tiles(data(m), m.stride(0), g, o, data(y), b, e); });
  return y;
}

// dL/dw for x (N,C,H,W) and dy (N,O,H,W), both channels-last.
at::Tensor weight_grad_nhwc(const at::Tensor& x, const at::Tensor& dy, at::MemoryFormat fmt) {
  const int64_t c = x.size(1), o = dy.size(1);
  const Geometry g{x.size(0), x.size(2), x.size(3)};
  const int64_t tiles = g.tiles();
  arena().reserve(planes_floats(tiles, c) + planes_floats(tiles, o) + planes_floats(o, c));
  auto v = planes(tiles, c, x.options());
  auto z = planes(tiles, o, x.options());
  over_tiles(tiles, [&](int64_t b, int64_t e) {
    wino43::input_tiles(data(x), g, c, data(v), v.stride(0), b, e);
    wino43::grad_output_tiles(data(dy), g, o, data(z), z.stride(0), b, e);
  });
  auto du = planes(o, c, x.options());
  gemm36(z, true, v, false, du);  // dU[ξ] = Z[ξ]ᵀ V[ξ], [O][C]
  return weight_grad(du, fmt);
}

struct TilesConvFn : torch::autograd::Function<TilesConvFn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w) {
    ctx->save_for_backward({x, w});
    // Counted once, as the convolution it replaces (below), not as its GEMMs.
    at::DisableRecordFunctionGuard uncounted;
    const auto y = forward_nhwc(contiguous_as(x, true), w, false);
    count_conv_flops(same_conv3x3(x.sizes().vec(), w.sizes().vec()), 1);
    return contiguous_as(y, is_channels_last(x));
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    at::DisableRecordFunctionGuard uncounted;
    const auto& x = saved[0];
    const auto& w = saved[1];
    const auto dy = contiguous_as(grads[0], true);
    at::Tensor dx, dw;
    if (ctx->needs_input_grad(0))
      // The same convolution of dy by the filters turned 180°, in and out channels swapped.
      dx = contiguous_as(forward_nhwc(dy, w, true), is_channels_last(x));
    if (ctx->needs_input_grad(1))
      dw = weight_grad_nhwc(contiguous_as(x, true), dy, w.suggest_memory_format());
    count_conv_flops(same_conv3x3(x.sizes().vec(), w.sizes().vec()), (dx.defined() ? 1 : 0) + (dw.defined() ? 1 : 0));
    return {dx, dw};
  }
};

}  // namespace

bool tiles_available(std::string* why) {
  static const bool ok = wino43::cpu_supported();
  if (!ok && why) *why = "cp2's Winograd kernels need an x86-64 CPU with AVX2 and FMA";
  return ok;
}

bool tiles_fit(int64_t in_channels, int64_t out_channels) { return in_channels % 8 == 0 && out_channels % 8 == 0; }

int64_t winograd_tiles(int64_t n, int64_t h, int64_t w) { return Geometry{n, h, w}.tiles(); }

bool tiles_pay_off(int64_t n, int64_t in_channels, int64_t out_channels, int64_t h, int64_t w) {
  const Geometry g{n, h, w};
  const double full = static_cast<double>(h * w) / static_cast<double>(g.tiles_h() * 4 * g.tiles_w() * 4);
  const int64_t channels = std::min(in_channels, out_channels);
  return tiles_fit(in_channels, out_channels) && g.tiles() >= kMinWinogradTiles &&
         (full >= 0.75 ? channels >= 128 || (channels >= 64 && g.tiles() >= 64) : full >= 0.5 && channels >= 256);
}

at::Tensor tiles_conv3x3(const at::Tensor& x, const at::Tensor& weight) { return apply_function<TilesConvFn>(x, weight); }

}  // namespace cp2::compute
