#include "cp2/compute/pointwise.h"

#include <ATen/record_function.h>
#include <torch/torch.h>

#include "cp2/common.h"
#include "cp2/compute/apply.h"
#include "cp2/compute/flops.h"
#include "cp2/compute/gemm.h"
#include "cp2/compute/precision.h"

namespace cp2::compute {

namespace {

// Counted as the convolution it is, `times` over (forward 1; backward one per gradient).
void count_pointwise(const at::Tensor& x, int64_t o, double times) {
  if (times <= 0) return;
  OpShape s{"conv", x.sizes().vec(), {o, x.size(1), 1, 1}, {1, 1}, {0, 0}, {1, 1}, 1};
  count_conv_flops(s, times);
}

struct PointwiseConvFn : torch::autograd::Function<PointwiseConvFn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w) {
    ctx->save_for_backward({x, w});
    const int64_t n = x.size(0), c = x.size(1), h = x.size(2), wd = x.size(3), o = w.size(0);
    // A 1×1 weight's (o, c) element sits at o·C + c in NCHW and in channels-last memory alike.
    const auto wc = w.contiguous();
    auto y = at::empty({n, o, h, wd}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
    sgemm("conv1x1_gemm", 'N', 'T', n * h * wd, o, c, x.data_ptr<float>(), c, wc.data_ptr<float>(), c, 0.f,
          y.data_ptr<float>(), o);
    count_pointwise(x, o, 1);
    return y;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& w = saved[1];
    const int64_t n = x.size(0), c = x.size(1), h = x.size(2), wd = x.size(3), o = w.size(0), m = n * h * wd;
    const bool want_dx = ctx->needs_input_grad(0), want_dw = ctx->needs_input_grad(1);
    const auto g = grads[0].contiguous(at::MemoryFormat::ChannelsLast);
    at::Tensor dx, dw;
    if (want_dx) {
      const auto wc = w.contiguous();
      dx = at::empty_like(x, at::MemoryFormat::ChannelsLast);
      sgemm("conv1x1_gemm backward", 'N', 'N', m, c, o, g.data_ptr<float>(), o, wc.data_ptr<float>(), c, 0.f,
            dx.data_ptr<float>(), c);
    }
    if (want_dw) {
      // In the weight's strides (they differ between the layouts only in the 1×1 dimensions), so
      // autograd takes it as it is.
      dw = w.is_contiguous() ? at::empty_strided(w.sizes(), w.strides(), w.options()) : at::empty(w.sizes(), w.options());
      sgemm("conv1x1_gemm backward", 'T', 'N', o, c, m, g.data_ptr<float>(), o, x.data_ptr<float>(), c, 0.f,
            dw.data_ptr<float>(), c);
    }
    count_pointwise(x, o, (want_dx ? 1 : 0) + (want_dw ? 1 : 0));
    return {dx, dw};
  }
};

}  // namespace

at::Tensor conv1x1_gemm(const at::Tensor& x, const at::Tensor& weight) {
  if (x.dim() != 4 || weight.dim() != 4 || weight.size(2) != 1 || weight.size(3) != 1 || x.size(1) != weight.size(1))
    throw Error("conv1x1_gemm: expected input (N,C,H,W) and weight (O,C,1,1), found " + shape_str(x.sizes().vec()) +
                " and " + shape_str(weight.sizes().vec()));
  if (!x.device().is_cpu() || x.scalar_type() != at::kFloat || weight.scalar_type() != at::kFloat)
    throw Error("conv1x1_gemm: expected fp32 CPU tensors");
  if (!x.is_contiguous(at::MemoryFormat::ChannelsLast))
    throw Error("conv1x1_gemm: expected channels-last input, found strides " + shape_str(x.strides().vec()));
  RECORD_USER_SCOPE("cp2::conv1x1_gemm");  // its forward in cp2 bench --profile
  return apply_function<PointwiseConvFn>(x, weight);
}

}  // namespace cp2::compute
