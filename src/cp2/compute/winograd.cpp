#include "cp2/compute/winograd.h"

#include <ATen/record_function.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <tuple>

#include "cp2/common.h"
#include "cp2/compute/apply.h"
#include "cp2/compute/fast_paths.h"
#include "cp2/compute/flops.h"
#include "cp2/compute/gemm.h"
#include "cp2/compute/precision.h"
#include "cp2/compute/winograd_tiles.h"

#ifdef CP2_HAVE_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#include <oneapi/dnnl/dnnl_version.h>
#if DNNL_VERSION_MAJOR != 2
#error "cp2's Winograd path uses oneDNN 2.x's API (Debian 12 ships 2.6); build with -DCP2_WINOGRAD=OFF"
#endif
#endif

namespace cp2::compute {

namespace {

thread_local bool t_enabled = false;
thread_local WinogradKernels t_kernels = WinogradKernels::best;

}  // namespace

WinogradScope::WinogradScope(bool enable) : prev_(t_enabled), prev_kernels_(t_kernels) { t_enabled = enable; }
WinogradScope::WinogradScope(bool enable, WinogradKernels kernels) : WinogradScope(enable) { t_kernels = kernels; }
WinogradScope::~WinogradScope() {
  t_enabled = prev_;
  t_kernels = prev_kernels_;
}

#ifndef CP2_HAVE_DNNL

namespace {

bool onednn_available(std::string* why) {
  if (why) *why = "this build has no oneDNN (built without libdnnl-dev, or the GPU core build)";
  return false;
}

at::Tensor onednn_conv3x3(const at::Tensor&, const at::Tensor&, const std::vector<int64_t>&, int64_t) {
  throw Error("winograd: this build has no oneDNN Winograd kernels");
}

}  // namespace

#else

namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

// The primitives of one shape (batch, channels in/out, size, layout), made once: oneDNN
// JIT-compiles each at creation (milliseconds), a step runs them tens of times.
struct Prims {
  memory::desc user_src, user_dst, user_w;  // the tensors' layouts
  memory::desc any_src, any_w, any_dst;     // the shape, layout left to oneDNN
  dnnl::convolution_forward::primitive_desc fwd_pd;
  dnnl::convolution_forward fwd;
  dnnl::convolution_backward_data::primitive_desc bwd_d_pd;
  dnnl::convolution_backward_data bwd_d;
  dnnl::convolution_backward_weights::primitive_desc bwd_w_pd;
  dnnl::convolution_backward_weights bwd_w;
  std::once_flag backward_once;
};

using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, bool, bool>;

const memory::dims kOne{1, 1};  // stride, and padding (left and right)
constexpr auto kAlg = dnnl::algorithm::convolution_winograd;

dnnl::primitive_attr user_scratchpad() {
  dnnl::primitive_attr a;
  // Scratch memory comes from the caller (one buffer per thread, scratch() below), so
  // primitives shared by several threads never share a library-owned scratchpad.
  a.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return a;
}

std::shared_ptr<Prims> make_prims(const Key& k) {
  const auto [n, c, h, w, o, cl, wcl] = k;
  auto p = std::make_shared<Prims>();
  const memory::dims src{n, c, h, w}, wei{o, c, 3, 3}, dst{n, o, h, w};
  p->user_src = memory::desc(src, dt::f32, cl ? tag::nhwc : tag::nchw);
  p->user_dst = memory::desc(dst, dt::f32, cl ? tag::nhwc : tag::nchw);
  p->user_w = memory::desc(wei, dt::f32, wcl ? tag::ohwi : tag::oihw);
  p->any_src = memory::desc(src, dt::f32, tag::any);
  p->any_w = memory::desc(wei, dt::f32, tag::any);
  p->any_dst = memory::desc(dst, dt::f32, tag::any);
  p->fwd_pd = dnnl::convolution_forward::primitive_desc(
      dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, kAlg, p->any_src, p->any_w, p->any_dst, kOne,
                                      kOne, kOne),
      user_scratchpad(), engine());
  p->fwd = dnnl::convolution_forward(p->fwd_pd);
  return p;
}

