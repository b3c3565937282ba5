#include "cp2/study/stage.h"

#include <filesystem>

#include "cp2/common.h"
#include "cp2/pretrain/trainer.h"
#include "cp2/seg/finetune.h"
#include "cp2/train/resolve.h"
#include "cp2/train/run_folder.h"

namespace cp2::study {

namespace fs = std::filesystem;

StageResult run_stage(const StageSpec& spec, const std::string& out, bool progress) {
  StageResult r;
  r.name = spec.name;
  r.kind = spec.kind;
  r.folder = train::absolute_path((fs::path(out) / spec.name).string());
  train::RunRequest req;
  req.src = spec.src;
  req.src.flags.emplace_back("train.out", r.folder);
  // A checkpoint in the folder: this stage ran before (finished, or interrupted), and it
  // continues; a stage interrupted before its first checkpoint starts again, its log kept aside.
  req.auto_resume = true;
  try {
    if (spec.kind == StageKind::Pretrain) {
      pretrain::PretrainConfig cfg;
      auto res = train::resolve_run(cfg, req, train::pretrain_kind());
      r.resumed = !res.checkpoint.empty();
      pretrain::RunControl rc;
      rc.resume = res.checkpoint;
      rc.take_over = res.take_over;
      rc.progress = progress;
      auto s = pretrain::run_pretrain(cfg, rc);
      r.checkpoint = s.last_checkpoint;
      r.seconds = s.seconds;
      r.skipped = s.already_finished;
      r.signal = s.signal;
      r.seed = cfg.train.seed;
      r.budget = count_of(cfg.train.epochs, "epoch") + ", batch " + std::to_string(cfg.train.batch) +
                 (cfg.train.iters_per_epoch ? ", <= " + std::to_string(cfg.train.iters_per_epoch) + " steps/epoch" : "");
    } else {
      seg::FinetuneConfig cfg;
      auto res = train::resolve_run(cfg, req, train::finetune_kind());
      r.resumed = !res.checkpoint.empty();
      seg::FinetuneControl fc;
      fc.resume = res.checkpoint;
      fc.take_over = res.take_over;
      fc.progress = progress;
      auto s = seg::run_finetune(cfg, fc);
      r.checkpoint = s.best_checkpoint.empty() ? s.last_checkpoint : s.best_checkpoint;
      r.miou = s.best_miou;
      r.best_iter = s.best_iter;
      r.seconds = s.seconds;
      r.skipped = s.already_finished;
      r.signal = s.signal;
      r.seed = cfg.train.seed;
      r.budget = std::to_string(cfg.train.iters) + " iterations, batch " + std::to_string(cfg.train.batch);
    }
  } catch (const std::exception& e) {
    throw Error(spec.name + " (" + r.folder + "): " + error_message(e));
  }
  if (r.skipped) r.seconds = 0;
  return r;
}

}  // namespace cp2::study
