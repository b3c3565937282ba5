// cp2 finetune: DeepLabV3 finetuning (mmsegmentation's recipe) from a pretrained checkpoint.
#include <cstdio>
#include <string>
#include <vector>

#include "commands.h"
#include "cp2/common.h"
#include "cp2/seg/finetune.h"
#include "run_flags.h"

namespace cp2::app {

namespace {

struct FinetuneArgs {
  RunFlags run;
  int64_t max_iters = 0;
};

const std::vector<Shortcut>& finetune_shortcuts() {
  static const std::vector<Shortcut> s{
      {"--data", "data.root", "dataset folder"},
      {"--type", "data.type", "voc, cityscapes, ade20k, list"},
      {"--out", "train.out", "run folder"},
      {"--init", "train.init", "pretrained checkpoint: cp2/CP² authors' pretraining, MoCo v2, torchvision, mmseg; or a cp2 run folder (its newest checkpoint)"},
      {"--init-preset", "train.init_preset", "key layout of --init: auto, cp2, moco, torchvision, mmseg"},
      {"--arch", "model.arch", "ResNet depth: 18, 34, 50, 101", Kind::PosInt},
      {"--crop", "pipeline.crop_h", "square crop size (sets pipeline.crop_w too)", Kind::PosInt},
      {"--batch", "train.batch", "images per iteration", Kind::PosInt},
      {"--iters", "train.iters", "iterations", Kind::PosInt},
      {"--lr", "optim.lr", "base learning rate", Kind::PosFloat},
      {"--eval-every", "train.eval_every", "iterations between evaluations (0 = at the end)", Kind::NonNegInt},
      {"--workers", "data.workers", "loader threads (auto: 2 for a CPU run, the cores but one for a GPU run)", Kind::NonNegIntOrAuto},
      {"--device", "train.device", "cpu, cuda, cuda:N"},
      {"--precision", "train.precision", compute::kPrecisionHelp},
      {"--conv-algorithm", "train.conv_algorithm", compute::conv_algorithm_help()},
      {"--channels-last", "train.channels_last", compute::kChannelsLastHelp},
      {"--seed", "train.seed", "seed", Kind::NonNegInt}};
  return s;
}

int run(FinetuneArgs& a) {
  seg::FinetuneConfig cfg;
  if (a.run.keys) {
    std::printf("config keys (YAML sections or --set section.key=value), with defaults:\n%s",
                cfg.fields().describe().c_str());
    return 0;
  }
  prune(a.run);
  auto req = a.run.request();
  if (a.run.shortcuts.count("pipeline.crop_h")) req.src.flags.emplace_back("pipeline.crop_w", a.run.shortcuts["pipeline.crop_h"]);
  auto resolved = train::resolve_run(cfg, req, train::finetune_kind());
  if (a.run.print_config) {
    std::printf("%s", resolved.yaml.c_str());
    return 0;
  }
  seg::FinetuneControl fc;
  fc.resume = resolved.checkpoint;
  fc.take_over = resolved.take_over;
  fc.max_iters = a.max_iters;
  fc.check_data = a.run.check_data;
  fc.progress = !a.run.quiet;
  fc.comm = connect_from_env("finetune", a.run, cfg.train.device);
  auto s = seg::run_finetune(cfg, fc);
  if (s.already_finished) return 0;
  if (!fc.comm->main()) return exit_status(s.signal);  // rank 0 reports
  std::printf("%s after iteration %lld: %s in %.1f s (%.2f img/s)\n",
              s.finished ? "finished" : s.signal ? ("stopped by " + signal_name(s.signal)).c_str() : "stopped",
              static_cast<long long>(s.last_iter), count_of(s.last_iter - s.first_iter, "iteration").c_str(), s.seconds,
              s.images_per_s);
  if (!s.losses.empty()) std::printf("loss: first %.4f, last %.4f\n", s.losses.front(), s.losses.back());
  if (s.best_miou >= 0)
    std::printf("best mIoU %.2f%% at iteration %lld: %s\n", s.best_miou, static_cast<long long>(s.best_iter),
                s.best_checkpoint.c_str());
  std::printf("checkpoint: %s\nlog: %s/log.jsonl\n", s.last_checkpoint.c_str(), cfg.train.out.c_str());
  if (!s.signal) write_run_report(cfg.train.out);
  if (s.signal) print_continue("finetune", cfg.train.out, fc.comm.get());
  return exit_status(s.signal);
}

}  // namespace

Command register_finetune(CLI::App& app) {
  auto a = std::make_shared<FinetuneArgs>();
  auto* c = app.add_subcommand("finetune", "DeepLabV3 finetuning (mmsegmentation recipe) with evaluation and exact resume");
  seg::FinetuneConfig defaults;
  add_run_flags(c, a->run, finetune_shortcuts(), defaults.fields(), "configs/voc_r50_512.yaml ...");
  c->add_option("--max-iters", a->max_iters, "stop after this iteration, with a checkpoint (0 = run to the end)")->check(non_negative);
  return {c, [a] { return run(*a); }};
}

}  // namespace cp2::app