// The backward primitives, made at the first backward pass of the shape (evaluation never
// needs them).
void make_backward(Prims& p) {
  std::call_once(p.backward_once, [&p] {
    const auto attr = user_scratchpad();
    p.bwd_d_pd = dnnl::convolution_backward_data::primitive_desc(
        dnnl::convolution_backward_data::desc(kAlg, p.any_src, p.any_w, p.any_dst, kOne, kOne, kOne), attr, engine(),
        p.fwd_pd);
    p.bwd_d = dnnl::convolution_backward_data(p.bwd_d_pd);
    p.bwd_w_pd = dnnl::convolution_backward_weights::primitive_desc(
        dnnl::convolution_backward_weights::desc(kAlg, p.any_src, p.any_w, p.any_dst, kOne, kOne, kOne), attr,
        engine(), p.fwd_pd);
    p.bwd_w = dnnl::convolution_backward_weights(p.bwd_w_pd);
  });
}

std::shared_ptr<Prims> prims(const at::Tensor& x, const at::Tensor& w, bool cl) {
  static std::mutex mu;
  static std::map<Key, std::shared_ptr<Prims>> cache;
  const Key k{x.size(0), x.size(1), x.size(2), x.size(3), w.size(0), cl, is_channels_last(w)};
  std::lock_guard<std::mutex> lk(mu);
  // Evaluation at many image sizes would make a set per size: keep at most 256 shapes
  // (callers hold their set by shared_ptr, so dropping the cache is safe).
  if (cache.size() >= 256 && !cache.count(k)) cache.clear();
  auto& p = cache[k];
  if (!p) {
    try {
      p = make_prims(k);
    } catch (const dnnl::error& e) {
      cache.erase(k);
      throw Error("train.conv_algorithm: winograd: oneDNN made no Winograd convolution for input " +
                  shape_str(x.sizes().vec()) + " and weight " + shape_str(w.sizes().vec()) + " (" + e.what() +
                  "); use direct");
    }
  }
  return p;
}

// A tensor's bytes as oneDNN memory in `want`'s layout: the tensor itself when the layouts
// agree, else a reordered copy (kept alive by `keep`).
memory as(const at::Tensor& t, const memory::desc& user, const memory::desc& want, dnnl::stream& s,
          std::vector<at::Tensor>& keep) {
  memory m(user, engine(), t.data_ptr());
  if (user == want) return m;
  keep.push_back(at::empty({static_cast<int64_t>(want.get_size() / sizeof(float))}, t.options()));
  memory r(want, engine(), keep.back().data_ptr());
  dnnl::reorder(m, r).execute(s, m, r);
  return r;
}

// Output memory in the primitive's layout `got`, written to `out` (layout `user`) by finish().
struct Out {
  at::Tensor buf;
  memory prim, user;
  bool copy = false;
  Out(const at::Tensor& out, const memory::desc& user_d, const memory::desc& got) {
    user = memory(user_d, engine(), out.data_ptr());
    copy = !(user_d == got);
    if (copy) buf = at::empty({static_cast<int64_t>(got.get_size() / sizeof(float))}, out.options());
    prim = copy ? memory(got, engine(), buf.data_ptr()) : user;
  }
  void finish(dnnl::stream& s) {
    if (copy) dnnl::reorder(prim, user).execute(s, prim, user);
  }
};

// One scratch buffer per thread, grown to the largest primitive's need and reused by all:
// Winograd's scratchpads are large (backward-weights of ASPP's 2560->512 bottleneck at
// 14x14, batch 8: 602 MiB) and of a different size for each shape, so taking them from the
// caching allocator would keep one of each size alive.
class Scratch {
 public:
  ~Scratch() { std::free(p_); }
  memory get(const memory::desc& d) {
    const size_t need = std::max<size_t>(64, (d.get_size() + 63) / 64 * 64);
    if (need > n_) {
      std::free(p_);
      p_ = std::aligned_alloc(64, need);
      if (!p_) throw Error("winograd: could not allocate " + std::to_string(need >> 20) + " MiB of scratch memory");
      n_ = need;
    }
    return memory(d, engine(), p_);
  }

 private:
  void* p_ = nullptr;
  size_t n_ = 0;
};

memory scratch(const memory::desc& d) {
  thread_local Scratch s;
  return s.get(d);
}

dnnl::stream& stream() {
  thread_local dnnl::stream s(engine());
  return s;
}

