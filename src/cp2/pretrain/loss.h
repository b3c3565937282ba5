// CP² losses (SPEC §3), as the authors compute them, on L2-normalised dense features.
#pragma once
#include <ATen/core/Tensor.h>

namespace cp2::pretrain {

// Image-resolution masks (N x H x W, 1 = foreground) sampled at the centres of the
// stride x stride feature cells: the authors' mask[:, s/2::s, s/2::s], generalised to
// any input size by taking exactly h x w centres (clamped to the last row/column).
at::Tensor feature_mask(const at::Tensor& mask, int64_t stride, int64_t h, int64_t w);

struct LossParts {
  at::Tensor loss_ins, loss_dense, total;  // scalars; undefined parts count as 0 in total
  at::Tensor k_ins;                        // N x D instance keys to enqueue (no grad)
  double acc1 = 0, acc5 = 0;               // instance top-1 / top-5 (%)
  double acc_dense = 0;                    // % of images whose arg-max dense logit is a positive pair
  // What a random arg-max would score: the batch's mean share of positive (x, y) pairs
  // (%), the dense accuracy's chance level (instance top-1's is 100 / (K + 1)).
  double acc_dense_chance = 0;
  // The task the dense loss itself sets (its softmax runs over query pixels for each
  // foreground key pixel): % of foreground key pixels whose most similar query pixel is
  // foreground, and its chance level (the query's foreground share). acc_dense above, the
  // authors' logged number, also compares background-background pairs, which no loss term
  // sees, so it can fall while the dense loss learns (docs/results.md).
  double acc_dense_match = 0, acc_dense_match_chance = 0;
  // The three losses as numbers (0 for a part the mode leaves out), read back with the
  // accuracies in one device sync; what the loop logs (averaged over ranks when W > 1).
  double total_value = 0, ins_value = 0, dense_value = 0;
  // Those numbers on the model's device before the read (kDouble; read() fills the doubles
  // above from them), and the batch size they are counted over. A step that must not wait
  // for the device (a CUDA graph's capture) reads them later.
  at::Tensor values;
  int64_t batch = 0;
  void read();  // one device-to-host transfer of `values` into the logged doubles
  // Drops the losses' autograd graph once backward has run. A graph kept alive keeps the
  // parameters' gradient-accumulation nodes, which remember the stream they were made on;
  // a CUDA graph's capture on another stream then fails ("operation would make the legacy
  // stream depend on a capturing blocking stream", PyTorch 2.x's AccumulateGrad warning).
  void detach();
};

struct LossOptions {
  double temperature = 0.2;  // instance logits only; the authors' dense logits have none
  double dense_weight = 0.2;
  // Opt-in deviation, 0 = none as in the authors' code: dense logits divided by it. At
  // 0.2 the dense loss falls ~15x faster at CPU scale, but the built-in recipe does not
  // need it: without one the dense task learns (acc_dense_match; docs/results.md).
  double dense_temperature = 0;
  bool use_instance = true;
  bool use_dense = true;
};

// q, k: N x D x P (each pixel L2-normalised over D); mq, mk: N x P masks (float 0/1);
// queue: D x K normalised keys. k, mk and queue carry no gradient.
// read = false leaves the logged doubles at 0 and `values` unread (no device sync).
LossParts cp2_loss(const at::Tensor& q, const at::Tensor& k, const at::Tensor& mq, const at::Tensor& mk,
                   const at::Tensor& queue, const LossOptions& opt, bool read = true);

}  // namespace cp2::pretrain
