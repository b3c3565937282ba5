#include "cp2/pretrain/loss.h"

#include <torch/torch.h>

#include "cp2/common.h"
#include "cp2/compute/matmul.h"
#include "cp2/train/optim.h"

namespace cp2::pretrain {

namespace F = torch::nn::functional;

at::Tensor feature_mask(const at::Tensor& mask, int64_t stride, int64_t h, int64_t w) {
  if (mask.dim() != 3)
    throw Error("mask: expected N x H x W, found " + shape_str(mask.sizes().vec()));
  auto centres = [&](int64_t n, int64_t size) {
    auto idx = torch::arange(n, torch::TensorOptions().dtype(torch::kLong).device(mask.device())) * stride + stride / 2;
    return idx.clamp_max(size - 1);
  };
  return mask.index_select(1, centres(h, mask.size(1))).index_select(2, centres(w, mask.size(2)));
}

namespace {
// The logged numbers' places in LossParts::values.
enum { kTotal, kIns, kDense, kTop1, kTop5, kDenseHits, kChance, kMatch, kMatchChance, kCount };

// Masked sum over pixels, then L2 normalisation (SPEC §3; the normalisation makes sum
// and mean pooling identical).
at::Tensor masked_pool(const at::Tensor& f, const at::Tensor& m) {
  return F::normalize((f * m.unsqueeze(1)).sum(2), F::NormalizeFuncOptions().dim(1));
}
}  // namespace

LossParts cp2_loss(const at::Tensor& q, const at::Tensor& k, const at::Tensor& mq, const at::Tensor& mk,
                   const at::Tensor& queue, const LossOptions& opt, bool read) {
  LossParts out;
  const int64_t n = q.size(0);
  out.total = torch::zeros({}, q.options());
  // The logged numbers, read back in one transfer at the end instead of one .item() each
  // (on CUDA each waits for the whole queue): total, instance, dense losses, top-1 and
  // top-5 hits, dense hits, dense chance, dense-match share and its chance. Parts a mode
  // leaves out stay 0.
  std::vector<at::Tensor> nums(kCount, torch::zeros({}, q.options()));
  {
    torch::NoGradGuard ng;
    out.k_ins = masked_pool(k, mk);
  }
  if (opt.use_instance) {
    auto q_ins = masked_pool(q, mq);
    auto l_pos = (q_ins * out.k_ins).sum(1, true);
    auto l_neg = compute::mm(q_ins, queue);  // oneDNN's sgemm under the fast algorithms
    auto logits = torch::cat({l_pos, l_neg}, 1) / opt.temperature;
    auto labels = torch::zeros({n}, torch::TensorOptions().dtype(torch::kLong).device(q.device()));
    out.loss_ins = F::cross_entropy(logits, labels);
    out.total = out.total + out.loss_ins;
    torch::NoGradGuard ng;
    auto top = std::get<1>(logits.topk(std::min<int64_t>(5, logits.size(1)), 1));
    nums[kIns] = out.loss_ins.detach();
    nums[kTop1] = (top.select(1, 0) == 0).sum();
    nums[kTop5] = (top == 0).any(1).sum();
  }
  if (opt.use_dense) {
    // logits[n, x, y] = q[n,:,x] . k[n,:,y]; log-softmax over the query-pixel axis x (dim 1),
    // positives where both pixels are foreground (the authors' formulation).
    auto logits = torch::bmm(q.transpose(1, 2), k);
    if (opt.dense_temperature > 0) logits = logits / opt.dense_temperature;
    auto logp = torch::log_softmax(logits, 1);
    auto pos = mq.unsqueeze(2) * mk.unsqueeze(1);
    auto per_image = -(logp * pos).sum({1, 2}) / pos.sum({1, 2});
    out.loss_dense = per_image.mean();
    out.total = out.total + opt.dense_weight * out.loss_dense;
    torch::NoGradGuard ng;
    auto best = logits.flatten(1).argmax(1);
    auto hit = pos.flatten(1).gather(1, best.unsqueeze(1)).squeeze(1);
    nums[kDense] = out.loss_dense.detach();
    nums[kDenseHits] = (hit > 0).sum();
    nums[kChance] = (pos > 0).to(at::kFloat).flatten(1).mean(1).mean();
    // For each foreground key pixel y: is arg-max over x of logits[n, x, y] a foreground
    // query pixel? Chance: the query's foreground share, weighted like the hits (the
    // masks are 0/1, so they weight directly).
    const auto nearest = logits.argmax(1);  // N x P: the best query pixel of each key pixel
    const auto keys = mk.sum().clamp_min(1);
    nums[kMatch] = (mq.gather(1, nearest) * mk).sum() / keys;
    nums[kMatchChance] = (mq.mean(1) * mk.sum(1)).sum() / keys;
  }
  nums[kTotal] = out.total.detach();
  torch::NoGradGuard ng;
  for (auto& t : nums) t = t.to(torch::kDouble);
  out.values = torch::stack(nums);
  out.batch = n;
  if (read) out.read();
  return out;
}

void LossParts::detach() {
  for (auto* t : {&loss_ins, &loss_dense, &total})
    if (t->defined()) *t = t->detach();
}

void LossParts::read() {
  const auto d = train::read_numbers(values, kCount, "LossParts::read", "cp2_loss");
  if (batch < 1) throw Error("LossParts::read: expected the batch size the numbers count, found " + std::to_string(batch));
  const double n = static_cast<double>(batch);
  total_value = d[kTotal];
  ins_value = d[kIns];
  dense_value = d[kDense];
  acc1 = d[kTop1] * 100.0 / n;
  acc5 = d[kTop5] * 100.0 / n;
  acc_dense = d[kDenseHits] * 100.0 / n;
  acc_dense_chance = d[kChance] * 100.0;
  acc_dense_match = d[kMatch] * 100.0;
  acc_dense_match_chance = d[kMatchChance] * 100.0;
}

}  // namespace cp2::pretrain
