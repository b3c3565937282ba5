#include "cp2/compute/pool.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <torch/torch.h>

#include "cp2/compute/apply.h"
#include "cp2/compute/fast_paths.h"
#include "cp2/compute/pool_kernels.h"
#include "cp2/compute/precision.h"
#include "cp2/compute/winograd.h"

namespace cp2::compute {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// The pooled map of x (and, where `positions`, PyTorch's int64 indices), planes in parallel.
std::pair<at::Tensor, at::Tensor> pool_planes(const at::Tensor& x, bool positions) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t ho = (h - 1) / 2 + 1, wo = (w - 1) / 2 + 1;
  auto y = at::empty({n, c, ho, wo}, x.options());
  at::Tensor idx = positions ? at::empty({n, c, ho, wo}, x.options().dtype(at::kLong)) : at::Tensor();
  const float* px = x.data_ptr<float>();
  float* py = y.data_ptr<float>();
  int64_t* pi = positions ? idx.data_ptr<int64_t>() : nullptr;
  // ~64 KiB of input a task.
  const int64_t grain = std::max<int64_t>(1, 16384 / (h * w));
  at::parallel_for(0, n * c, grain, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p)
      poolk::max_pool3x3s2(px + p * h * w, h, w, py + p * ho * wo, pi ? pi + p * ho * wo : nullptr);
  });
  return {y, idx};
}

struct MaxPoolFn : torch::autograd::Function<MaxPoolFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x) {
    auto [y, idx] = pool_planes(x, true);
    ctx->save_for_backward({x, idx});
    return y;
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    return {at::max_pool2d_with_indices_backward(grads[0], saved[0], {3, 3}, {2, 2}, {1, 1}, {1, 1}, false,
                                                  saved[1])};
  }
};

}  // namespace

bool max_pool_applies(const torch::nn::MaxPool2dImpl& pool, const at::Tensor& x) {
  if (!winograd_enabled() || !fast_path_on(FastPath::max_pool) || !poolk::cpu_supported()) return false;
  const auto& o = pool.options;
  const auto all = [](const auto& v, int64_t e) { return (*v)[0] == e && (*v)[1] == e; };
  if (!all(o.kernel_size(), 3) || !all(o.stride(), 2) || !all(o.padding(), 1) || !all(o.dilation(), 1) ||
      o.ceil_mode())
    return false;
  // The loop keeps positions in 32-bit lanes: planes of fewer than 2^31 values.
  return x.dim() == 4 && x.device().is_cpu() && x.scalar_type() == at::kFloat && x.numel() > 0 &&
         x.is_contiguous() && x.size(2) * x.size(3) < (int64_t{1} << 31) && !autocast_active(false);
}

at::Tensor max_pool2d(torch::nn::MaxPool2dImpl& pool, const at::Tensor& x) {
  if (!max_pool_applies(pool, x)) return pool.forward(x);
  RECORD_USER_SCOPE("cp2::max_pool");  // its forward in cp2 bench --profile
  if (at::GradMode::is_enabled() && x.requires_grad()) return apply_function<MaxPoolFn>(x);
  return pool_planes(x, false).first;
}

}  // namespace cp2::compute
