// cp2 loss: exactly one training step's forward on a saved batch, for debugging and parity.
#include <cstdio>
#include <string>

#include "commands.h"
#include "cp2/common.h"
#include "cp2/pretrain/state_io.h"

namespace cp2::app {

namespace {

struct LossArgs {
  std::string checkpoint, batch, mode = "cp2";
  int depth = 50, output_stride = 16, key_bn_splits = 1;
  int64_t queue = 0;
  double momentum = 0.999, temperature = 0.2, dense_weight = 0.2;
};

int run_loss(const LossArgs& a) {
  pretrain::CP2Options o;
  o.encoder.backbone.depth = a.depth;
  o.encoder.backbone.output_stride = a.output_stride;
  auto state = pretrain::read_pretrain_state(a.checkpoint);  // read once: these files reach 0.5 GB
  o.queue_size = a.queue > 0 ? a.queue : pretrain::stored_queue_size(state);
  if (o.queue_size <= 0) throw Error(a.checkpoint + ": no 'queue' tensor; give --queue K");
  o.momentum = a.momentum;
  o.loss.temperature = a.temperature;
  o.loss.dense_weight = a.dense_weight;
  o.mode = pretrain::parse_mode(a.mode);
  o.key_bn_splits = a.key_bn_splits;
  pretrain::CP2Model model(o);
  auto rep = pretrain::load_pretrain_state(*model, state, a.checkpoint, /*strict=*/true);
  std::printf("%s\n", rep.str().c_str());
  auto b = pretrain::load_batch(a.batch);
  model->train();  // BN in training mode, as in a real step
  auto r = model->forward_step(b.im_q, b.im_k, b.mask_q, b.mask_k);
  auto val = [](const torch::Tensor& t) { return t.defined() ? t.item<double>() : 0.0; };
  std::printf("loss_ins %.8f\nloss_dense %.8f\ntotal %.8f\nacc1 %.2f\nacc5 %.2f\nacc_dense %.2f\n", val(r.loss_ins),
              val(r.loss_dense), val(r.total), r.acc1, r.acc5, r.acc_dense);
  return 0;
}

}  // namespace

Command register_loss(CLI::App& app) {
  auto a = std::make_shared<LossArgs>();
  auto* c = app.add_subcommand("loss", "Print the losses and accuracies of one training step's forward on a saved batch");
  c->add_option("--checkpoint", a->checkpoint, "pretraining state: cp2 checkpoint or the authors' keys (encoder_q/k, queue)")->required();
  c->add_option("--batch", a->batch, "batch file with im_q, im_k, mask_q, mask_k")->required();
  c->add_option("--arch", a->depth, "ResNet depth (18/34/50/101)")->capture_default_str();
  c->add_option("--output-stride", a->output_stride, "output stride (8/16/32)")->capture_default_str();
  c->add_option("--queue", a->queue, "queue length K (default: the checkpoint's)");
  c->add_option("--momentum", a->momentum, "key-encoder momentum m")->capture_default_str();
  c->add_option("--temperature", a->temperature, "instance-loss temperature T")->capture_default_str();
  c->add_option("--dense-weight", a->dense_weight, "weight of the dense loss")->capture_default_str();
  c->add_option("--mode", a->mode, "cp2, instance-only, dense-only, no-copy-paste")->capture_default_str();
  c->add_option("--key-bn-splits", a->key_bn_splits, "key-encoder split-BN groups (1 = plain BN)")->capture_default_str();
  return {c, [a] { return run_loss(*a); }};
}

}  // namespace cp2::app
