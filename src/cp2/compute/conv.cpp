#include "cp2/compute/conv.h"

#include <torch/torch.h>

#include <variant>

#include "cp2/common.h"
#include "cp2/compute/dilated.h"
#include "cp2/compute/fast_paths.h"
#include "cp2/compute/gemm.h"
#include "cp2/compute/pointwise.h"
#include "cp2/compute/precision.h"
#include "cp2/compute/winograd.h"
#include "cp2/compute/winograd_tiles.h"

namespace cp2::compute {

namespace {

// A conv's padding is a variant (sizes, 'valid' or 'same'): c10::variant in LibTorch 1.13,
// std::variant in 2.x. `get_if` finds the matching one by argument-dependent lookup.
template <class Variant>
const torch::ExpandingArray<2>* explicit_padding(const Variant& v) {
  using std::get_if;
  return get_if<torch::ExpandingArray<2>>(&v);
}

// The dilation d of a 3×3, stride-1, ungrouped convolution with zero padding d in both
// dimensions (the shape every path but the module's forward needs), else 0.
int64_t same_dilated_3x3(const torch::nn::Conv2dImpl& conv) {
  const auto& o = conv.options;
  const auto k = *o.kernel_size(), st = *o.stride(), dl = *o.dilation();
  const auto* pad = explicit_padding(o.padding());
  const int64_t d = dl[0];
  const bool eligible = o.groups() == 1 && k[0] == 3 && k[1] == 3 && st[0] == 1 && st[1] == 1 && dl[1] == d &&
                        o.padding_mode().index() == 0 && pad && (**pad)[0] == d && (**pad)[1] == d;
  return eligible ? d : 0;
}

// A 1×1, stride-1, unpadded, ungrouped convolution (what conv1x1_gemm computes).
bool plain_1x1(const torch::nn::Conv2dImpl& conv) {
  const auto& o = conv.options;
  const auto k = *o.kernel_size(), st = *o.stride();
  const auto* pad = explicit_padding(o.padding());
  return o.groups() == 1 && k[0] == 1 && k[1] == 1 && st[0] == 1 && st[1] == 1 && o.padding_mode().index() == 0 &&
         pad && (**pad)[0] == 0 && (**pad)[1] == 0;
}

// The outer taps of a dimension no larger than d multiply only zero padding: without them the
// sums are the same but for additions of exact zeros, and so are the gradients (a dropped
// tap's weight gradient is exactly zero either way), at up to 9× less work.
at::Tensor centre_taps_conv(torch::nn::Conv2dImpl& conv, const at::Tensor& x, int64_t d) {
  namespace F = torch::nn::functional;
  using torch::indexing::Slice;
  const bool rows = d >= x.size(2), cols = d >= x.size(3);
  const auto w = conv.weight.index({Slice(), Slice(), rows ? Slice(1, 2) : Slice(), cols ? Slice(1, 2) : Slice()});
  return F::conv2d(x, w, F::Conv2dFuncOptions().bias(conv.bias).padding({rows ? 0 : d, cols ? 0 : d})
                             .dilation({rows ? 1 : d, cols ? 1 : d}));
}

}  // namespace

namespace {

ConvPath chosen_path(torch::nn::Conv2dImpl& conv, const at::Tensor& x) {
  if (x.dim() != 4) return ConvPath::module;  // the module's forward says what is wrong
  const int64_t d = same_dilated_3x3(conv);
  if (d > 1 && (d >= x.size(2) || d >= x.size(3))) return ConvPath::centre_taps;
  if (!winograd_enabled() || !x.device().is_cpu() || x.scalar_type() != at::kFloat ||
      conv.bias.defined() || autocast_active(false))
    return ConvPath::module;
  // The 1×1s as GEMMs only on channels-last memory (no copy), through oneDNN's sgemm, where
  // oneDNN runs AVX-512 kernels: capped to AVX2, its sgemm and its 1×1 convolution ran ResNet-50's
  // shapes within ±3 % of each other (compute/pointwise.h).
  if (d == 0)
    return plain_1x1(conv) && is_channels_last(x) && sgemm_is_onednn() && onednn_avx512() ? ConvPath::gemm_1x1
                                                                                           : ConvPath::module;
  const int64_t n = x.size(0), c = x.size(1), out = conv.weight.size(0), h = x.size(2), w = x.size(3);
  if (d == 1) return winograd_runs(n, c, out, h, w, is_channels_last(x)) ? ConvPath::winograd : ConvPath::module;
  const auto plan = winograd_plan_for(x, out, d);  // of the sub-grids
  const double kept = dilated_taps_kept(h, w, d);
  // cp2's tiles over the sub-grids where they multiply kSubgridsOverTaps times less than the
  // taps (ResNet-18's layer4 at 96 px: rate 2 on 6×6 maps, 2.8 against 9 · 0.60 per output;
  // ASPP's rate 6 on 512 px crops' 32² maps, 3.5 against 6.9), else the taps (ASPP at 224 px).
  const double subgrid_products = plan.products * static_cast<double>(subgrid_side(h, d) * subgrid_side(w, d) * d * d) /
                                  static_cast<double>(h * w);
  const bool subgrids = plan.kernels == WinogradKernels::tiles && fast_path_on(FastPath::subgrids) &&
                        9 * kept >= kSubgridsOverTaps * subgrid_products;
  // The tap GEMMs only through oneDNN's sgemm: through LibTorch's matmul (OpenBLAS in Debian's)
  // they ran 0.16-0.73x the direct convolution on an Intel Xeon, 1.0-2.3x through oneDNN's.
  if (!subgrids && sgemm_is_onednn() && kept <= (is_channels_last(x) ? kTapGemmShareNhwc : kTapGemmShareNchw))
    return ConvPath::taps;
  // Where Winograd would run the direct convolution anyway (cp2's kernels below their pay-off
  // rule), the module's forward.
  return plan.kernels != WinogradKernels::none ? ConvPath::winograd_subgrids : ConvPath::module;
}

}  // namespace

ConvPath conv_path(torch::nn::Conv2dImpl& conv, const at::Tensor& x) {
  const ConvPath p = chosen_path(conv, x);
  // A path turned off (cp2 bench --alternate) leaves the convolution to the module.
  switch (p) {
    case ConvPath::winograd:
    case ConvPath::winograd_subgrids: return fast_path_on(FastPath::winograd) ? p : ConvPath::module;
    case ConvPath::taps: return fast_path_on(FastPath::tap_gemms) ? p : ConvPath::module;
    case ConvPath::gemm_1x1: return fast_path_on(FastPath::gemm_1x1) ? p : ConvPath::module;
    default: return p;
  }
}

const char* conv_path_name(ConvPath p) {
  switch (p) {
    case ConvPath::centre_taps: return "centre taps";
    case ConvPath::taps: return "tap GEMMs";
    case ConvPath::winograd: return "Winograd";
    case ConvPath::winograd_subgrids: return "Winograd sub-grids";
    case ConvPath::gemm_1x1: return "1x1 GEMMs";
    default: return "direct";
  }
}

at::Tensor conv2d(torch::nn::Conv2dImpl& conv, const at::Tensor& x) {
  switch (conv_path(conv, x)) {
    case ConvPath::centre_taps: return centre_taps_conv(conv, x, (*conv.options.dilation())[0]);
    case ConvPath::module: return conv.forward(x);
    case ConvPath::taps: return dilated_conv3x3_taps(x, conv.weight, (*conv.options.dilation())[0]);
    case ConvPath::winograd: return winograd_conv3x3(x, conv.weight);
    case ConvPath::gemm_1x1: return conv1x1_gemm(x, conv.weight);
    case ConvPath::winograd_subgrids: break;
  }
  return winograd_conv3x3(x, conv.weight, (*conv.options.dilation())[0]);
}

namespace {

// The tile size cp2's kernels would take for conv over [v, rest...], or 0 where they would not
// run (pooled_runs).
int64_t pooled_tile(torch::nn::Conv2dImpl& conv, const at::Tensor& v, const std::vector<at::Tensor>& rest) {
  if (rest.empty() || !fast_path_on(FastPath::aspp_pool) || !fast_path_on(FastPath::winograd) ||
      !winograd_enabled() || autocast_active(false) || conv.bias.defined() || same_dilated_3x3(conv) != 1)
    return 0;
  const auto& x = rest[0];
  const auto fits = [&](const at::Tensor& t) {
    return t.dim() == 4 && t.device().is_cpu() && t.scalar_type() == at::kFloat && t.size(0) == x.size(0);
  };
  if (!fits(v) || v.size(2) != 1 || v.size(3) != 1) return 0;
  int64_t cr = 0;
  for (const auto& r : rest) {
    if (!fits(r) || r.size(2) != x.size(2) || r.size(3) != x.size(3)) return 0;
    cr += r.size(1);
  }
  const int64_t cp = v.size(1), o = conv.weight.size(0);
  if (conv.weight.size(1) != cp + cr || !tiles_fit(cp, cr)) return 0;
  const auto plan = winograd_plan(x.size(0), cp + cr, o, x.size(2), x.size(3), false, is_channels_last(x));
  return plan.kernels == WinogradKernels::tiles ? plan.tile : 0;
}

}  // namespace

bool pooled_runs(torch::nn::Conv2dImpl& conv, const at::Tensor& v, const std::vector<at::Tensor>& rest) {
  return pooled_tile(conv, v, rest) != 0;
}

at::Tensor conv2d_pooled(torch::nn::Conv2dImpl& conv, const at::Tensor& v, const std::vector<at::Tensor>& rest) {
  const int64_t tile = pooled_tile(conv, v, rest);
  if (tile == 0) throw Error("conv2d_pooled: the convolution does not qualify (compute::pooled_runs)");
  return tiles_conv3x3_pooled(v, rest.size() == 1 ? rest[0] : torch::cat(rest, 1), conv.weight, tile);
}

}  // namespace cp2::compute