// Weights stay in their own layout (OIHW, or OHWI under train.channels_last).
at::Tensor dense_weight(const at::Tensor& w) { return contiguous_as(w, is_channels_last(w)); }

at::Tensor forward_impl(const at::Tensor& x0, const at::Tensor& w0) {
  const bool cl = is_channels_last(x0);
  const auto x = contiguous_as(x0, cl);
  const auto w = dense_weight(w0);
  auto p = prims(x, w, cl);
  auto& s = stream();
  std::vector<at::Tensor> keep;
  auto y = at::empty({x.size(0), w.size(0), x.size(2), x.size(3)},
                     x.options().memory_format(cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous));
  auto src = as(x, p->user_src, p->fwd_pd.src_desc(), s, keep);
  auto wei = as(w, p->user_w, p->fwd_pd.weights_desc(), s, keep);
  Out dst(y, p->user_dst, p->fwd_pd.dst_desc());
  p->fwd.execute(s, {{DNNL_ARG_SRC, src},
                     {DNNL_ARG_WEIGHTS, wei},
                     {DNNL_ARG_DST, dst.prim},
                     {DNNL_ARG_SCRATCHPAD, scratch(p->fwd_pd.scratchpad_desc())}});
  dst.finish(s);
  s.wait();
  return y;
}

// x (N,C,H,W) by w (O,C,3,3); counted as the convolution of an input `counted_in` at dilation
// d (the map before its d² sub-grids were batched), forward then each gradient computed.
struct WinogradConvFn : torch::autograd::Function<WinogradConvFn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            const std::vector<int64_t>& counted_in, int64_t d) {
    ctx->save_for_backward({x, w});
    ctx->saved_data["counted_in"] = counted_in;
    ctx->saved_data["dilation"] = d;
    auto y = forward_impl(x, w);
    count_conv_flops(same_conv3x3(counted_in, w.sizes().vec(), d), 1);
    return y;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const bool cl = is_channels_last(saved[0]);
    const auto x = contiguous_as(saved[0], cl);
    const auto w = dense_weight(saved[1]);
    const auto dy = contiguous_as(grads[0], cl);
    auto p = prims(x, w, cl);
    try {
      make_backward(*p);
    } catch (const dnnl::error& e) {
      throw Error("train.conv_algorithm: winograd: oneDNN made no Winograd backward pass for input " +
                  shape_str(x.sizes().vec()) + " (" + e.what() + "); use direct");
    }
    auto& s = stream();
    // The reordered gradient serves both primitives when they ask for the same layout;
    // other reordered copies are freed as soon as their primitive has run.
    std::vector<at::Tensor> keep_dy;
    std::optional<memory> dy_mem;
    auto diff_dst = [&](const memory::desc& want) {
      if (!dy_mem || !(dy_mem->get_desc() == want)) {
        keep_dy.clear();
        dy_mem = as(dy, p->user_dst, want, s, keep_dy);
      }
      return *dy_mem;
    };
    at::Tensor dx, dw;
    if (ctx->needs_input_grad(0)) {
      std::vector<at::Tensor> keep;
      dx = at::empty_like(x);
      auto wei = as(w, p->user_w, p->bwd_d_pd.weights_desc(), s, keep);
      Out dsrc(dx, p->user_src, p->bwd_d_pd.diff_src_desc());
      p->bwd_d.execute(s, {{DNNL_ARG_DIFF_DST, diff_dst(p->bwd_d_pd.diff_dst_desc())},
                           {DNNL_ARG_WEIGHTS, wei},
                           {DNNL_ARG_DIFF_SRC, dsrc.prim},
                           {DNNL_ARG_SCRATCHPAD, scratch(p->bwd_d_pd.scratchpad_desc())}});
      dsrc.finish(s);
    }
    if (ctx->needs_input_grad(1)) {
      std::vector<at::Tensor> keep;
      dw = at::empty_like(w);
      auto src = as(x, p->user_src, p->bwd_w_pd.src_desc(), s, keep);
      Out dwei(dw, p->user_w, p->bwd_w_pd.diff_weights_desc());
      p->bwd_w.execute(s, {{DNNL_ARG_SRC, src},
                           {DNNL_ARG_DIFF_DST, diff_dst(p->bwd_w_pd.diff_dst_desc())},
                           {DNNL_ARG_DIFF_WEIGHTS, dwei.prim},
                           {DNNL_ARG_SCRATCHPAD, scratch(p->bwd_w_pd.scratchpad_desc())}});
      dwei.finish(s);
    }
    s.wait();
    count_conv_flops(same_conv3x3(ctx->saved_data["counted_in"].toIntVector(), w.sizes().vec(),
                                  ctx->saved_data["dilation"].toInt()),
                     (dx.defined() ? 1 : 0) + (dw.defined() ? 1 : 0));
    return {dx, dw, at::Tensor(), at::Tensor()};
  }
};

