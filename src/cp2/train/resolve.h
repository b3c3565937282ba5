// The one place a run's settings are resolved (pretraining and finetuning alike):
// defaults < config file (or, resuming without one, the checkpoint's stored config) <
// shortcut flags < --set; a resumed run writes into the run folder the user pointed at
// (never the folder its stored config names) unless --out / --set train.out says
// otherwise; relative paths are made absolute once, here.
#pragma once
#include <filesystem>
#include <optional>
#include <string>

#include "cp2/common.h"
#include "cp2/config/fields.h"
#include "cp2/io/checkpoint.h"
#include "cp2/train/run_folder.h"
#include "cp2/train/state.h"

namespace cp2::train {

struct RunRequest {
  config::Sources src;                // --config, shortcut flags, --set
  std::optional<std::string> resume;  // --resume [ARG]: none = a fresh run, "" = the newest checkpoint of the run folder
  // --auto-resume: the newest checkpoint of the run folder where it has one, else a fresh
  // run there (also over a run that stopped before its first checkpoint): one command line
  // for a job's first start and every requeue.
  bool auto_resume = false;
};

struct ResolvedRun {
  std::string yaml;        // the resolved config
  std::string checkpoint;  // to resume from ("" = fresh)
  bool take_over = false;  // fresh, and may start over a run that stopped before its first checkpoint
};

// `Config` is a subsystem config with fields(), validate(), to_yaml(), data.root,
// train.out and train.init (PretrainConfig, FinetuneConfig).
template <class Config>
ResolvedRun resolve_run(Config& cfg, RunRequest req, const CheckpointKind& kind) {
  ResolvedRun r;
  std::string out_hint;  // where `--resume` alone and `--auto-resume` look: --out, --set or the config file's train.out
  if (req.auto_resume || (req.resume && req.resume->empty())) {
    Config probe;
    auto f = probe.fields();
    config::apply_sources(f, req.src);
    out_hint = probe.train.out;
  }
  if (req.auto_resume) {
    if (req.resume) throw Error("--auto-resume and --resume: give one (--auto-resume continues --out's newest checkpoint)");
    if (!latest_checkpoint(absolute_path(out_hint)).empty()) req.resume = "";
    else r.take_over = true;
  }
  if (req.resume) {
    const auto target = locate_resume(*req.resume, out_hint);
    r.checkpoint = target.checkpoint;
    if (req.src.file.empty()) {
      req.src.stored_config = stored_config(io::load_checkpoint_structure(r.checkpoint).root, kind, r.checkpoint);
      req.src.stored_origin = r.checkpoint + " (stored config)";
    }
    if (!req.src.names("train.out")) {
      if (target.run.empty())
        throw Error(r.checkpoint + ": not inside a run folder (no config.yaml or checkpoints/ beside it); give --out DIR "
                                   "for the resumed run");
      req.src.flags.emplace_back("train.out", target.run);
    }
  }
  auto f = cfg.fields();
  config::apply_sources(f, req.src);
  cfg.data.root = absolute_path(cfg.data.root);
  cfg.train.out = absolute_path(cfg.train.out);
  cfg.train.init = init_checkpoint(absolute_path(cfg.train.init));
  config::check_naming_origin(f, [&] { cfg.validate(); });
  r.yaml = cfg.to_yaml();
  return r;
}

}  // namespace cp2::train
