#include "cp2/pretrain/model.h"

#include <ATen/record_function.h>
#include <torch/torch.h>

#include "cp2/common.h"
#include "cp2/compute/winograd.h"
#include "cp2/dist/comm.h"
#include "cp2/train/one_pass.h"
#include "cp2/train/sgd_fma.h"

namespace cp2::pretrain {

namespace F = torch::nn::functional;

MocoEncoderImpl::MocoEncoderImpl(int depth, int64_t dim)
    : models::ResNetImpl([depth] {
        models::ResNetOptions o;
        o.depth = depth;
        o.output_stride = 32;  // MoCo's plain torchvision ResNet
        return o;
      }()) {
  const int64_t c = options().out_channels();
  fc = register_module("fc", torch::nn::Sequential(torch::nn::Linear(c, c), torch::nn::ReLU(),
                                                   torch::nn::Linear(c, dim)));
}

torch::Tensor MocoEncoderImpl::mlp_embed(const torch::Tensor& x) {
  auto f = models::ResNetImpl::forward(x).back();
  return fc->forward(f.mean({2, 3}));
}

torch::Tensor MocoEncoderImpl::embed(const torch::Tensor& x) {
  torch::Tensor e;
  {
    compute::AutocastScope ac(num_, x.is_cuda());
    compute::WinogradScope wg(num_.winograd);
    e = mlp_embed(compute::in_layout(x, num_));
  }
  if (num_.amp()) e = e.to(torch::kFloat);
  return F::normalize(e, F::NormalizeFuncOptions().dim(1)).unsqueeze(2).unsqueeze(3);
}

void MocoEncoderImpl::set_numerics(const compute::Numerics& n) {
  num_ = n;
  if (n.channels_last) compute::to_channels_last(*this);
}

torch::Tensor SegmentorEncoderImpl::embed(const torch::Tensor& x) {
  return F::normalize(project(x), F::NormalizeFuncOptions().dim(1));
}

void CP2Options::validate() const {
  encoder.validate();
  if (encoder.head.proj_channels <= 0) throw Error("head.proj_channels: pretraining needs a projection (> 0)");
  if (queue_size <= 0) throw Error("queue_size: expected > 0, found " + std::to_string(queue_size));
  if (momentum < 0 || momentum > 1) throw Error("momentum: expected 0..1, found " + num_str(momentum));
  if (loss.temperature <= 0) throw Error("temperature: expected > 0, found " + num_str(loss.temperature));
  if (!(loss.dense_temperature >= 0))
    throw Error("dense_temperature: expected >= 0 (0 = none), found " + num_str(loss.dense_temperature));
  if (key_bn_splits < 1) throw Error("key_bn_splits: expected >= 1, found " + std::to_string(key_bn_splits));
  if (query_bn_splits < 1) throw Error("query_bn_splits: expected >= 1, found " + std::to_string(query_bn_splits));
}

template <class Encoder>
void CP2ModelImpl::add_encoders(Encoder q, Encoder k) {
  q_ = q.ptr(), k_ = k.ptr();
  register_module("encoder_q", q);
  register_module("encoder_k", k);
}

CP2ModelImpl::CP2ModelImpl(CP2Options opt) : opt_(std::move(opt)) {
  opt_.encoder.head.num_classes = 0;
  opt_.validate();
  const auto& mode = mode_spec(opt_.mode);
  opt_.loss.use_instance = opt_.loss.use_instance && mode.instance;
  opt_.loss.use_dense = opt_.loss.use_dense && mode.dense;
  if (mode.moco_encoder) {
    const auto depth = opt_.encoder.backbone.depth;
    const auto dim = opt_.encoder.head.proj_channels;
    add_encoders(MocoEncoder(depth, dim), MocoEncoder(depth, dim));
  } else {
    add_encoders(SegmentorEncoder(opt_.encoder), SegmentorEncoder(opt_.encoder));
  }
  for (auto& p : k_module().parameters()) p.set_requires_grad(false);
  sync_key_encoder();
  queue = register_buffer("queue", F::normalize(torch::randn({opt_.encoder.head.proj_channels, opt_.queue_size}),
                                                F::NormalizeFuncOptions().dim(0)));
  queue_ptr = register_buffer("queue_ptr", torch::zeros({1}, torch::kLong));
}

void CP2ModelImpl::sync_key_encoder() {
  torch::NoGradGuard ng;
  auto pq = q_module().parameters(), pk = k_module().parameters();
  for (size_t i = 0; i < pq.size(); ++i) pk[i].copy_(pq[i]);
  auto bq = q_module().buffers(), bk = k_module().buffers();
  for (size_t i = 0; i < bq.size(); ++i) bk[i].copy_(bq[i]);
}

namespace {

// k = k·m + q·alpha in one pass (train/sgd_fma.h: ATen's bits) where train::one_pass_fits;
// else false.
bool blend_one_pass(at::Tensor& k, const at::Tensor& q, float m, float alpha) {
  if (!train::one_pass_fits(k, {&q})) return false;
  float* pk = k.data_ptr<float>();
  const float* pq = q.data_ptr<float>();
  train::one_pass(k, [&](int64_t begin, int64_t end) { train::sgd_fma::blend(pk, pq, begin, end, m, alpha); });
  return true;
}

}  // namespace

void CP2ModelImpl::momentum_update() {
  RECORD_USER_SCOPE("cp2::momentum_update");  // in cp2 bench --profile
  torch::NoGradGuard ng;
  auto pq = q_module().parameters(), pk = k_module().parameters();
  // On a CPU, one pass over each parameter: ATen's two passes took 15-17 ms of an R18-ASPP@96
  // b32 step on a Xeon (2 %), the one 9-10 (docs/benchmarks.md). Elsewhere two multi-tensor
  // kernels over all parameters (on CUDA a few launches instead of two per tensor). Both are
  // mul_ then add_ per tensor, bit for bit.
  const auto m = static_cast<float>(opt_.momentum), alpha = static_cast<float>(1.0 - opt_.momentum);
  std::vector<at::Tensor> rest_k, rest_q;
  for (size_t i = 0; i < pk.size(); ++i)
    if (!blend_one_pass(pk[i], pq[i], m, alpha)) {
      rest_k.push_back(pk[i]);
      rest_q.push_back(pq[i]);
    }
  if (rest_k.empty()) return;
  at::_foreach_mul_(rest_k, opt_.momentum);
  at::_foreach_add_(rest_k, rest_q, 1.0 - opt_.momentum);
}

void CP2ModelImpl::set_numerics(const compute::Numerics& n) {
  q_->set_numerics(n);
  k_->set_numerics(n);
  fast_loss_ = n.winograd;
}

// MoCo v2's embedding is one "pixel" (N x D x 1), so the instance loss below is MoCo's.
torch::Tensor CP2ModelImpl::embed(bool query, const torch::Tensor& x) {
  return (query ? q_ : k_)->embed(x).flatten(2);
}

torch::Tensor CP2ModelImpl::key_features(const torch::Tensor& im_k) {
  const auto long_cpu = torch::TensorOptions().dtype(torch::kLong);
  if (comm_ && comm_->size() > 1) {
    // Shuffle-BN across processes (MoCo's _batch_shuffle_ddp): gather every rank's key
    // images, run a slice of a permutation drawn on rank 0, gather the keys, unshuffle.
    const int64_t b = im_k.size(0), W = comm_->size(), r = comm_->rank();
    auto all = comm_->all_gather(im_k);
    auto perm = torch::randperm(W * b, long_cpu);  // every rank draws: generators stay in step
    comm_->broadcast(perm, 0);
    auto mine = perm.narrow(0, r * b, b).to(im_k.device());
    auto k = comm_->all_gather(embed(false, all.index_select(0, mine)));
    auto inv = torch::argsort(perm).narrow(0, r * b, b).to(k.device());
    return k.index_select(0, inv);
  }
  if (opt_.key_bn_splits == 1) return embed(false, im_k);
  if (im_k.size(0) % opt_.key_bn_splits != 0)
    throw Error("key_bn_splits: batch " + std::to_string(im_k.size(0)) + " is not divisible by " +
                std::to_string(opt_.key_bn_splits));
  torch::Tensor perm, x = im_k;
  if (opt_.key_bn_shuffle) {
    perm = torch::randperm(im_k.size(0), long_cpu);
    x = im_k.index_select(0, perm.to(im_k.device()));
  }
  std::vector<torch::Tensor> parts;
  for (auto& chunk : x.chunk(opt_.key_bn_splits, 0)) parts.push_back(embed(false, chunk));
  auto k = torch::cat(parts, 0);
  return perm.defined() ? k.index_select(0, torch::argsort(perm).to(k.device())) : k;
}

// N x D x P query features; h, w: the feature map's size (1 x 1 in moco mode).
torch::Tensor CP2ModelImpl::query_features(const torch::Tensor& im_q, int64_t& h, int64_t& w) {
  auto one = [&](const torch::Tensor& x) {
    auto q4 = q_->embed(x);
    h = q4.size(2), w = q4.size(3);
    return q4.flatten(2);
  };
  if (opt_.query_bn_splits == 1) return one(im_q);
  if (im_q.size(0) % opt_.query_bn_splits != 0)
    throw Error("query_bn_splits: batch " + std::to_string(im_q.size(0)) + " is not divisible by " +
                std::to_string(opt_.query_bn_splits));
  std::vector<torch::Tensor> parts;
  for (auto& chunk : im_q.chunk(opt_.query_bn_splits, 0)) parts.push_back(one(chunk));
  return torch::cat(parts, 0);
}

LossParts CP2ModelImpl::forward_step(const torch::Tensor& im_q, const torch::Tensor& im_k, torch::Tensor mask_q,
                                     torch::Tensor mask_k, bool read) {
  if (im_q.dim() != 4 || im_q.sizes() != im_k.sizes())
    throw Error("batch: im_q and im_k must both be N x 3 x H x W, found " + shape_str(im_q.sizes().vec()) + " and " +
                shape_str(im_k.sizes().vec()));
  if (!mode_spec(opt_.mode).copy_paste) {
    mask_q = torch::ones({im_q.size(0), im_q.size(2), im_q.size(3)}, im_q.options());
    mask_k = mask_q;
  }
  for (auto* m : {&mask_q, &mask_k})
    if (m->dim() != 3 || m->size(0) != im_q.size(0) || m->size(1) != im_q.size(2) || m->size(2) != im_q.size(3))
      throw Error("batch: masks must be N x H x W = " +
                  shape_str({im_q.size(0), im_q.size(2), im_q.size(3)}) + ", found " + shape_str(m->sizes().vec()));
  torch::Tensor k, mq, mk;
  int64_t h = 1, w = 1;
  auto q = query_features(im_q, h, w);
  {
    torch::NoGradGuard ng;
    momentum_update();  // before the key forward, as MoCo/CP² do
    k = key_features(im_k);
  }
  // MoCo v2 (plain views, all-ones masks, 1 x 1 embedding): the mask is one 1 per image.
  const int64_t s = opt_.encoder.backbone.output_stride;
  mq = feature_mask(mask_q.to(q.device(), q.scalar_type()), s, h, w).flatten(1);
  mk = feature_mask(mask_k.to(q.device(), q.scalar_type()), s, h, w).flatten(1);
  compute::WinogradScope fast(fast_loss_);
  return cp2_loss(q, k, mq, mk, queue.detach(), opt_.loss, read);
}

void CP2ModelImpl::enqueue(const torch::Tensor& local_keys) {
  torch::NoGradGuard ng;
  const auto keys = comm_ && comm_->size() > 1 ? comm_->all_gather(local_keys.detach()) : local_keys;
  const int64_t n = keys.size(0), K = queue.size(1);
  // The pointer stays a tensor (no .item(): on a GPU that would wait for the whole step).
  auto idx = (torch::arange(n, torch::TensorOptions().dtype(torch::kLong).device(queue.device())) + queue_ptr) % K;
  queue.index_copy_(1, idx, keys.t().to(queue.dtype()));
  queue_ptr.add_(n).remainder_(K);
}

}  // namespace cp2::pretrain
