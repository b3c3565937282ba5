// cp2 pretrain: CP² (or Table 6 variants, or MoCo v2) pretraining on an image folder.
#include <cstdio>
#include <string>
#include <vector>

#include "commands.h"
#include "cp2/common.h"
#include "cp2/pretrain/trainer.h"
#include "cp2/train/run.h"

namespace cp2::app {

namespace {

struct PretrainArgs {
  std::string config, resume, dump_batch;
  std::vector<std::string> sets;
  // Shortcuts for the most used keys (empty = not given).
  std::string data, out, init, init_preset, mode, arch, size, batch, epochs, iters, queue, workers, device, seed, lr;
  int64_t max_steps = 0;
  bool print_config = false, keys = false, quiet = false;
};

int run_pretrain_cmd(const PretrainArgs& a) {
  pretrain::PretrainConfig cfg;
  if (a.keys) {
    std::printf("config keys (YAML sections or --set section.key=value), with defaults:\n%s",
                cfg.fields().describe().c_str());
    return 0;
  }
  pretrain::ConfigSources src;
  src.file = a.config;
  std::string resume_ckpt;
  if (!a.resume.empty()) {
    resume_ckpt = train::resolve_checkpoint(a.resume);
    if (a.config.empty()) {
      src.stored_config = pretrain::checkpoint_config(resume_ckpt);
      src.stored_origin = resume_ckpt + " (stored config)";
    }
  }
  const std::pair<const char*, const std::string*> shortcuts[] = {
      {"data.root", &a.data},          {"train.out", &a.out},         {"train.init", &a.init},
      {"train.init_preset", &a.init_preset}, {"model.mode", &a.mode}, {"model.arch", &a.arch},
      {"view.size", &a.size},          {"train.batch", &a.batch},     {"train.epochs", &a.epochs},
      {"train.iters_per_epoch", &a.iters}, {"model.queue", &a.queue}, {"data.workers", &a.workers},
      {"train.device", &a.device},     {"train.seed", &a.seed},       {"optim.lr", &a.lr}};
  for (auto& [key, val] : shortcuts)
    if (!val->empty()) src.flags.emplace_back(key, *val);
  src.sets = a.sets;
  auto yaml = pretrain::resolve_config(cfg, src);
  if (a.print_config) {
    std::printf("%s", yaml.c_str());
    return 0;
  }
  pretrain::RunControl rc;
  rc.config_text = yaml;
  rc.resume = resume_ckpt;
  rc.dump_batch = a.dump_batch;
  rc.max_steps = a.max_steps;
  rc.progress = !a.quiet;
  auto s = pretrain::run_pretrain(cfg, rc);
  if (!a.dump_batch.empty()) return 0;
  std::printf("%s after step %lld: %lld steps in %.1f s (%.2f img/s)%s\n", s.finished ? "finished" : "stopped",
              static_cast<long long>(s.last_step), static_cast<long long>(s.last_step - s.first_step), s.seconds,
              s.images_per_s, s.skipped_images ? (", " + std::to_string(s.skipped_images) + " unreadable image reads skipped").c_str() : "");
  if (!s.losses.empty())
    std::printf("loss: first %.4f, last %.4f\n", s.losses.front(), s.losses.back());
  std::printf("checkpoint: %s\nlog: %s/log.jsonl\n", s.last_checkpoint.c_str(), cfg.train.out.c_str());
  return 0;
}

}  // namespace

Command register_pretrain(CLI::App& app) {
  auto a = std::make_shared<PretrainArgs>();
  auto* c = app.add_subcommand("pretrain", "CP² pretraining (Table 6 modes, MoCo v2) with Quick Tuning and exact resume");
  c->add_option("--config", a->config, "YAML config (see configs/); keys: --config-keys");
  c->add_option("--set", a->sets, "override any key: --set train.epochs=2 (repeatable)");
  c->add_option("--data", a->data, "image folder (data.root)");
  c->add_option("--out", a->out, "run folder (train.out)");
  c->add_option("--init", a->init, "Quick Tuning: backbone checkpoint (train.init)");
  c->add_option("--init-preset", a->init_preset, "key layout of --init: moco (default), torchvision, cp2, mmseg, auto");
  c->add_option("--mode", a->mode, "cp2, instance-only, dense-only, no-copy-paste, moco (model.mode)");
  c->add_option("--arch", a->arch, "ResNet depth (model.arch)");
  c->add_option("--size", a->size, "view size (view.size)");
  c->add_option("--batch", a->batch, "batch size (train.batch)");
  c->add_option("--epochs", a->epochs, "epochs (train.epochs)");
  c->add_option("--iters-per-epoch", a->iters, "cap on steps per epoch (train.iters_per_epoch)");
  c->add_option("--queue", a->queue, "queue length K (model.queue)");
  c->add_option("--workers", a->workers, "loader threads (data.workers)");
  c->add_option("--device", a->device, "cpu, cuda, cuda:N (train.device)");
  c->add_option("--seed", a->seed, "seed (train.seed)");
  c->add_option("--lr", a->lr, "learning rate at batch 256 (optim.lr)");
  c->add_option("--resume", a->resume, "checkpoint file or run folder to continue (its config unless --config)");
  c->add_option("--dump-batch", a->dump_batch, "write the first batch (cp2 loss --batch format) and stop");
  c->add_option("--max-steps", a->max_steps, "stop after this global step, with a checkpoint");
  c->add_flag("--print-config", a->print_config, "print the resolved config and stop");
  c->add_flag("--config-keys", a->keys, "list every config key with its default and stop");
  c->add_flag("--quiet", a->quiet, "no progress output");
  return {c, [a] { return run_pretrain_cmd(*a); }};
}

}  // namespace cp2::app