bool onednn_available(std::string* why) {
  // oneDNN's Winograd kernels are AVX-512 only; oneDNN itself says which ISA it runs.
  if (onednn_avx512()) return true;
  if (why) *why = "oneDNN's Winograd kernels need an AVX-512 CPU";
  return false;
}

at::Tensor onednn_conv3x3(const at::Tensor& x, const at::Tensor& weight, const std::vector<int64_t>& counted_in,
                          int64_t d) {
  return apply_function<WinogradConvFn>(x, weight, counted_in, d);
}

}  // namespace

#endif

namespace {

// oneDNN's kernels where they run (AVX-512), else cp2's own (AVX2 + FMA).
WinogradKernels best_kernels() {
  static const WinogradKernels k = onednn_available(nullptr) ? WinogradKernels::onednn
                                   : tiles_available(nullptr)  ? WinogradKernels::tiles
                                                               : WinogradKernels::none;
  return k;
}

}  // namespace

bool winograd_enabled() { return t_enabled; }

WinogradKernels winograd_kernels() { return t_kernels != WinogradKernels::best ? t_kernels : best_kernels(); }

const char* winograd_kernels_name(WinogradKernels k) {
  switch (k) {
    case WinogradKernels::onednn: return "oneDNN";
    case WinogradKernels::tiles: return "cp2 AVX2";
    case WinogradKernels::tiles_f4: return "cp2 AVX2 F(4x4)";
    case WinogradKernels::tiles_f3: return "cp2 AVX2 F(3x3)";
    default: return "none";
  }
}

std::string cp2_tiles_rule() {
  return ">= " + std::to_string(kTilesBeatOnednnChannels) + " channels (>= " +
         std::to_string(kTilesBeatOnednnChannelsCl) + " channels-last)";
}

bool winograd_available(std::string* why) {
  if (best_kernels() != WinogradKernels::none) return true;
  if (why) {
    std::string a, b;
    onednn_available(&a);
    tiles_available(&b);
    *why = "no Winograd kernels here: " + a + "; " + b + " (see /proc/cpuinfo)";
  }
  return false;
}

bool winograd_kernels_available(WinogradKernels k, std::string* why) {
  switch (k) {
    case WinogradKernels::best: return winograd_available(why);
    case WinogradKernels::onednn: return onednn_available(why);
    case WinogradKernels::tiles:
    case WinogradKernels::tiles_f4:
    case WinogradKernels::tiles_f3: return tiles_available(why);
    default:
      if (why) *why = "no Winograd kernels named";
      return false;
  }
}

WinogradPlan winograd_plan(int64_t n, int64_t c, int64_t o, int64_t h, int64_t w, bool in_place, bool channels_last) {
  using K = WinogradKernels;
  const auto plan = [h, w](K k, int64_t m) {
    return WinogradPlan{k, m, tiles_products(h, w, m)};
  };
  const bool tiles = tiles_available(nullptr), fit = tiles && tiles_fit(c, o);
  switch (t_kernels) {
    case K::onednn: return onednn_available(nullptr) ? plan(K::onednn, 4) : WinogradPlan{};
    // cp2's kernels take 8 channels at a time; named, they run wherever that fits.
    case K::tiles: return fit ? plan(K::tiles, tiles_size(h, w)) : WinogradPlan{};
    case K::tiles_f4: return fit ? plan(K::tiles, 4) : WinogradPlan{};
    case K::tiles_f3: return fit ? plan(K::tiles, 3) : WinogradPlan{};
    case K::best: break;
    default: return {};
  }
  // Chosen as the best at hand, only where they beat the direct convolution: on the maps
  // F(3×3) tiles better, cp2's F(3×3) (on AVX-512 CPUs too: oneDNN has no such tiles) or
  // direct; elsewhere F(4×4): cp2's where oneDNN's is missing or would copy the sub-grids
  // (`in_place`) or where cp2's beat it (tiles_beat_onednn), else oneDNN's.
  if (tiles && tiles_size(h, w) == 3) return tiles3_pay_off(n, c, o, h, w) ? plan(K::tiles, 3) : WinogradPlan{};
  const bool onednn = onednn_available(nullptr);
  const bool before_onednn =
      !onednn || in_place || (fast_path_on(FastPath::cp2_tiles) && tiles_beat_onednn(c, o, channels_last));
  if (before_onednn && tiles && tiles_pay_off(n, c, o, h, w)) return plan(K::tiles, 4);
  if (onednn && winograd_tiles(n, h, w) >= kMinWinogradTiles) return plan(K::onednn, 4);
  return {};
}

