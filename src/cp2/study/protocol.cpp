#include "cp2/study/protocol.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cp2/common.h"
#include "cp2/io/atomic_file.h"
#include "cp2/pretrain/modes.h"
#include "cp2/seg/config.h"
#include "cp2/train/progress.h"
#include "cp2/train/run_folder.h"

namespace cp2::study {

namespace fs = std::filesystem;
using Flags = std::vector<std::pair<std::string, std::string>>;

// ---------------------------------------------------------------------------------------
// Built-in CPU recipe (docs/results.md has the measurements behind it). K is a quarter of
// the 1,024 images: with K = 1,024 the queue holds each image's own earlier key as a
// negative and the instance loss climbs after ~60 steps (top-1 19 % at step 160 vs 43-52 %
// with K = 256). The dense loss (no temperature, weight 0.2) has a range of ~0.35 nats
// here and its value barely moves in entire CP², but its own task learns: over 64 steps
// from the MoCo v2 base the share of foreground key pixels nearest to a foreground query
// pixel (acc_dense_match) goes from chance (65 %) to 79 %, while the authors' all-pairs
// dense accuracy ends ~10 points above its chance. 128-px views at the paper's output
// stride 16 cost ~20 % more per image than 64 px at stride 8 and keep the finetuning
// scenes' scale.
Flags recipe_pretrain_flags(const std::string& scale) {
  const bool test = scale == "test", demo = scale == "demo";
  return {{"model.arch", "18"},
          {"view.size", test ? "32" : "128"},
          {"model.queue", test ? "32" : "256"},
          {"model.momentum", "0.99"},
          {"optim.lr", "1.0"},  // at batch 256: 0.125 at batch 32
          {"train.batch", test ? "8" : "32"},
          {"train.epochs", test ? "1" : demo ? "2" : "4"},
          {"train.iters_per_epoch", test ? "2" : "0"},
          {"train.log_every", test ? "1" : "2"},
          {"train.checkpoint_every_epochs", "1"},
          {"train.keep_last", "1"},
          {"data.workers", "1"}};
}

Flags recipe_finetune_flags(const std::string& scale) {
  const bool test = scale == "test", demo = scale == "demo";
  // Fashion-MNIST scenes are learned slowly from a weak CPU-sized base. With the ten fine
  // classes every model stayed at the all-background solution (mIoU ~8 %) through 400
  // iterations; with the four coarse groups (the built-in default) 1,000 iterations reach
  // 22-26 % against ~15 % for all-background; 120 (demo) learn only "top" (docs/results.md).
  const std::string iters = test ? "4" : demo ? "120" : "1000";
  const std::string every = test ? "2" : demo ? "60" : "250";
  return {{"model.arch", "18"},
          {"pipeline.scale_long", test ? "80" : "160"},
          {"pipeline.scale_short", test ? "60" : "120"},
          {"pipeline.crop_h", test ? "48" : "96"},
          {"pipeline.crop_w", test ? "48" : "96"},
          {"eval.scale_long", test ? "80" : "160"},
          {"eval.scale_short", test ? "60" : "120"},
          {"optim.lr", "0.02"},
          {"train.iters", iters},
          {"train.batch", test ? "2" : "8"},
          {"train.eval_every", every},
          {"train.checkpoint_every", every},
          {"train.keep_last", "1"},
          {"train.log_every", test ? "1" : "10"},
          {"data.workers", "1"}};
}

BuiltinData builtin_for_scale(const std::string& scale) {
  BuiltinData b;
  b.image_size = 128;
  if (scale == "test") {
    b.images = 16;
    b.image_size = 48;
    b.train_scenes = 6;
    b.val_scenes = 2;
    b.scene_width = 64;
    b.scene_height = 48;
  } else if (scale == "demo") {
    b.images = 512;
    b.train_scenes = 128;
    b.val_scenes = 32;
  }
  return b;
}

void Recipe::validate() const {
  if (scale != "default" && scale != "demo" && scale != "test")
    throw Error("--scale: expected default, demo or test, found '" + scale + "'");
  for (const auto* sets : {&pretrain_sets, &finetune_sets})
    for (const auto& s : *sets) {
      const auto key = s.substr(0, s.find('='));
      for (const char* owned : {"model.mode", "train.init", "train.seed", "train.out"})
        if (key == owned)
          throw Error("--pset/--fset " + s + ": " + key + " is set by the protocol for each run (use --seed, --base, --out)");
    }
  builtin.validate();
}

// ---------------------------------------------------------------------------------------

namespace {

bool builtin_layout(const std::string& d) { return d == "voc" || d == "cityscapes" || d == "ade20k"; }

// A row's copy-paste / dense / instance columns come from its mode's entry in the mode
// table (pretrain/modes.h); rows without Quick Tuning have none of them.
struct RowDef {
  const char *id, *label, *mode;  // mode "" = no Quick Tuning
  const char* paper;
  bool init_base;  // finetune from the base (rows without QT); false + no mode = scratch
};

const std::vector<RowDef>& row_defs() {
  static const std::vector<RowDef> d{
      {"base", "baseline (MoCo v2 base)", "", "77.2", true},
      {"no-copy-paste", "no copy-paste", "no-copy-paste", "77.6", false},
      {"instance-only", "instance loss only", "instance-only", "78.0", false},
      {"dense-only", "dense loss only", "dense-only", "75.6", false},
      {"cp2", "entire CP2", "cp2", "78.6", false},
      {"scratch", "control: scratch", "", "", false},
      {"moco-continued", "control: MoCo v2 for the QT budget", "moco", "", false}};
  return d;
}

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

// A stage this invocation will reach, and which finished stages its time is estimated
// from: the MoCo base, a Quick Tuning or a finetuning (each costs about the same as the
// others of its kind under one recipe).
enum class Cost { Base, QuickTune, Finetune };
struct Planned {
  std::string name;
  Cost cost;
};

// Stage (run folder) names, one spelling for the plan and for the runs it counts: a name
// the plan lacks would make the ETA skip the rest of the plan.
std::string qt_stage(const std::string& id) { return "qt_" + id; }
std::string ft_stage(const std::string& id) { return "ft_" + id; }
std::string seed_id(uint64_t seed) { return "seed" + std::to_string(seed); }
std::string trial_id(const std::string& dataset, uint64_t seed) { return dataset + "_" + seed_id(seed); }

// The protocol's bookkeeping: stages run in order with a progress line (k of n, ETA),
// wall time kept across invocations in results.json, results rewritten after each stage.
class Runner {
 public:
  Runner(std::string kind, std::string out, const Recipe& r) : kind_(std::move(kind)), out_(std::move(out)), r_(r) {
    r_.validate();
    out_ = train::absolute_path(out_);
    fs::create_directories(out_);
    std::ifstream in(fs::path(out_) / "results.json");
    if (in) {
      try {
        auto j = nlohmann::json::parse(in);
        const auto secs = j.value("run_seconds", nlohmann::json::object());
        for (auto it = secs.begin(); it != secs.end(); ++it) seconds_[it.key()] = it.value().get<double>();
      } catch (const std::exception&) {
        // An unreadable results.json from an older invocation: wall times restart.
      }
    }
  }

