// cp2 ablate (Table 6) and cp2 trials (Table 7): protocol runners over the library's
// study layer; both end by printing the table and writing report.html.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "commands.h"
#include "cp2/common.h"
#include "cp2/report/report.h"
#include "cp2/study/protocol.h"
#include "run_flags.h"

namespace cp2::app {

namespace {

struct StudyFlags {
  study::Recipe recipe;
  std::string base;
  int base_epochs = 0;
  bool quiet = false;
  int pictures = 4;
};

// The flags ablate and trials share.
void add_study_flags(CLI::App* c, StudyFlags& f) {
  c->add_option("--base", f.base,
                "MoCo v2 base checkpoint (a cp2 moco-mode run's checkpoint, or the authors' moco_v2_800ep_pretrain.pth.tar)");
  c->add_option("--base-epochs", f.base_epochs, "or: pretrain the base with cp2's moco mode for N epochs first (folder base/)")
      ->check(positive);
  c->add_option("--pretrain-config", f.recipe.pretrain_config,
                "Quick Tuning config (YAML, cp2 pretrain keys); default: the built-in CPU recipe (R18-ASPP, 128 px views, output stride 16, K 256)");
  c->add_option("--finetune-config", f.recipe.finetune_config,
                "finetuning config (YAML, cp2 finetune keys); default: the built-in CPU recipe (R18, 96 px crops)");
  c->add_option("--pset", f.recipe.pretrain_sets,
                "override a pretraining key, in Quick Tuning and in the MoCo v2 base that --base-epochs pretrains "
                "(there but train.epochs): --pset section.key=value (repeatable)");
  c->add_option("--fset", f.recipe.finetune_sets, "override a finetuning key: --fset section.key=value (repeatable)");
  c->add_option("--data", f.recipe.data, "pretraining image folder (default: built-in Fashion-MNIST images in OUT/data)");
  c->add_option("--seg-data", f.recipe.seg_data, "segmentation dataset folder (default: built-in Fashion-MNIST scenes in OUT/data)");
  c->add_option("--scale", f.recipe.scale, "size of the built-in recipe and data: default, demo (smaller) or test (tiny)")
      ->capture_default_str();
  c->add_option("--images", f.recipe.builtin.images, "built-in pretraining images")->capture_default_str();
  c->add_option("--train-scenes", f.recipe.builtin.train_scenes, "built-in segmentation training scenes")->capture_default_str();
  c->add_option("--val-scenes", f.recipe.builtin.val_scenes, "built-in segmentation validation scenes")->capture_default_str();
  c->add_option("--fashion-classes", f.recipe.builtin.fashion_classes,
                "labels of the built-in scenes: coarse (top, trousers, footwear, bag) or fine (the 10 Fashion-MNIST classes)")
      ->capture_default_str();
  c->add_option("--seed", f.recipe.seed, "seed of every run (trials: the first seed)")->capture_default_str()->check(non_negative_int);
  c->add_option("--pictures", f.pictures, "composites / predictions per run in report.html (0 = none)")
      ->capture_default_str()
      ->check(non_negative_int);
  c->add_flag("--quiet", f.quiet, "only the protocol's progress lines, not each run's");
}

// Built-in data sizes follow --scale unless given; then the shared flags go into the
// protocol's options (AblateOptions, TrialsOptions).
template <class Options>
void apply_flags(CLI::App* c, StudyFlags& f, Options& o) {
  auto b = study::builtin_for_scale(f.recipe.scale);
  if (!c->get_option("--images")->count()) f.recipe.builtin.images = b.images;
  if (!c->get_option("--train-scenes")->count()) f.recipe.builtin.train_scenes = b.train_scenes;
  if (!c->get_option("--val-scenes")->count()) f.recipe.builtin.val_scenes = b.val_scenes;
  f.recipe.builtin.image_size = b.image_size;
  f.recipe.builtin.scene_width = b.scene_width;
  f.recipe.builtin.scene_height = b.scene_height;
  f.recipe.builtin.seed = f.recipe.seed;
  f.recipe.progress = !f.quiet;
  o.recipe = f.recipe;
  o.base = f.base;
  o.base_epochs = f.base_epochs;
}

int finish(const study::StudyResult& r, const std::string& out, const std::string& table, int pictures) {
  std::printf("%s", table.c_str());
  const std::string report = (std::filesystem::path(out) / "report.html").string();
  try {
    report::write(report, {out}, {pictures, ""});
    std::printf("report: %s\n", report.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "warning: report not written: %s\n", e.what());
  }
  std::printf("results: %s/results.json, results.csv, table.txt (%.1f s this invocation)\n", out.c_str(), r.seconds);
  if (r.signal) std::printf("stopped by %s: rerun the same command to continue\n", signal_name(r.signal).c_str());
  return exit_status(r.signal);
}

}  // namespace

Command register_ablate(CLI::App& app) {
  auto o = std::make_shared<study::AblateOptions>();
  auto f = std::make_shared<StudyFlags>();
  auto* c = app.add_subcommand("ablate",
                               "Table 6: CP²'s parts ablated from one MoCo v2 base (Quick Tuning per mode, one finetuning recipe), "
                               "plus scratch and MoCo-continued controls; reruns skip finished runs and resume interrupted ones");
  c->add_option("--out", o->out, "output folder (one run folder per stage)")->capture_default_str();
  c->add_option("--rows", o->rows, "rows to run (default all): " + join(study::ablate_row_ids()))->delimiter(',');
  add_study_flags(c, *f);
  return {c, [c, o, f] {
            apply_flags(c, *f, *o);
            auto r = study::run_ablate(*o);
            return finish(r, o->out, study::format_ablate_table(r.rows), f->pictures);
          }};
}

Command register_trials(CLI::App& app) {
  auto o = std::make_shared<study::TrialsOptions>();
  auto f = std::make_shared<StudyFlags>();
  auto* c = app.add_subcommand("trials",
                               "Table 7: N seeds x datasets of Quick Tuning (CP²) + finetuning, mean ± sample std per dataset; "
                               "reruns skip finished runs and resume interrupted ones");
  c->add_option("--out", o->out, "output folder (one run folder per stage)")->capture_default_str();
  c->add_option("--seeds", o->seeds, "trials per dataset (seeds --seed, --seed + 1, ...)")->capture_default_str()->check(positive);
  c->add_option("--vary", o->vary, "both: Quick Tuning and finetuning per seed; finetune: one Quick Tuning run")->capture_default_str();
  c->add_option("--datasets", o->datasets, "built-in layouts (voc, cityscapes, ade20k) or finetune config files")
      ->delimiter(',')
      ->capture_default_str();
  add_study_flags(c, *f);
  return {c, [c, o, f] {
            apply_flags(c, *f, *o);
            auto r = study::run_trials(*o);
            return finish(r, o->out, study::format_trials_table(r.rows), f->pictures);
          }};
}

Command register_report(CLI::App& app) {
  struct Args {
    std::vector<std::string> inputs;
    std::string out;
    report::ReportOptions opt;
  };
  auto a = std::make_shared<Args>();
  auto* c = app.add_subcommand("report",
                               "One self-contained HTML page (inline SVG charts, no network or JavaScript) for run folders "
                               "and ablate/trials folders");
  c->add_option("runs", a->inputs, "run folders (pretrain/finetune) or ablate/trials folders")->required();
  c->add_option("--out", a->out, "HTML file to write (default: report.html in the first folder)");
  c->add_option("--pictures", a->opt.pictures, "composites / predictions per run (0 = none)")
      ->capture_default_str()
      ->check(non_negative_int);
  c->add_option("--title", a->opt.title, "page title");
  return {c, [a] {
            const std::string out = a->out.empty() ? (std::filesystem::path(a->inputs[0]) / "report.html").string() : a->out;
            report::write(out, a->inputs, a->opt);
            std::printf("report: %s\n", out.c_str());
            return 0;
          }};
}

}  // namespace cp2::app
