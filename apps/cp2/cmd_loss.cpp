// cp2 loss: exactly one training step's forward on a saved batch, for debugging and parity.
#include <cstdio>
#include <string>
#include <vector>

#include "commands.h"
#include "cp2/common.h"
#include "cp2/pretrain/config.h"
#include "cp2/pretrain/modes.h"
#include "cp2/io/keymap.h"
#include "cp2/pretrain/state_io.h"
#include "cp2/train/state.h"

namespace cp2::app {

namespace {

struct LossArgs {
  std::string checkpoint, batch, config;
  std::vector<std::string> sets;
  // Shortcut flags; applied over --config when given.
  std::string mode, arch, output_stride, key_bn_splits, queue, momentum, temperature, dense_weight;
};

int run_loss(const LossArgs& a) {
  // The model is described as for `cp2 pretrain`: its config keys (defaults, --config,
  // shortcut flags, --set); K comes from the checkpoint's queue unless given.
  auto ck = io::load_checkpoint(a.checkpoint);  // read once: these files reach 0.5 GB
  config::Sources src;
  src.file = a.config;
  if (a.config.empty() && train::kind_of(ck.root) == "pretrain") {  // a cp2 checkpoint describes its own model
    src.stored_config = train::stored_config(ck.root, train::pretrain_kind(), a.checkpoint);
    src.stored_origin = a.checkpoint + " (stored config)";
  }
  const std::pair<const char*, const std::string*> shortcuts[] = {
      {"model.mode", &a.mode},           {"model.arch", &a.arch},         {"model.output_stride", &a.output_stride},
      {"model.key_bn_splits", &a.key_bn_splits}, {"model.queue", &a.queue}, {"model.momentum", &a.momentum},
      {"loss.temperature", &a.temperature}, {"loss.dense_weight", &a.dense_weight}};
  for (auto& [key, val] : shortcuts)
    if (!val->empty()) src.flags.emplace_back(key, *val);
  src.sets = a.sets;
  pretrain::PretrainConfig cfg;
  auto f = cfg.fields();
  config::apply_sources(f, src);
  config::check_naming_origin(f, [&] { cfg.validate_model(); });
  std::vector<std::string> dropped;
  auto state = pretrain::drop_classifier(pretrain::strip_module(io::find_state_dict(ck)), &dropped);
  const bool queue_given = src.names("model.queue");
  auto o = cfg.model_options();
  if (!queue_given) {
    const int64_t k = pretrain::stored_queue_size(state);
    if (k <= 0) throw Error(a.checkpoint + ": no 'queue' tensor; give --queue K");
    o.queue_size = k;
  }
  pretrain::CP2Model model(o);
  auto rep = pretrain::load_pretrain_state(*model, state, a.checkpoint, /*strict=*/true);
  std::printf("%s\n", rep.str().c_str());
  if (!dropped.empty())
    std::printf("dropped %zu tensors of the authors' untrained 21-class classifier (first: %s)\n", dropped.size(),
                dropped[0].c_str());
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
  c->add_option("--config", a->config, "pretraining YAML config describing the model (default: a cp2 checkpoint's stored config)");
  c->add_option("--set", a->sets, "override a config key: --set model.arch=18 (repeatable)");
  c->add_option("--arch", a->arch, "ResNet depth, model.arch (default 50)")->type_name("INT");
  c->add_option("--output-stride", a->output_stride, "model.output_stride (default 16)")->type_name("INT");
  c->add_option("--queue", a->queue, "queue length K (default: the checkpoint's)")->type_name("INT");
  c->add_option("--momentum", a->momentum, "key-encoder momentum, model.momentum (default 0.999)")->type_name("FLOAT");
  c->add_option("--temperature", a->temperature, "instance-loss temperature, loss.temperature (default 0.2)")->type_name("FLOAT");
  c->add_option("--dense-weight", a->dense_weight, "loss.dense_weight (default 0.2)")->type_name("FLOAT");
  c->add_option("--mode", a->mode, "model.mode: " + join(pretrain::mode_names()) + " (default cp2)");
  c->add_option("--key-bn-splits", a->key_bn_splits, "model.key_bn_splits (default 1 = plain BN)")->type_name("INT");
  return {c, [a] { return run_loss(*a); }};
}

}  // namespace cp2::app