  const std::string& out() const { return out_; }
  const Recipe& recipe() const { return r_; }
  // The stages this invocation will reach, in order: the progress line's n and its ETA.
  void plan(std::vector<Planned> stages) {
    plan_ = std::move(stages);
    total_ = static_cast<int>(plan_.size());
  }

  std::string pretrain_images() {
    if (!r_.data.empty()) return train::absolute_path(r_.data);
    if (!r_.pretrain_config.empty()) return "";  // the file's data.root
    return builtin_images((fs::path(out_) / "data").string(), r_.builtin);
  }
  std::string seg_root(const std::string& layout) {
    if (!r_.seg_data.empty()) return train::absolute_path(r_.seg_data);
    return builtin_seg((fs::path(out_) / "data").string(), layout, r_.builtin);
  }

  StageSpec pretrain_stage(const std::string& name, const std::string& mode, const std::string& init, uint64_t seed,
                           int epochs = 0) {
    StageSpec s{name, StageKind::Pretrain, {}};
    s.src.file = r_.pretrain_config;
    if (s.src.file.empty()) s.src.flags = recipe_pretrain_flags(r_.scale);
    if (const auto d = pretrain_images(); !d.empty()) s.src.flags.emplace_back("data.root", d);
    s.src.flags.emplace_back("model.mode", mode);
    s.src.flags.emplace_back("train.init", init);
    s.src.flags.emplace_back("train.seed", std::to_string(seed));
    if (epochs > 0) s.src.flags.emplace_back("train.epochs", std::to_string(epochs));
    for (const auto& x : r_.pretrain_sets)
      if (!(epochs > 0 && x.rfind("train.epochs=", 0) == 0)) s.src.sets.push_back(x);
    return s;
  }

