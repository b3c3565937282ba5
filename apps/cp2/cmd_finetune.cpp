// cp2 finetune: DeepLabV3 finetuning (mmsegmentation's recipe) from a pretrained checkpoint.
#include <cstdio>
#include <string>
#include <vector>

#include "commands.h"
#include "cp2/common.h"
#include "cp2/seg/finetune.h"
#include "cp2/train/run.h"

namespace cp2::app {

namespace {

struct FinetuneArgs {
  std::string config, resume;
  std::vector<std::string> sets;
  std::string data, type, out, init, init_preset, arch, crop, batch, iters, lr, eval_every, workers, device, seed;
  int64_t max_iters = 0;
  bool print_config = false, keys = false, quiet = false;
};

int run(const FinetuneArgs& a) {
  seg::FinetuneConfig cfg;
  if (a.keys) {
    std::printf("config keys (YAML sections or --set section.key=value), with defaults:\n%s",
                cfg.fields().describe().c_str());
    return 0;
  }
  config::Sources src;
  src.file = a.config;
  std::string resume_ckpt;
  if (!a.resume.empty()) {
    resume_ckpt = train::resolve_checkpoint(a.resume);
    if (a.config.empty()) {
      src.stored_config = seg::finetune_checkpoint_config(resume_ckpt);
      src.stored_origin = resume_ckpt + " (stored config)";
    }
  }
  const std::pair<const char*, const std::string*> shortcuts[] = {
      {"data.root", &a.data},      {"data.type", &a.type},         {"train.out", &a.out},
      {"train.init", &a.init},     {"train.init_preset", &a.init_preset}, {"model.arch", &a.arch},
      {"pipeline.crop_h", &a.crop}, {"pipeline.crop_w", &a.crop},  {"train.batch", &a.batch},
      {"train.iters", &a.iters},   {"optim.lr", &a.lr},            {"train.eval_every", &a.eval_every},
      {"data.workers", &a.workers}, {"train.device", &a.device},   {"train.seed", &a.seed}};
  for (auto& [key, val] : shortcuts)
    if (!val->empty()) src.flags.emplace_back(key, *val);
  src.sets = a.sets;
  auto yaml = seg::resolve_config(cfg, src);
  if (a.print_config) {
    std::printf("%s", yaml.c_str());
    return 0;
  }
  seg::FinetuneControl fc;
  fc.config_text = yaml;
  fc.resume = resume_ckpt;
  fc.max_iters = a.max_iters;
  fc.progress = !a.quiet;
  auto s = seg::run_finetune(cfg, fc);
  std::printf("%s after iteration %lld: %lld iterations in %.1f s (%.2f img/s)\n", s.finished ? "finished" : "stopped",
              static_cast<long long>(s.last_iter), static_cast<long long>(s.last_iter - s.first_iter), s.seconds,
              s.images_per_s);
  if (!s.losses.empty()) std::printf("loss: first %.4f, last %.4f\n", s.losses.front(), s.losses.back());
  if (s.best_miou >= 0)
    std::printf("best mIoU %.2f at iteration %lld: %s\n", 100 * s.best_miou, static_cast<long long>(s.best_iter),
                s.best_checkpoint.c_str());
  std::printf("checkpoint: %s\nlog: %s/log.jsonl\n", s.last_checkpoint.c_str(), cfg.train.out.c_str());
  return 0;
}

}  // namespace

Command register_finetune(CLI::App& app) {
  auto a = std::make_shared<FinetuneArgs>();
  auto* c = app.add_subcommand("finetune", "DeepLabV3 finetuning (mmsegmentation recipe) with evaluation and exact resume");
  c->add_option("--config", a->config, "YAML config (configs/voc_r50_512.yaml ...); keys: --config-keys");
  c->add_option("--set", a->sets, "override any key: --set train.iters=1000 (repeatable)");
  c->add_option("--data", a->data, "dataset folder (data.root)");
  c->add_option("--type", a->type, "voc, cityscapes, ade20k, list (data.type)");
  c->add_option("--out", a->out, "run folder (train.out)");
  c->add_option("--init", a->init, "pretrained checkpoint: cp2/CP² authors' pretraining, MoCo v2, torchvision, mmseg (train.init)");
  c->add_option("--init-preset", a->init_preset, "key layout of --init: auto (default), cp2, moco, torchvision, mmseg");
  c->add_option("--arch", a->arch, "ResNet depth (model.arch)");
  c->add_option("--crop", a->crop, "square crop size (pipeline.crop_h/w)");
  c->add_option("--batch", a->batch, "batch size (train.batch)");
  c->add_option("--iters", a->iters, "iterations (train.iters)");
  c->add_option("--lr", a->lr, "base learning rate (optim.lr)");
  c->add_option("--eval-every", a->eval_every, "iterations between evaluations (train.eval_every)");
  c->add_option("--workers", a->workers, "loader threads (data.workers)");
  c->add_option("--device", a->device, "cpu, cuda, cuda:N (train.device)");
  c->add_option("--seed", a->seed, "seed (train.seed)");
  c->add_option("--resume", a->resume, "checkpoint file or run folder to continue (its config unless --config)");
  c->add_option("--max-iters", a->max_iters, "stop after this iteration, with a checkpoint");
  c->add_flag("--print-config", a->print_config, "print the resolved config and stop");
  c->add_flag("--config-keys", a->keys, "list every config key with its default and stop");
  c->add_flag("--quiet", a->quiet, "no progress output");
  return {c, [a] { return run(*a); }};
}

}  // namespace cp2::app
