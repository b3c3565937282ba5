#include "cp2/train/optim.h"

#include <ATen/record_function.h>
#include <torch/torch.h>

#include <cmath>
#include <map>
#include <utility>

#include "cp2/common.h"
#include "cp2/dist/reducer.h"
#include "cp2/train/one_pass.h"
#include "cp2/train/sgd_fma.h"

namespace cp2::train {

void OptimOptions::validate() const {
  if (name != "sgd" && name != "adamw") throw Error("optim.name: expected sgd or adamw, found '" + name + "'");
  if (!(lr > 0)) throw Error("optim.lr: expected > 0, found " + num_str(lr));
  if (momentum < 0 || momentum >= 1) throw Error("optim.momentum: expected 0 <= m < 1, found " + num_str(momentum));
  if (weight_decay < 0) throw Error("optim.weight_decay: expected >= 0, found " + num_str(weight_decay));
  for (auto [key, b] : {std::pair{"optim.beta1", beta1}, {"optim.beta2", beta2}})
    if (!(b >= 0 && b < 1)) throw Error(std::string(key) + ": expected 0 <= b < 1, found " + num_str(b));
  if (!(eps > 0)) throw Error("optim.eps: expected > 0, found " + num_str(eps));
  if (schedule != "cosine-epoch" && schedule != "cosine-iter" && schedule != "constant" && schedule != "poly")
    throw Error("optim.schedule: expected cosine-epoch, cosine-iter, poly or constant, found '" + schedule + "'");
  if (schedule == "poly" && !(power > 0)) throw Error("optim.power: expected > 0, found " + num_str(power));
  if (schedule == "poly" && !(min_lr >= 0 && min_lr <= lr))
    throw Error("optim.min_lr: expected 0 <= min_lr <= lr (" + num_str(lr) + "), found " + num_str(min_lr));
}

double scheduled_lr(const OptimOptions& o, double lr0, int64_t epoch, int64_t iter, int64_t iters_per_epoch,
                    int64_t epochs) {
  if (o.schedule == "constant") return lr0;
  if (o.schedule == "poly") {  // mmcv PolyLrUpdaterHook, by iteration
    const double progress = static_cast<double>(epoch * iters_per_epoch + iter);
    const double coeff = std::pow(1.0 - progress / static_cast<double>(epochs * iters_per_epoch), o.power);
    return (lr0 - o.min_lr) * coeff + o.min_lr;
  }
  double e = static_cast<double>(epoch);
  if (o.schedule == "cosine-iter" && iters_per_epoch > 0) e += static_cast<double>(iter) / iters_per_epoch;
  return lr0 * 0.5 * (1.0 + std::cos(M_PI * e / static_cast<double>(epochs)));
}

Optimizer::Optimizer(NamedTensors params, OptimOptions o)
    : params_(std::move(params)), opt_(std::move(o)), buf1_(params_.size()), buf2_(params_.size()) {
  opt_.validate();
}

void Optimizer::zero_grad() {
  for (auto& [n, p] : params_)
    if (p.grad().defined()) p.mutable_grad() = at::Tensor();  // set_to_none, PyTorch 2.x's default
}

void Optimizer::enable_loss_scaling(double init_scale, int64_t growth_interval) {
  if (!(init_scale > 0) || !std::isfinite(init_scale) || growth_interval < 1)
    throw Error("loss scaling: expected a positive finite scale and growth interval, found " +
                std::to_string(init_scale) + " and " + std::to_string(growth_interval));
  scaling_ = true;
  scale_ = init_scale;
  growth_interval_ = growth_interval;
}

at::Tensor Optimizer::scaled(const at::Tensor& loss) const { return scaling_ ? loss * scale_ : loss; }

at::Tensor Optimizer::unscale_grads() {
  torch::NoGradGuard ng;
  std::vector<at::Tensor> grads;
  for (auto& [n, p] : params_)
    if (p.grad().defined()) grads.push_back(p.mutable_grad());
  if (grads.empty()) return torch::ones({}, torch::kBool);
  // Two multi-tensor ops and no host read: an L1 norm is non-finite where any element is
  // (inf, -inf or NaN), and overflows no sooner than the gradient's own sum would.
  at::_foreach_mul_(grads, 1.0 / scale_);
  return torch::stack(at::_foreach_norm(grads, 1)).isfinite().all();
}

bool Optimizer::settle_scale(bool grads_finite) {
  if (!grads_finite) {
    skip_step();
    return false;
  }
  if (++growth_ == growth_interval_) {
    scale_ *= 2.0;  // growth_factor
    growth_ = 0;
  }
  return true;
}

void Optimizer::skip_step() {
  if (!scaling_) throw Error("loss scaling: a step can be skipped only with loss scaling on");
  scale_ *= 0.5;  // GradScaler's backoff_factor
  growth_ = 0;
  ++skipped_;
  // From 2^16, some 100 non-finite steps in a row: no scale helps; stop rather than skip
  // every step of the run (GradScaler would go on).
  if (scale_ < 0x1p-84)
    throw Error("loss scaling: the gradients stayed non-finite while the scale halved to 2^" +
                std::to_string(static_cast<int>(std::log2(scale_))) + " (" + std::to_string(skipped_) +
                " steps skipped): the model diverged or overflows in its forward pass");
}

// On a CPU with FMA, a dense fp32 parameter whose gradient and buffer share its strides takes
// one pass (train/sgd_fma.h: the same bits, each tensor read and written once); the rest, and
// every GPU, the multi-tensor ops below.
bool Optimizer::sgd_one_pass(size_t i, double lr) {
  auto& p = params_[i].second;
  const auto& g = p.grad();
  auto& b = buf1_[i];
  const bool momentum = opt_.momentum != 0, first = momentum && !b.defined();
  if (!(momentum && !first ? one_pass_fits(p, {&g, &b}) : one_pass_fits(p, {&g}))) return false;
  if (first) b = at::empty_strided(p.sizes(), p.strides(), p.options());
  float* pp = p.data_ptr<float>();
  const float* gp = g.data_ptr<float>();
  float* bp = momentum ? b.data_ptr<float>() : nullptr;
  const auto wd = static_cast<float>(opt_.weight_decay), m = static_cast<float>(opt_.momentum);
  const auto neg_lr = static_cast<float>(-lr);  // as ATen converts the alpha of add_(buf, -lr)
  one_pass(p, [&](int64_t begin, int64_t end) { sgd_fma::update(pp, gp, bp, begin, end, wd, m, first, neg_lr); });
  return true;
}

// torch.optim.SGD as its foreach form (PyTorch 2.x's default on CUDA): a few multi-tensor ops
// over all parameters instead of up to four launches per tensor, which on a GPU is host time
// (docs/benchmarks.md, "GPU"). Elementwise it is the per-tensor arithmetic, g + wd·p, then
// buf·m + g (the first step: buf = g), then p − lr·buf: on the CPU bit for bit (tested). The
// parameters sgd_one_pass takes are not in these lists.
void Optimizer::sgd_step(double lr) {
  std::vector<at::Tensor> ps, gs, bufs;
  std::vector<size_t> idx;
  for (size_t i = 0; i < params_.size(); ++i)
    if (params_[i].second.grad().defined() && !sgd_one_pass(i, lr)) {
      ps.push_back(params_[i].second);
      gs.push_back(params_[i].second.grad());
      idx.push_back(i);
    }
  if (ps.empty()) return;
  if (opt_.weight_decay != 0) gs = at::_foreach_add(gs, ps, opt_.weight_decay);
  if (opt_.momentum != 0) {
    std::vector<at::Tensor> old, old_g;
    for (size_t j = 0; j < idx.size(); ++j) {
      auto& b = buf1_[idx[j]];
      if (!b.defined()) {
        b = gs[j].clone();
      } else {
        old.push_back(b);
        old_g.push_back(gs[j]);
      }
      bufs.push_back(b);
    }
    if (!old.empty()) {
      at::_foreach_mul_(old, opt_.momentum);
      at::_foreach_add_(old, old_g);
    }
    gs = std::move(bufs);
  }
  at::_foreach_add_(ps, gs, -lr);
}

bool Optimizer::step(double lr) {
  if (scaling_ && !settle_scale(unscale_grads().item<bool>())) return false;
  update(lr);
  return true;
}

void Optimizer::update(double lr) {
  RECORD_USER_SCOPE("cp2::optimizer_update");  // one line in cp2 bench --profile (compute/op_profile.h)
  torch::NoGradGuard ng;
  ++steps_;
  if (opt_.name == "sgd") {
    sgd_step(lr);
    return;
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    auto& p = params_[i].second;
    if (!p.grad().defined()) continue;
    const auto& g = p.grad();
    // AdamW (decoupled weight decay), as torch.optim.AdamW.
    p.mul_(1 - lr * opt_.weight_decay);
    if (!buf1_[i].defined()) {
      buf1_[i] = torch::zeros_like(p);
      buf2_[i] = torch::zeros_like(p);
    }
    buf1_[i].mul_(opt_.beta1).add_(g, 1 - opt_.beta1);
    buf2_[i].mul_(opt_.beta2).addcmul_(g, g, 1 - opt_.beta2);
    const double bc1 = 1 - std::pow(opt_.beta1, static_cast<double>(steps_));
    const double bc2 = 1 - std::pow(opt_.beta2, static_cast<double>(steps_));
    auto denom = (buf2_[i].sqrt() / std::sqrt(bc2)).add_(opt_.eps);
    p.addcdiv_(buf1_[i], denom, -lr / bc1);
  }
}

NamedTensors Optimizer::state() const {
  NamedTensors out;
  const bool sgd = opt_.name == "sgd";
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!buf1_[i].defined()) continue;
    out.emplace_back((sgd ? "momentum_buffer." : "exp_avg.") + params_[i].first, buf1_[i]);
    if (!sgd) out.emplace_back("exp_avg_sq." + params_[i].first, buf2_[i]);
  }
  out.emplace_back("step", torch::tensor(steps_, torch::kLong));
  if (scaling_) {
    out.emplace_back("loss_scale", torch::tensor(scale_, torch::kDouble));
    out.emplace_back("loss_scale_growth", torch::tensor(growth_, torch::kLong));
    out.emplace_back("loss_scale_skipped", torch::tensor(skipped_, torch::kLong));
  }
  return out;
}