  // `dataset`: a built-in layout, or a finetune config file.
  StageSpec finetune_stage(const std::string& name, const std::string& dataset, const std::string& init, uint64_t seed) {
    StageSpec s{name, StageKind::Finetune, {}};
    const bool builtin = builtin_layout(dataset);
    s.src.file = builtin ? r_.finetune_config : dataset;
    if (s.src.file.empty()) s.src.flags = recipe_finetune_flags(r_.scale);
    if (builtin && (r_.finetune_config.empty() || !r_.seg_data.empty())) {
      s.src.flags.emplace_back("data.type", dataset);
      s.src.flags.emplace_back("data.root", seg_root(dataset));
    }
    s.src.flags.emplace_back("train.init", init);
    s.src.flags.emplace_back("train.seed", std::to_string(seed));
    s.src.sets = r_.finetune_sets;
    return s;
  }

  StageResult run(const StageSpec& spec) {
    ++done_;
    const double el = elapsed();
    std::fprintf(stderr, "[%s %d/%d] %s: %s (elapsed %s, ETA %s)\n", kind_.c_str(), done_, total_, spec.name.c_str(),
                 spec.kind == StageKind::Pretrain ? "pretraining" : "finetuning", train::fmt_time(el).c_str(),
                 eta(spec.name).c_str());
    auto res = run_stage(spec, out_, r_.progress);
    if (res.skipped) {
      std::fprintf(stderr, "[%s %d/%d] %s: finished before, skipped\n", kind_.c_str(), done_, total_, spec.name.c_str());
    } else {
      seconds_[spec.name] += res.seconds;
    }
    if (res.signal) signal_ = res.signal;
    return res;
  }
  // Time left from stage `from` on: each unfinished planned stage costs the mean wall time
  // of the finished stages of its Cost (over all invocations, from results.json) less what
  // it has run already. Finished stages count nothing, so a continued folder is not
  // overestimated; "?" until a kind has a measure.
  std::string eta(const std::string& from) const {
    std::map<Cost, std::pair<double, int>> per_kind;
    std::vector<bool> finished(plan_.size());
    for (size_t i = 0; i < plan_.size(); ++i) {
      finished[i] = stage_finished(plan_[i].name);
      if (const double t = run_seconds(plan_[i].name); finished[i] && t > 0) {
        auto& [sum, n] = per_kind[plan_[i].cost];
        sum += t, ++n;
      }
    }
    const auto start =
        std::find_if(plan_.begin(), plan_.end(), [&](const Planned& p) { return p.name == from; });
    double left = 0;
    for (auto i = static_cast<size_t>(start - plan_.begin()); i < plan_.size(); ++i) {
      if (finished[i]) continue;
      const auto it = per_kind.find(plan_[i].cost);
      if (it == per_kind.end()) return "?";
      left += std::max(0.0, it->second.first / it->second.second - run_seconds(plan_[i].name));
    }
    return train::fmt_time(left);
  }
  bool stage_finished(const std::string& name) const {
    std::ifstream in(fs::path(out_) / name / "summary.json");
    if (!in) return false;
    try {
      return nlohmann::json::parse(in).value("finished", false);
    } catch (const std::exception&) {
      return false;  // unreadable: the stage itself reports it when it runs
    }
  }
  double run_seconds(const std::string& name) const {
    auto it = seconds_.find(name);
    return it == seconds_.end() ? 0 : it->second;
  }
  int signal() const { return signal_; }
  double elapsed() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  }

