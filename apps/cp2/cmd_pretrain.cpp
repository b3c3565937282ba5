// cp2 pretrain: CP² (or Table 6 variants, or MoCo v2) pretraining on an image folder.
#include <cstdio>
#include <string>
#include <vector>

#include "commands.h"
#include "cp2/common.h"
#include "cp2/pretrain/modes.h"
#include "cp2/pretrain/trainer.h"
#include "run_flags.h"

namespace cp2::app {

namespace {

struct PretrainArgs {
  RunFlags run;
  std::string dump_batch;
  int64_t max_steps = 0;
};

const std::vector<Shortcut>& pretrain_shortcuts() {
  static const std::vector<Shortcut> s{
      {"--data", "data.root", "image folder"},
      {"--out", "train.out", "run folder"},
      {"--init", "train.init", "Quick Tuning: backbone checkpoint, or a cp2 run folder (its newest checkpoint)"},
      {"--init-preset", "train.init_preset", "key layout of --init: auto, moco, torchvision, cp2, mmseg"},
      {"--mode", "model.mode", join(pretrain::mode_names())},
      {"--arch", "model.arch", "ResNet depth: 18, 34, 50, 101", Kind::PosInt},
      {"--size", "view.size", "view size", Kind::PosInt},
      {"--batch", "train.batch", "images per step", Kind::PosInt},
      {"--epochs", "train.epochs", "epochs", Kind::PosInt},
      {"--iters-per-epoch", "train.iters_per_epoch", "cap on steps per epoch (0 = whole dataset)", Kind::NonNegInt},
      {"--queue", "model.queue", "queue length K", Kind::PosInt},
      {"--workers", "data.workers", "loader threads (auto: 2 for a CPU run, the cores but one for a GPU run)", Kind::NonNegIntOrAuto},
      {"--device", "train.device", "cpu, cuda, cuda:N"},
      {"--precision", "train.precision", compute::kPrecisionHelp},
      {"--conv-algorithm", "train.conv_algorithm", compute::conv_algorithm_help()},
      {"--channels-last", "train.channels_last", compute::kChannelsLastHelp},
      {"--seed", "train.seed", "seed", Kind::NonNegInt},
      {"--lr", "optim.lr", "learning rate at batch 256", Kind::PosFloat}};
  return s;
}

int run_pretrain_cmd(PretrainArgs& a) {
  pretrain::PretrainConfig cfg;
  if (a.run.keys) {
    std::printf("config keys (YAML sections or --set section.key=value), with defaults:\n%s",
                cfg.fields().describe().c_str());
    return 0;
  }
  prune(a.run);
  auto resolved = train::resolve_run(cfg, a.run.request(), train::pretrain_kind());
  if (a.run.print_config) {
    std::printf("%s", resolved.yaml.c_str());
    return 0;
  }
  pretrain::RunControl rc;
  rc.resume = resolved.checkpoint;
  rc.take_over = resolved.take_over;
  rc.dump_batch = a.dump_batch;
  rc.max_steps = a.max_steps;
  rc.check_data = a.run.check_data;
  rc.progress = !a.run.quiet;
  if (a.dump_batch.empty()) rc.comm = connect_from_env("pretrain", a.run, cfg.train.device);
  auto s = pretrain::run_pretrain(cfg, rc);
  if (!a.dump_batch.empty() || s.already_finished) return 0;
  if (rc.comm && !rc.comm->main()) return exit_status(s.signal);  // rank 0 reports
  std::printf("%s after step %lld: %s in %.1f s (%.2f img/s)%s\n",
              s.finished ? "finished" : s.signal ? ("stopped by " + signal_name(s.signal)).c_str() : "stopped",
              static_cast<long long>(s.last_step), count_of(s.last_step - s.first_step, "step").c_str(), s.seconds,
              s.images_per_s,
              s.skipped_images ? (", " + count_of(s.skipped_images, "unreadable image read") + " skipped").c_str() : "");
  if (!s.losses.empty()) std::printf("loss: first %.4f, last %.4f\n", s.losses.front(), s.losses.back());
  std::printf("checkpoint: %s\nlog: %s/log.jsonl\n", s.last_checkpoint.c_str(), cfg.train.out.c_str());
  if (!s.signal) write_run_report(cfg.train.out);
  if (s.signal) print_continue("pretrain", cfg.train.out, rc.comm.get());
  return exit_status(s.signal);
}

}  // namespace

Command register_pretrain(CLI::App& app) {
  auto a = std::make_shared<PretrainArgs>();
  auto* c = app.add_subcommand("pretrain", "CP² pretraining (Table 6 modes, MoCo v2) with Quick Tuning and exact resume");
  pretrain::PretrainConfig defaults;
  add_run_flags(c, a->run, pretrain_shortcuts(), defaults.fields(), "configs/cp2_r50_224.yaml ...");
  c->add_option("--dump-batch", a->dump_batch, "write the next batch to train on (the first, or the resumed position's) in cp2 loss --batch format, and stop");
  c->add_option("--max-steps", a->max_steps, "stop after this global step, with a checkpoint (0 = run to the end)")->check(non_negative);
  return {c, [a] { return run_pretrain_cmd(*a); }};
}

}  // namespace cp2::app