void Optimizer::load_state(const NamedTensors& s, const std::string& source) {
  std::map<std::string, at::Tensor> m(s.begin(), s.end());
  auto step = m.find("step");
  if (step == m.end()) throw Error(source + ": optimizer state lacks 'step'");
  steps_ = step->second.item<int64_t>();
  if (auto sc = m.find("loss_scale"); scaling_ && sc != m.end()) {
    scale_ = sc->second.item<double>();
    auto gr = m.find("loss_scale_growth"), sk = m.find("loss_scale_skipped");
    if (gr == m.end() || sk == m.end() || !(scale_ > 0) || !std::isfinite(scale_))
      throw Error(source + ": optimizer state's loss scale is incomplete or not positive (" + num_str(scale_) + ")");
    growth_ = gr->second.item<int64_t>();
    skipped_ = sk->second.item<int64_t>();
  }
  const bool sgd = opt_.name == "sgd";
  torch::NoGradGuard ng;
  size_t found = 0;
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& [name, p] = params_[i];
    auto fetch = [&](const std::string& key) -> at::Tensor {
      auto it = m.find(key);
      if (it == m.end()) return {};
      if (it->second.sizes() != p.sizes())
        throw Error(source + ": optimizer buffer '" + key + "' expected " + shape_str(p.sizes().vec()) + ", found " +
                    shape_str(it->second.sizes().vec()));
      return it->second.to(p.device(), p.scalar_type()).clone();
    };
    buf1_[i] = fetch((sgd ? "momentum_buffer." : "exp_avg.") + name);
    if (!sgd) {
      buf2_[i] = fetch("exp_avg_sq." + name);
      if (buf1_[i].defined() != buf2_[i].defined())
        throw Error(source + ": optimizer state of '" + name + "' is incomplete");
    }
    found += buf1_[i].defined();
  }
  if (steps_ > 0 && found == 0 && opt_.momentum != 0)
    throw Error(source + ": optimizer state holds no " + opt_.name + " buffer for this model's parameters (" +
                std::to_string(s.size()) + " entries; saved by another optimizer or model?)");
}

void backward(Optimizer& opt, const at::Tensor& loss, dist::GradientReducer* reducer) {
  opt.zero_grad();
  if (reducer) reducer->prepare();
  opt.scaled(loss).backward();
  if (reducer) reducer->finish();
}

std::vector<double> read_numbers(const at::Tensor& values, int64_t count, const std::string& who,
                                 const std::string& source) {
  if (!values.defined() || values.numel() != count)
    throw Error(who + ": expected the " + std::to_string(count) + " numbers " + source + " keeps, found " +
                (values.defined() ? std::to_string(values.numel()) : std::string("none")));
  const auto v = values.to(torch::kCPU, torch::kDouble).contiguous();
  const double* d = v.data_ptr<double>();
  return {d, d + count};
}

bool step_if_finite(Optimizer& opt, bool finite, double lr) {
  if (!finite) {
    if (opt.loss_scaling()) opt.skip_step();
    return false;
  }
  return opt.step(lr);
}

}  // namespace cp2::train