  // results.json/csv and table.txt, atomically, after every stage.
  void write(const StudyResult& s, const std::string& table) const {
    nlohmann::json rows = nlohmann::json::array();
    for (const auto& r : s.rows)
      rows.push_back({{"id", r.id},
                      {"label", r.label},
                      {"dataset", r.dataset},
                      {"qt", r.qt},
                      {"copy_paste", r.copy_paste},
                      {"dense", r.dense},
                      {"instance", r.instance},
                      {"miou", r.miou < 0 ? nlohmann::json(nullptr) : nlohmann::json(r.miou)},
                      {"paper", r.paper},
                      {"pretrain_run", r.pretrain_run},
                      {"finetune_run", r.finetune_run},
                      {"seed", r.seed},
                      {"budget", r.budget},
                      {"wall_s", r.seconds}});
    nlohmann::json secs = nlohmann::json::object();
    for (const auto& [k, v] : seconds_) secs[k] = v;
    nlohmann::json j{{"kind", s.kind},
                     {"base", s.base},
                     {"rows", rows},
                     {"run_seconds", secs},
                     {"complete", s.signal == 0 && std::all_of(s.rows.begin(), s.rows.end(), [](const Row& r) { return r.miou >= 0; })},
                     {"scale", r_.scale},
                     {"pretrain_config", r_.pretrain_config},
                     {"finetune_config", r_.finetune_config},
                     {"pretrain_sets", r_.pretrain_sets},
                     {"finetune_sets", r_.finetune_sets},
                     {"units", "mIoU in percent; wall_s: training seconds of the row's runs over all invocations"}};
    const fs::path o = out_;
    io::write_file_atomic((o / "results.json").string(), j.dump(2) + "\n");
    io::write_file_atomic((o / "results.csv").string(), format_results_csv(s.rows));
    io::write_file_atomic((o / "table.txt").string(), table);
  }

 private:
  std::string kind_, out_;
  Recipe r_;
  std::map<std::string, double> seconds_;
  std::vector<Planned> plan_;
  int total_ = 0, done_ = 0, signal_ = 0;
  std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
};

// The base checkpoint: the user's, or a cp2 moco-mode run in out/base.
std::string base_checkpoint(Runner& run, const std::string& base, int base_epochs, uint64_t seed, int* signal) {
  if (!base.empty()) {
    if (base_epochs > 0) throw Error("give --base FILE or --base-epochs N, not both");
    const auto p = train::absolute_path(base);
    if (!fs::exists(p)) throw Error("--base " + base + ": no such file");
    return p;
  }
  if (base_epochs <= 0) throw Error("a MoCo v2 base is needed: --base FILE (e.g. moco_v2_800ep_pretrain.pth.tar or a cp2 moco-mode run's checkpoint) or --base-epochs N (pretrain one with cp2's moco mode first)");
  auto r = run.run(run.pretrain_stage("base", "moco", "", seed, base_epochs));
  *signal = r.signal;
  return r.checkpoint;
}

}  // namespace

const std::vector<std::string>& ablate_row_ids() {
  static const std::vector<std::string> ids = [] {
    std::vector<std::string> v;
    for (const auto& d : row_defs()) v.push_back(d.id);
    return v;
  }();
  return ids;
}

StudyResult run_ablate(const AblateOptions& o) {
  std::vector<const RowDef*> defs;
  for (const auto& d : row_defs())
    if (o.rows.empty() || std::find(o.rows.begin(), o.rows.end(), d.id) != o.rows.end()) defs.push_back(&d);
  for (const auto& id : o.rows)
    if (std::find(ablate_row_ids().begin(), ablate_row_ids().end(), id) == ablate_row_ids().end())
      throw Error("--rows: unknown row '" + id + "'; rows: " + join(ablate_row_ids()));
  Runner run(o.label, o.out, o.recipe);
  std::vector<Planned> stages;
  if (o.base.empty()) stages.push_back({"base", Cost::Base});
  for (const auto* d : defs) {
    if (*d->mode) stages.push_back({qt_stage(d->id), Cost::QuickTune});
    stages.push_back({ft_stage(d->id), Cost::Finetune});
  }
  run.plan(stages);

  StudyResult s;
  s.kind = "ablate";
  const uint64_t seed = o.recipe.seed;
  for (const auto* d : defs) {
    Row r;
    r.id = d->id;
    r.label = d->label;
    r.qt = *d->mode;
    if (r.qt) {
      // A copy: GCC 14 (-Wdangling-reference) takes a reference for one into the temporary string.
      const auto m = pretrain::mode_spec(d->mode);
      r.copy_paste = m.copy_paste, r.dense = m.dense, r.instance = m.instance;
    }
    r.paper = d->paper;
    r.seed = seed;
    r.dataset = "voc";
    s.rows.push_back(r);
  }
  auto finish = [&] {
    s.seconds = run.elapsed();
    run.write(s, format_ablate_table(s.rows));
    return s;
  };
  s.base = base_checkpoint(run, o.base, o.base_epochs, seed, &s.signal);
  if (s.signal) return finish();
  for (size_t i = 0; i < defs.size(); ++i) {
    const auto* d = defs[i];
    auto& r = s.rows[i];
    std::string init = d->init_base ? s.base : "";
    std::vector<std::string> budget;
    if (*d->mode) {
      auto q = run.run(run.pretrain_stage(qt_stage(d->id), d->mode, s.base, seed));
      r.pretrain_run = q.folder;
      r.seconds += run.run_seconds(q.name);
      budget.push_back("QT " + q.budget);
      if (q.signal) {
        s.signal = q.signal;
        return finish();
      }
      init = q.checkpoint;
    }
    auto f = run.run(run.finetune_stage(ft_stage(d->id), "voc", init, seed));
    r.finetune_run = f.folder;
    r.seconds += run.run_seconds(f.name);
    budget.push_back("finetune " + f.budget);
    r.budget = budget.size() == 2 ? budget[0] + "; " + budget[1] : budget[0];
    if (f.signal) {
      s.signal = f.signal;
      return finish();
    }
    r.miou = f.miou;
    finish();  // results after every row
  }
  return finish();
}

