// CP²'s pretraining model (SPEC §2): query and key encoders (segmentors with the 128-d
// projection), momentum update of the key encoder, a queue of K instance keys.
#pragma once
#include <memory>
#include <string>

#include "cp2/models/segmentor.h"
#include "cp2/pretrain/loss.h"
#include "cp2/pretrain/modes.h"

namespace cp2::dist {
class Comm;
}

namespace cp2::pretrain {

// What CP²'s model needs of an encoder, query (trained) or key (momentum-averaged): one
// interface over the two kinds a mode uses (the mode table's moco_encoder). Each is a
// module registered as encoder_q / encoder_k under the Python names of its kind.
class ContrastEncoder {
 public:
  virtual ~ContrastEncoder() = default;
  // N x D x h x w embeddings in fp32, each pixel L2-normalised over D (MoCo v2: 1 x 1).
  virtual torch::Tensor embed(const torch::Tensor& x) = 0;
  // Compute in these numerics from now on (bf16 autocast, channels-last); embed() stays fp32.
  virtual void set_numerics(const compute::Numerics& n) = 0;
  virtual torch::nn::Module& module() = 0;
};

// CP²'s encoder (SPEC §2): the segmentor with the projection head, `backbone.*` +
// `decode_head.*` as in the authors' mmsegmentation model.
class SegmentorEncoderImpl : public models::SegmentorImpl, public ContrastEncoder {
 public:
  explicit SegmentorEncoderImpl(models::SegmentorOptions o) : models::SegmentorImpl(std::move(o)) {}
  torch::Tensor embed(const torch::Tensor& x) override;  // the projection, normalised per pixel
  void set_numerics(const compute::Numerics& n) override { models::SegmentorImpl::set_numerics(n); }
  torch::nn::Module& module() override { return *this; }
};
TORCH_MODULE(SegmentorEncoder);

// MoCo v2's encoder: a torchvision ResNet (no dilation) + global average pooling + the
// 2-layer MLP head `fc.0` (C -> C), ReLU, `fc.2` (C -> dim), so its keys are the MoCo
// release's (`encoder_q.conv1.weight`, ..., `encoder_q.fc.2.bias`).
class MocoEncoderImpl : public models::ResNetImpl, public ContrastEncoder {
 public:
  MocoEncoderImpl(int depth, int64_t dim);
  torch::Tensor mlp_embed(const torch::Tensor& x);       // N x dim, not normalised (MoCo's q/k)
  torch::Tensor embed(const torch::Tensor& x) override;  // normalised, N x dim x 1 x 1
  void set_numerics(const compute::Numerics& n) override;
  torch::nn::Module& module() override { return *this; }
  torch::nn::Sequential fc{nullptr};

 private:
  compute::Numerics num_;
};
TORCH_MODULE(MocoEncoder);

struct CP2Options {
  models::SegmentorOptions encoder;  // projection head; no classifier
  int64_t queue_size = 65536;
  double momentum = 0.999;
  LossOptions loss;
  Mode mode = Mode::Cp2;
  // Key-encoder BN over groups of the batch (MoCo's single-process stand-in for
  // shuffle-BN); 1 = plain BN. Multi-process shuffle-BN plugs in at the same place.
  int key_bn_splits = 1;
  // With key_bn_splits > 1: shuffle the key batch (a permutation from torch's generator)
  // before the split forward and unshuffle after, as MoCo's shuffle-BN does across GPUs.
  bool key_bn_shuffle = false;
  // Query-encoder BN over groups of the batch: the per-process statistics of an N-process
  // run reproduced in one process (the multi-process equivalence check uses it).
  int query_bn_splits = 1;
  void validate() const;
};

class CP2ModelImpl : public torch::nn::Module {
 public:
  explicit CP2ModelImpl(CP2Options opt);
  // θk ← θq and the key BN statistics from the query's (MoCo's initialisation; call
  // after re-initialising or loading the query encoder).
  void sync_key_encoder();
  // θk ← m·θk + (1 − m)·θq over parameters (MoCo; buffers keep their own statistics).
  void momentum_update();
  // One training step's forward: momentum update, both encoders, losses. Masks are
  // N x H x W at image resolution (ignored in no-copy-paste mode: all ones). read = false:
  // the logged numbers stay on the device (cp2_loss), so nothing waits for it.
  LossParts forward_step(const torch::Tensor& im_q, const torch::Tensor& im_k, torch::Tensor mask_q,
                         torch::Tensor mask_k, bool read = true);
  // Writes keys (N x D) circularly into the queue after the loss is formed; in a
  // multi-process run every rank's keys, gathered in rank order (SPEC §2), so every
  // rank's queue stays identical.
  void enqueue(const torch::Tensor& keys);
  // Multi-process: shuffle-BN for the key encoder across ranks and gathered enqueues.
  void set_comm(std::shared_ptr<dist::Comm> comm) { comm_ = std::move(comm); }
  const std::shared_ptr<dist::Comm>& comm() const { return comm_; }
  const CP2Options& options() const { return opt_; }
  // Both encoders compute in these numerics (bf16 autocast, channels-last); features,
  // losses, queue and momentum update stay fp32 (the queue's logits by oneDNN's sgemm under
  // the fast algorithms, compute/matmul.h).
  void set_numerics(const compute::Numerics& n);
  // The query encoder (the trained one) and the key encoder, registered as `encoder_q` /
  // `encoder_k`: segmentor encoders, or MoCo v2's in moco mode.
  ContrastEncoder& key_encoder() { return *k_; }
  torch::nn::Module& q_module() { return q_->module(); }
  torch::nn::Module& k_module() { return k_->module(); }

  torch::Tensor queue, queue_ptr;

 private:
  template <class Encoder>
  void add_encoders(Encoder q, Encoder k);
  torch::Tensor embed(bool query, const torch::Tensor& x);  // N x D x P, normalised
  torch::Tensor key_features(const torch::Tensor& im_k);
  torch::Tensor query_features(const torch::Tensor& im_q, int64_t& h, int64_t& w);
  CP2Options opt_;
  std::shared_ptr<dist::Comm> comm_;
  bool fast_loss_ = false;  // the numerics' fast algorithms: the queue's logits by compute::mm
  std::shared_ptr<ContrastEncoder> q_, k_;
};
TORCH_MODULE(CP2Model);

}  // namespace cp2::pretrain
