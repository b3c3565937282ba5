#include "cp2/compute/bn_act.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "cp2/compute/apply.h"
#include "cp2/compute/bn_kernels.h"
#include "cp2/compute/fast_paths.h"
#include "cp2/compute/precision.h"
#include "cp2/compute/winograd.h"

namespace cp2::compute {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// Pixels per summing chunk: the sums of a chunk are the same whichever thread runs it, and the
// chunks' are added in order, so results do not depend on the thread count.
constexpr int64_t kChunk = 512;
// Grain of the element-wise passes (~64 KiB of a map): in pixels of c channels, or in NCHW
// planes of c = H·W values.
int64_t bn_grain(int64_t c) { return std::max<int64_t>(1, 16384 / c); }

// How a map lies in memory: channels-last, [P][C] (also any 1×1 map: its NCHW order is the
// same), or NCHW, N·C planes of H·W values.
struct Layout {
  bool planes = false;  // NCHW
  int64_t n = 0, c = 0, hw = 0;
  explicit Layout(const at::Tensor& x)
      : planes(!x.is_contiguous(at::MemoryFormat::ChannelsLast)), n(x.size(0)), c(x.size(1)),
        hw(x.size(2) * x.size(3)) {}
  at::MemoryFormat format() const { return planes ? at::MemoryFormat::Contiguous : at::MemoryFormat::ChannelsLast; }
  int64_t pixels() const { return n * hw; }
};

// Per-channel sums over the map's pixels, as two double vectors: `sums(p0, p1, a, b, scratch)`
// adds a chunk's into a and b.
template <class Sums>
void chunked_sums(int64_t p, int64_t c, std::vector<double>& a, std::vector<double>& b, const Sums& sums) {
  const int64_t chunks = (p + kChunk - 1) / kChunk;
  std::vector<double> part(static_cast<size_t>(chunks * 2 * c), 0.0);
  at::parallel_for(0, chunks, 1, [&](int64_t k0, int64_t k1) {
    std::vector<float> scratch(static_cast<size_t>(2 * c));
    for (int64_t k = k0; k < k1; ++k) {
      double* pa = part.data() + k * 2 * c;
      sums(k * kChunk, std::min(p, (k + 1) * kChunk), pa, pa + c, scratch.data());
    }
  });
  a.assign(static_cast<size_t>(c), 0.0);
  b.assign(static_cast<size_t>(c), 0.0);
  for (int64_t k = 0; k < chunks; ++k)
    for (int64_t i = 0; i < c; ++i) {
      a[i] += part[k * 2 * c + i];
      b[i] += part[k * 2 * c + c + i];
    }
}

// The same over NCHW planes: channels in parallel, each summing its N planes in order (the bits
// do not depend on the thread count either); `plane(offset, ch, a, b)` adds the plane at
// `offset` of channel ch into a and b.
template <class Plane>
void plane_sums(const Layout& l, std::vector<double>& a, std::vector<double>& b, const Plane& plane) {
  a.assign(static_cast<size_t>(l.c), 0.0);
  b.assign(static_cast<size_t>(l.c), 0.0);
  at::parallel_for(0, l.c, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t ch = c0; ch < c1; ++ch)
      for (int64_t i = 0; i < l.n; ++i) plane((i * l.c + ch) * l.hw, ch, &a[ch], &b[ch]);
  });
}

// An element-wise pass over the map: `rows(p0, p1)` over channels-last pixel ranges, or
// `plane(offset, ch)` over each NCHW plane, in parallel.
template <class Rows, class Plane>
void each_part(const Layout& l, const Rows& rows, const Plane& plane) {
  if (!l.planes) {
    at::parallel_for(0, l.pixels(), bn_grain(l.c), rows);
    return;
  }
  at::parallel_for(0, l.n * l.c, bn_grain(l.hw), [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) plane(q * l.hw, q % l.c);
  });
}

// Undefined or empty (bn_act's stand-in for an absent input): absent.
bool present(const at::Tensor& t) { return t.defined() && t.numel() > 0; }
const float* ptr_or_null(const at::Tensor& t) { return present(t) ? t.data_ptr<float>() : nullptr; }

at::Tensor channel_tensor(const std::vector<float>& v) {
  auto t = at::empty({static_cast<int64_t>(v.size())}, at::kFloat);
  std::copy(v.begin(), v.end(), t.data_ptr<float>());
  return t;
}

// y = relu((x - mean)·scale + bias + residual) over the map, in parallel.
at::Tensor normalise(const at::Tensor& x, const at::Tensor& residual, bool relu, const float* mean,
                     const float* scale, const float* bias) {
  const Layout l(x);
  auto y = at::empty_like(x);
  const float* px = x.data_ptr<float>();
  const float* pr = ptr_or_null(residual);
  float* py = y.data_ptr<float>();
  each_part(
      l, [&](int64_t p0, int64_t p1) { bnk::normalize(px, pr, py, p0, p1, l.c, mean, scale, bias, relu); },
      [&](int64_t o, int64_t ch) {
        bnk::plane_normalize(px + o, pr ? pr + o : nullptr, py + o, l.hw, mean[ch], scale[ch], bias[ch], relu);
      });
  return y;
}