StudyResult run_trials(const TrialsOptions& o) {
  if (o.seeds < 1) throw Error("--seeds: expected >= 1, found " + std::to_string(o.seeds));
  if (o.vary != "both" && o.vary != "finetune") throw Error("--vary: expected both or finetune, found '" + o.vary + "'");
  if (o.datasets.empty()) throw Error("--datasets: expected at least one dataset");
  // Before the base and the Quick Tuning runs, which take the most time: a name that is not a
  // layout must be a finetune config file whose keys load.
  for (const auto& d : o.datasets)
    if (!builtin_layout(d)) {
      if (!fs::is_regular_file(d))
        throw Error("--datasets: expected voc, cityscapes, ade20k or a finetune config file, found '" + d + "'");
      seg::FinetuneConfig cfg;
      cfg.fields().load_yaml_file(d);
    }
  Runner run("trials", o.out, o.recipe);
  const auto& entire = pretrain::mode_spec(pretrain::Mode::Cp2);  // every trial is entire CP²
  StudyResult s;
  s.kind = "trials";
  auto finish = [&] {
    s.seconds = run.elapsed();
    run.write(s, format_trials_table(s.rows));
    return s;
  };
  const uint64_t seed0 = o.recipe.seed;
  auto dataset_name = [](const std::string& d) { return builtin_layout(d) ? d : fs::path(d).stem().string(); };
  std::vector<Planned> stages;
  if (o.base.empty()) stages.push_back({"base", Cost::Base});
  for (int k = 0; k < o.seeds; ++k) {
    const uint64_t seed = seed0 + static_cast<uint64_t>(k);
    if (k == 0 || o.vary == "both") stages.push_back({qt_stage(seed_id(seed)), Cost::QuickTune});
    for (const auto& d : o.datasets) stages.push_back({ft_stage(trial_id(dataset_name(d), seed)), Cost::Finetune});
  }
  run.plan(stages);
  s.base = base_checkpoint(run, o.base, o.base_epochs, seed0, &s.signal);
  if (s.signal) return finish();
  for (int k = 0; k < o.seeds; ++k)
    for (const auto& d : o.datasets) {
      Row r;
      r.seed = seed0 + static_cast<uint64_t>(k);
      r.dataset = dataset_name(d);
      r.id = trial_id(r.dataset, r.seed);
      r.label = "entire CP2";
      r.qt = true, r.copy_paste = entire.copy_paste, r.dense = entire.dense, r.instance = entire.instance;
      r.paper = r.dataset == "voc" ? "78.6 ± 0.2" : r.dataset == "cityscapes" ? "77.4 ± 0.2" : r.dataset == "ade20k" ? "41.3 ± 0.1" : "";
      s.rows.push_back(r);
    }
  size_t row = 0;
  StageResult q;
  for (int k = 0; k < o.seeds; ++k) {
    const uint64_t seed = seed0 + static_cast<uint64_t>(k);
    // --vary finetune: one Quick Tuning run (seed0), reached once, so the progress line's
    // count stays within the plan's n (it read 11/10 when every seed revisited it).
    if (k == 0 || o.vary == "both") {
      q = run.run(run.pretrain_stage(qt_stage(seed_id(seed)), entire.name, s.base, seed));
      if (q.signal) {
        s.signal = q.signal;
        return finish();
      }
    }
    for (const auto& d : o.datasets) {
      auto& r = s.rows[row++];
      r.pretrain_run = q.folder;
      auto f = run.run(run.finetune_stage(ft_stage(r.id), d, q.checkpoint, seed));
      r.finetune_run = f.folder;
      r.seconds = run.run_seconds(q.name) + run.run_seconds(f.name);
      r.budget = "QT " + q.budget + "; finetune " + f.budget;
      if (f.signal) {
        s.signal = f.signal;
        return finish();
      }
      r.miou = f.miou;
      finish();
    }
  }
  return finish();
}

