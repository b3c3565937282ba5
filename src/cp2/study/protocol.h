// The paper's two protocol tables as commands (seed appendix): Table 6, the ablation of
// CP²'s parts, all Quick-Tuned from one MoCo v2 base and finetuned with one recipe
// (`cp2 ablate`), and Table 7, mean ± std over seeds per dataset (`cp2 trials`). Every
// run has its own folder under `out`; a rerun skips finished runs and resumes an
// interrupted one exactly (study/stage.h). Results: table.txt, results.csv, results.json.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "cp2/study/builtin.h"
#include "cp2/study/stage.h"

namespace cp2::study {

// What every run of a protocol shares. Without a config file a stage uses the built-in
// CPU recipe (recipe_flags); --pset/--fset items override either. The protocol's own
// keys (model.mode, train.init, train.seed, train.out) cannot be overridden.
struct Recipe {
  std::string pretrain_config, finetune_config;
  std::vector<std::string> pretrain_sets, finetune_sets;  // key=value
  std::string data;                // pretraining images ("" = built-in, or the config file's)
  std::string seg_data;            // segmentation dataset ("" = built-in, or the config file's)
  BuiltinData builtin;
  std::string scale = "default";   // built-in recipe size: default | demo | test
  uint64_t seed = 0;
  bool progress = true;            // each run's progress lines
  void validate() const;
};

// The built-in CPU recipe's flags (R18-ASPP at 128-px views, output stride 16, K 256;
// finetuning R18 DeepLabV3 at 96-px crops): see protocol.cpp for why.
std::vector<std::pair<std::string, std::string>> recipe_pretrain_flags(const std::string& scale);
std::vector<std::pair<std::string, std::string>> recipe_finetune_flags(const std::string& scale);
BuiltinData builtin_for_scale(const std::string& scale);

// One row of Table 6 (or one trial of Table 7).
struct Row {
  std::string id, label;                  // "cp2", "entire CP²"
  bool qt = false, copy_paste = false, dense = false, instance = false;
  std::string paper;                      // the paper's mIoU for this row ("" = none)
  std::string pretrain_run, finetune_run;  // folders ("" = none)
  std::string dataset;                    // trials: dataset name
  uint64_t seed = 0;
  double miou = -1;                       // best val mIoU (%)
  double seconds = 0;                     // wall time of its runs, over all invocations
  std::string budget;
};

struct StudyResult {
  std::string kind;  // ablate | trials
  std::vector<Row> rows;
  std::string base;   // base checkpoint used
  int signal = 0;     // stopped by a signal: rows incomplete, rerun to continue
  double seconds = 0;
};

struct AblateOptions {
  std::string out = "runs/ablate";
  std::string base;       // MoCo v2 checkpoint (cp2 moco-mode run, or the authors' release)
  int base_epochs = 0;    // or: pretrain the base with cp2's moco mode first
  std::vector<std::string> rows;  // ids to run (default: all, in the paper's order + controls)
  Recipe recipe;
  std::string label = "ablate";   // progress-line prefix ("demo" for cp2 demo)
};
// Row ids in order: base, no-copy-paste, instance-only, dense-only, cp2, then the
// controls scratch and moco-continued.
const std::vector<std::string>& ablate_row_ids();
StudyResult run_ablate(const AblateOptions& o);

struct TrialsOptions {
  std::string out = "runs/trials";
  std::string base;
  int base_epochs = 0;
  int seeds = 3;
  std::string vary = "both";  // both: Quick Tuning and finetuning per seed; finetune: one QT run
  // Datasets: built-in layouts (voc, cityscapes, ade20k) or finetune config files.
  std::vector<std::string> datasets{"voc", "cityscapes", "ade20k"};
  Recipe recipe;
};
StudyResult run_trials(const TrialsOptions& o);

// The tables as printed and written to table.txt (paper form, with the paper's numbers
// beside ours), and the per-dataset mean ± sample std of trials.
std::string format_ablate_table(const std::vector<Row>& rows);
struct MeanStd {
  std::string dataset;
  double mean = 0, std = 0;  // sample std (n - 1); 0 for one trial
  int n = 0;
  std::string paper;
};
std::vector<MeanStd> trial_stats(const std::vector<Row>& rows);
std::string format_trials_table(const std::vector<Row>& rows);
std::string format_results_csv(const std::vector<Row>& rows);

}  // namespace cp2::study