// The affine parameters as per-channel vectors (1 and 0 where affine = false).
std::vector<float> channel_values(const at::Tensor& t, int64_t c, float absent) {
  if (!present(t)) return std::vector<float>(static_cast<size_t>(c), absent);
  auto tc = t.detach().contiguous();
  return std::vector<float>(tc.data_ptr<float>(), tc.data_ptr<float>() + c);
}

// running = (1 - momentum)·running + momentum·batch (torch's running statistics), in place; a
// loop over the channels where the buffer is a dense fp32 CPU one (always, in the models), not
// two ops on tensors made for it.
void move_towards(at::Tensor& running, const std::vector<float>& batch, double momentum) {
  torch::NoGradGuard ng;
  if (running.device().is_cpu() && running.scalar_type() == at::kFloat && running.is_contiguous()) {
    float* r = running.data_ptr<float>();
    const float keep = static_cast<float>(1 - momentum), take = static_cast<float>(momentum);
    for (size_t i = 0; i < batch.size(); ++i) r[i] = r[i] * keep + batch[i] * take;
    return;
  }
  running.mul_(1 - momentum).add_(channel_tensor(batch).to(running.options()), momentum);
}

struct BnActFn : torch::autograd::Function<BnActFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                            const at::Tensor& residual, at::Tensor running_mean, at::Tensor running_var,
                            double momentum, double eps, bool relu) {
    const Layout l(x);
    const int64_t c = l.c, p = l.pixels();
    const float* px = x.data_ptr<float>();
    // Shifted by the first pixel's values: E[(x-s)²] - E[x-s]² does not cancel as E[x²] - E[x]²
    // would where a channel's mean is far from zero against its spread.
    std::vector<float> shift(static_cast<size_t>(c));
    for (int64_t i = 0; i < c; ++i) shift[i] = px[l.planes ? i * l.hw : i];
    std::vector<double> s1, s2;
    if (l.planes)
      plane_sums(l, s1, s2, [&](int64_t o, int64_t ch, double* a, double* bb) {
        bnk::plane_shifted_sums(px + o, l.hw, shift[ch], a, bb);
      });
    else
      chunked_sums(p, c, s1, s2, [&](int64_t p0, int64_t p1, double* a, double* bb, float* scratch) {
        bnk::shifted_sums(px, p0, p1, c, shift.data(), a, bb, scratch);
      });
    std::vector<float> mean(c), invstd(c), scale(c), var_unbiased(c);
    const auto wv = channel_values(w, c, 1.f), bv = channel_values(b, c, 0.f);
    for (int64_t i = 0; i < c; ++i) {
      const double m1 = s1[i] / static_cast<double>(p);
      const double v = std::max(0.0, s2[i] / static_cast<double>(p) - m1 * m1);
      mean[i] = static_cast<float>(shift[i] + m1);
      var_unbiased[i] = static_cast<float>(v * static_cast<double>(p) / static_cast<double>(p - 1));
      invstd[i] = static_cast<float>(1.0 / std::sqrt(v + eps));
      scale[i] = invstd[i] * wv[i];
    }
    if (running_mean.defined()) {
      move_towards(running_mean, mean, momentum);
      move_towards(running_var, var_unbiased, momentum);
    }
    auto y = normalise(x, residual, relu, mean.data(), scale.data(), bv.data());
    std::vector<float> stats(mean);
    stats.insert(stats.end(), invstd.begin(), invstd.end());
    ctx->save_for_backward({x, relu ? y : at::empty({0}), w, channel_tensor(stats)});
    ctx->saved_data["residual"] = present(residual);
    return y;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &y = saved[1], &w = saved[2];
    const auto& stats = saved[3];  // mean, then invstd
    const bool has_residual = ctx->saved_data["residual"].toBool();
    const Layout l(x);
    const int64_t c = l.c, p = l.pixels();
    const auto dy = grads[0].contiguous(l.format());  // in the saved map's memory order
    const float *pdy = dy.data_ptr<float>(), *px = x.data_ptr<float>(), *py = ptr_or_null(y);
    const float *mean = stats.data_ptr<float>(), *invstd = mean + c;
    // The residual's gradient is g (dy through the ReLU's mask): written by the sums' pass, then
    // read back by the input's in place of dy and the mask.
    const bool want_dx = ctx->needs_input_grad(0), want_dr = has_residual && ctx->needs_input_grad(3);
    at::Tensor dx, dr;
    if (want_dr) dr = at::empty_like(x);
    float* pdr = want_dr ? dr.data_ptr<float>() : nullptr;
    std::vector<double> sg, sgx;
    if (l.planes)
      plane_sums(l, sg, sgx, [&](int64_t o, int64_t ch, double* a, double* bb) {
        bnk::plane_grad_sums(pdy + o, py ? py + o : nullptr, px + o, l.hw, mean[ch], a, bb, pdr ? pdr + o : nullptr);
      });
    else
      chunked_sums(p, c, sg, sgx, [&](int64_t p0, int64_t p1, double* a, double* bb, float* scratch) {
        bnk::grad_sums(pdy, py, px, p0, p1, c, mean, a, bb, scratch, pdr);
      });
    const auto wv = channel_values(w, c, 1.f);
    std::vector<float> gw(c), gb(c), ka(c), kb(c), kd(c);
    for (int64_t i = 0; i < c; ++i) {
      // PyTorch's batch_norm backward: dx = (g - mean(g) - (x - μ)·invstd²·mean(g·(x - μ)))·invstd·w.
      const double k3 = static_cast<double>(invstd[i]) * wv[i];
      const double k1 = sg[i] / static_cast<double>(p);
      const double k2 = static_cast<double>(invstd[i]) * invstd[i] * sgx[i] / static_cast<double>(p);
      ka[i] = static_cast<float>(k3);
      kb[i] = static_cast<float>(-k2 * k3);
      kd[i] = static_cast<float>(-k1 * k3);
      gw[i] = static_cast<float>(sgx[i] * invstd[i]);
      gb[i] = static_cast<float>(sg[i]);
    }
    if (want_dx) {
      dx = at::empty_like(x);
      float* pdx = dx.data_ptr<float>();
      const float *g = want_dr ? pdr : pdy, *mask = want_dr ? nullptr : py;
      each_part(
          l,
          [&](int64_t p0, int64_t p1) {
            bnk::grad_input(g, mask, px, pdx, p0, p1, c, mean, ka.data(), kb.data(), kd.data());
          },
          [&](int64_t o, int64_t ch) {
            bnk::plane_grad_input(g + o, mask ? mask + o : nullptr, px + o, pdx + o, l.hw, mean[ch], ka[ch], kb[ch],
                                  kd[ch]);
          });
    }
    at::Tensor dw = present(w) && ctx->needs_input_grad(1) ? channel_tensor(gw) : at::Tensor();
    at::Tensor db = ctx->needs_input_grad(2) ? channel_tensor(gb) : at::Tensor();
    return {dx, dw, db, dr, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

bool bn_act_applies(const at::Tensor& x, const at::Tensor& residual, bool batch_stats) {
  if (!winograd_enabled() || !fast_path_on(FastPath::bn_act) || !bnk::cpu_supported()) return false;
  if (x.dim() != 4 || !x.device().is_cpu() || x.scalar_type() != at::kFloat || x.numel() == 0) return false;
  const int64_t c = x.size(1);
  // Channels-last maps with C a multiple of 8 as [P][C] rows; other dense maps as NCHW planes.
  const bool rows = x.is_contiguous(at::MemoryFormat::ChannelsLast);
  if (rows ? c % 8 != 0 : !x.is_contiguous()) return false;
  if (autocast_active(false) || (batch_stats ? x.numel() / c < 2 : at::GradMode::is_enabled())) return false;
  if (residual.defined() &&
      (residual.sizes() != x.sizes() || residual.scalar_type() != at::kFloat || !residual.device().is_cpu() ||
       !residual.is_contiguous(rows ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous)))
    return false;
  return true;
}

at::Tensor bn_act(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                  const at::Tensor& running_mean, const at::Tensor& running_var, bool batch_stats, double momentum,
                  double eps, const at::Tensor& residual, bool relu) {
  RECORD_USER_SCOPE("cp2::bn_act");  // its forward in cp2 bench --profile
  if (batch_stats) {
    // LibTorch 1.13's custom functions refuse undefined inputs: an empty tensor stands for one.
    const auto given = [](const at::Tensor& t) { return t.defined() ? t : at::empty({0}); };
    return apply_function<BnActFn>(x, given(weight), given(bias), given(residual), running_mean, running_var,
                                   momentum, eps, relu);
  }
  // Evaluation: the running statistics, one pass.
  const int64_t c = x.size(1);
  const auto mean = channel_values(running_mean, c, 0.f), var = channel_values(running_var, c, 1.f);
  const auto wv = channel_values(weight, c, 1.f), bv = channel_values(bias, c, 0.f);
  std::vector<float> scale(c);
  for (int64_t i = 0; i < c; ++i) scale[i] = static_cast<float>(wv[i] / std::sqrt(static_cast<double>(var[i]) + eps));
  return normalise(x, residual, relu, mean.data(), scale.data(), bv.data());
}

}  // namespace cp2::compute