// ---------------------------------------------------------------------------------------

std::string format_ablate_table(const std::vector<Row>& rows) {
  std::ostringstream t;
  auto mark = [](bool b) { return b ? "yes" : "-"; };
  char line[256];
  std::snprintf(line, sizeof line, "%-36s %-4s %-10s %-6s %-8s %7s  %s\n", "mode", "QT", "copy-paste", "dense",
                "instance", "mIoU", "paper (R50, VOC)");
  t << line;
  for (const auto& r : rows) {
    std::snprintf(line, sizeof line, "%-36s %-4s %-10s %-6s %-8s %7s  %s\n", r.label.c_str(), mark(r.qt),
                  mark(r.copy_paste), mark(r.dense), mark(r.instance), r.miou < 0 ? "-" : fmt("%.1f", r.miou).c_str(),
                  r.paper.empty() ? "-" : r.paper.c_str());
    t << line;
  }
  return t.str();
}

std::vector<MeanStd> trial_stats(const std::vector<Row>& rows) {
  std::vector<MeanStd> out;
  for (const auto& r : rows) {
    if (r.miou < 0) continue;
    auto it = std::find_if(out.begin(), out.end(), [&](const MeanStd& m) { return m.dataset == r.dataset; });
    if (it == out.end()) {
      out.push_back({r.dataset, 0, 0, 0, r.paper});
      it = out.end() - 1;
    }
    it->mean += r.miou;
    ++it->n;
  }
  for (auto& m : out) {
    m.mean /= m.n;
    double ss = 0;
    for (const auto& r : rows)
      if (r.dataset == m.dataset && r.miou >= 0) ss += (r.miou - m.mean) * (r.miou - m.mean);
    m.std = m.n > 1 ? std::sqrt(ss / (m.n - 1)) : 0;
  }
  return out;
}

std::string format_trials_table(const std::vector<Row>& rows) {
  std::ostringstream t;
  char line[256];
  auto st = trial_stats(rows);
  std::snprintf(line, sizeof line, "%-12s %-16s %-5s %-28s %s\n", "dataset", "mIoU mean ± std", "n", "trials",
                "paper (R50)");
  t << line;
  for (const auto& m : st) {
    std::string each;
    for (const auto& r : rows)
      if (r.dataset == m.dataset && r.miou >= 0) each += (each.empty() ? "" : " ") + fmt("%.1f", r.miou);
    std::snprintf(line, sizeof line, "%-12s %-16s %-5d %-28s %s\n", m.dataset.c_str(),
                  (fmt("%.1f", m.mean) + " ± " + fmt("%.1f", m.std)).c_str(), m.n, each.c_str(),
                  m.paper.empty() ? "-" : m.paper.c_str());
    t << line;
  }
  t << "(std: sample standard deviation, n - 1; a dataset with one trial shows 0)\n";
  return t.str();
}

std::string format_results_csv(const std::vector<Row>& rows) {
  std::ostringstream c;
  c << "id,label,dataset,qt,copy_paste,dense,instance,miou,paper,seed,wall_s,budget,pretrain_run,finetune_run\n";
  auto q = [](const std::string& s) {
    std::string o = "\"";
    for (char ch : s) o += ch == '"' ? std::string("\"\"") : std::string(1, ch);
    return o + "\"";
  };
  for (const auto& r : rows)
    c << r.id << "," << q(r.label) << "," << r.dataset << "," << r.qt << "," << r.copy_paste << "," << r.dense << ","
      << r.instance << "," << (r.miou < 0 ? "" : fmt("%.2f", r.miou)) << "," << q(r.paper) << "," << r.seed << ","
      << fmt("%.1f", r.seconds) << "," << q(r.budget) << "," << q(r.pretrain_run) << "," << q(r.finetune_run) << "\n";
  return c.str();
}

}  // namespace cp2::study
