#include "cp2/models/batchnorm.h"

#include <torch/torch.h>

#include "cp2/common.h"
#include "cp2/compute/apply.h"
#include "cp2/compute/bn_act.h"
#include "cp2/dist/comm.h"

namespace cp2::models {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// bf16/fp16 activations (autocast) are normalised in fp32: statistics, scale and gradient.
torch::Tensor widen(const torch::Tensor& t) {
  return t.scalar_type() == torch::kBFloat16 || t.scalar_type() == torch::kHalf ? t.to(torch::kFloat) : t;
}

// y = (x - mean) / sqrt(var + eps) * w + b with mean/var over every rank's N x H x W.
// Per-rank (count, mean, M2) are gathered and combined (Chan et al.'s parallel variance),
// which keeps fp32 accuracy where sum / sum-of-squares would not.
struct SyncBNFunction : public torch::autograd::Function<SyncBNFunction> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& w,
                               const torch::Tensor& b, torch::Tensor running_mean, torch::Tensor running_var,
                               double eps, double momentum, dist::Comm* comm) {
    const int64_t C = x.size(1);
    const double n_local = static_cast<double>(x.numel() / C);
    auto xd = widen(x.detach());
    auto mean_l = xd.mean({0, 2, 3}).to(torch::kDouble);
    auto m2_l = xd.var({0, 2, 3}, /*unbiased=*/false).to(torch::kDouble) * n_local;
    auto stats = torch::cat({torch::full({1}, n_local, mean_l.options()), mean_l, m2_l}).unsqueeze(0);
    auto all = comm->all_gather(stats);  // W x (1 + 2C)
    auto n_i = all.narrow(1, 0, 1);
    auto mean_i = all.narrow(1, 1, C), m2_i = all.narrow(1, 1 + C, C);
    const double n = n_i.sum().item<double>();
    auto mean = (n_i * mean_i).sum(0) / n;
    auto m2 = (m2_i + n_i * (mean_i - mean).pow(2)).sum(0);
    auto var = m2 / n;
    {
      torch::NoGradGuard ng;
      running_mean.mul_(1 - momentum).add_(mean.to(running_mean.scalar_type()), momentum);
      running_var.mul_(1 - momentum).add_((var * (n / std::max(n - 1, 1.0))).to(running_var.scalar_type()), momentum);
    }
    auto meanf = mean.to(xd.scalar_type()), invstd = (var + eps).rsqrt().to(xd.scalar_type());
    ctx->save_for_backward({xd, w, meanf, invstd});
    ctx->saved_data["n"] = n;
    ctx->saved_data["comm"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(comm));
    auto shape = std::vector<int64_t>{1, C, 1, 1};
    auto scale = w.defined() ? invstd * w : invstd;
    auto y = (xd - meanf.view(shape)) * scale.view(shape);
    return (b.defined() ? y + b.view(shape) : y).to(x.scalar_type());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto x = saved[0], w = saved[1], mean = saved[2], invstd = saved[3];
    const double n = ctx->saved_data["n"].toDouble();
    auto* comm = reinterpret_cast<dist::Comm*>(static_cast<intptr_t>(ctx->saved_data["comm"].toInt()));
    auto g = widen(grads[0]).contiguous();
    const int64_t C = x.size(1);
    auto shape = std::vector<int64_t>{1, C, 1, 1};
    auto xmu = x - mean.view(shape);
    auto sum_dy_l = g.sum({0, 2, 3});
    auto sum_dy_xmu_l = (g * xmu).sum({0, 2, 3});
    auto red = torch::cat({sum_dy_l, sum_dy_xmu_l}).contiguous();
    comm->all_reduce_sum(red);
    auto sum_dy = red.narrow(0, 0, C), sum_dy_xmu = red.narrow(0, C, C);
    auto scale = w.defined() ? invstd * w : invstd;
    auto gx = (g - (sum_dy / n).view(shape) - xmu * (invstd * invstd * sum_dy_xmu / n).view(shape)) * scale.view(shape);
    // Weight and bias gradients stay local: the gradient reducer averages them with the rest.
    torch::Tensor gw = w.defined() ? sum_dy_xmu_l * invstd : torch::Tensor();
    torch::Tensor gb = sum_dy_l;
    return {gx.to(grads[0].scalar_type()), gw, gb, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

SyncableBatchNorm2dImpl::SyncableBatchNorm2dImpl(const torch::nn::BatchNormOptions& o) : options(o) { reset(); }

void SyncableBatchNorm2dImpl::reset() {
  const int64_t n = options.num_features();
  if (options.affine()) {
    weight = register_parameter("weight", torch::ones({n}));
    bias = register_parameter("bias", torch::zeros({n}));
  }
  if (options.track_running_stats()) {
    running_mean = register_buffer("running_mean", torch::zeros({n}));
    running_var = register_buffer("running_var", torch::ones({n}));
    num_batches_tracked = register_buffer("num_batches_tracked", torch::tensor(0, torch::kLong));
  }
}

void SyncableBatchNorm2dImpl::pretty_print(std::ostream& stream) const {
  stream << "BatchNorm2d(" << options.num_features() << ", eps=" << options.eps()
         << ", momentum=" << (options.momentum() ? std::to_string(*options.momentum()) : "None")
         << ", affine=" << options.affine() << ", track_running_stats=" << options.track_running_stats()
         << (synced() ? ", synced" : "") << ")";
}

bool SyncableBatchNorm2dImpl::synced() const { return comm_ && comm_->size() > 1; }

torch::Tensor SyncableBatchNorm2dImpl::forward_act(const torch::Tensor& x, const torch::Tensor& residual, bool relu) {
  if (x.dim() != 4) throw Error("BatchNorm2d: expected N x C x H x W input, found " + shape_str(x.sizes().vec()));
  const auto& o = options;
  // torch's BatchNorm: count the batch, then momentum (or the cumulative 1 / count).
  double momentum = o.momentum().value_or(0.0);
  if (is_training() && o.track_running_stats()) {
    torch::NoGradGuard ng;
    num_batches_tracked.add_(1);
    if (!o.momentum()) momentum = 1.0 / num_batches_tracked.item<double>();
  }
  const bool batch_stats = is_training() || !o.track_running_stats();
  torch::Tensor y;
  if (!synced() || !is_training() || !o.track_running_stats()) {
    if (compute::bn_act_applies(x, residual, batch_stats))
      return compute::bn_act(x, o.affine() ? weight : torch::Tensor(), o.affine() ? bias : torch::Tensor(),
                             running_mean, running_var, batch_stats, momentum, o.eps(), residual, relu);
    y = torch::batch_norm(x, weight, bias, running_mean, running_var, batch_stats, momentum, o.eps(),
                          at::globalContext().userEnabledCuDNN());
  } else {
    y = compute::apply_function<SyncBNFunction>(x, o.affine() ? weight : torch::Tensor(),
                                                o.affine() ? bias : torch::Tensor(), running_mean, running_var,
                                                o.eps(), momentum, comm_.get());
  }
  if (residual.defined()) y += residual;
  return relu ? y.relu_() : y;
}

int set_sync_bn(torch::nn::Module& m, std::shared_ptr<dist::Comm> comm) {
  int n = 0;
  for (auto& mod : m.modules(/*include_self=*/true))
    if (auto* bn = dynamic_cast<SyncableBatchNorm2dImpl*>(mod.get())) {
      bn->set_comm(comm);
      ++n;
    }
  return n;
}

bool buffers_finite(torch::nn::Module& m) {
  std::vector<at::Tensor> floats;
  for (auto& b : m.buffers())
    if (b.is_floating_point() && b.numel() > 0) floats.push_back(b);
  if (floats.empty()) return true;
  torch::NoGradGuard ng;
  return torch::stack(at::_foreach_norm(floats, 1)).isfinite().all().item<bool>();
}

}  // namespace cp2::models