WinogradPlan winograd_plan_for(const at::Tensor& x, int64_t o, int64_t d) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  return winograd_plan(n * d * d, c, o, subgrid_side(h, d), subgrid_side(w, d), d > 1, is_channels_last(x));
}

bool winograd_runs(int64_t n, int64_t c, int64_t o, int64_t h, int64_t w, bool channels_last) {
  return winograd_plan(n, c, o, h, w, false, channels_last).kernels != WinogradKernels::none;
}

at::Tensor winograd_conv3x3(const at::Tensor& x, const at::Tensor& weight, int64_t d) {
  if (x.dim() != 4 || weight.dim() != 4 || weight.size(2) != 3 || weight.size(3) != 3 || x.size(1) != weight.size(1))
    throw Error("winograd_conv3x3: expected input (N,C,H,W) and weight (O,C,3,3), found " + shape_str(x.sizes().vec()) +
                " and " + shape_str(weight.sizes().vec()));
  if (!x.device().is_cpu() || x.scalar_type() != at::kFloat || weight.scalar_type() != at::kFloat)
    throw Error("winograd_conv3x3: expected fp32 CPU tensors");
  if (d < 1) throw Error("winograd_conv3x3: expected dilation >= 1, found " + std::to_string(d));
  RECORD_USER_SCOPE("cp2::winograd_conv3x3");  // its forward in cp2 bench --profile (no ATen op runs it)
  // oneDNN's kernels named where this CPU lacks them: an error, not a silent direct convolution.
  if (std::string why; t_kernels == WinogradKernels::onednn && !onednn_available(&why)) throw Error("winograd: " + why);
  // Where the kernels would not pay or fit (winograd_plan, of the sub-grids), the direct convolution.
  const auto plan = winograd_plan_for(x, weight.size(0), d);
  if (plan.kernels == WinogradKernels::tiles) return tiles_conv3x3(x, weight, plan.tile, d);  // sub-grids in place
  if (plan.kernels != WinogradKernels::onednn) return at::conv2d(x, weight, {}, {1, 1}, {d, d}, {d, d});
  if (d == 1) return onednn_conv3x3(x, weight, x.sizes().vec(), 1);
  // oneDNN's kernels take the d² sub-grids as a batch, copied out and back. Where d does not
  // divide a side, the map is first padded with zeros to sh·d × sw·d: the rows and columns
  // added are the padding the convolution reads there anyway, and their outputs are cut off.
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t sh = subgrid_side(h, d), sw = subgrid_side(w, d);
  const bool cl = is_channels_last(x);
  const bool ragged = sh * d != h || sw * d != w;
  const auto xp = ragged ? at::constant_pad_nd(x, {0, sw * d - w, 0, sh * d - h}) : x;
  auto sub = xp.reshape({n, c, sh, d, sw, d}).permute({0, 3, 5, 1, 2, 4}).reshape({n * d * d, c, sh, sw});
  if (cl) sub = sub.contiguous(at::MemoryFormat::ChannelsLast);
  auto y = onednn_conv3x3(sub, weight, x.sizes().vec(), d);
  const int64_t out = y.size(1);
  y = y.reshape({n, d, d, out, sh, sw}).permute({0, 3, 4, 1, 5, 2}).reshape({n, out, sh * d, sw * d});
  if (ragged) y = y.slice(2, 0, h).slice(3, 0, w);
  return y.contiguous(cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
}

}  // namespace cp2::compute
