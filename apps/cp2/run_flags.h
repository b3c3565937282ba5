// What the training commands (pretrain, finetune) share on the command line: typed
// shortcut flags for the most used config keys (help shows the key and its default),
// --config/--set, --resume [RUN|FILE], --check-data, and the exit status of a run
// stopped by a signal (128 + signal, as a shell reports it).
#pragma once
#include <CLI/CLI.hpp>

#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "commands.h"
#include "cp2/config/fields.h"
#include "cp2/dist/comm.h"
#include "cp2/report/report.h"
#include "cp2/train/resolve.h"

namespace cp2::app {

struct Shortcut {
  const char* flag;  // "--batch"
  const char* key;   // "train.batch"
  std::string help;  // "images per step"
  Kind kind = Kind::Text;
};

struct RunFlags {
  std::string config;
  std::vector<std::string> sets;
  std::map<std::string, std::string> shortcuts;  // key -> value given
  std::string resume;
  bool auto_resume = false;
  bool check_data = false, print_config = false, keys = false, quiet = false;
  double dist_timeout = 300;  // seconds
  CLI::Option* resume_opt = nullptr;

  train::RunRequest request() const {
    train::RunRequest r;
    r.src.file = config;
    for (const auto& [k, v] : shortcuts) r.src.flags.emplace_back(k, v);
    r.src.sets = sets;
    if (resume_opt && resume_opt->count() > 0) r.resume = resume;
    r.auto_resume = auto_resume;
    return r;
  }
};

// Registers the shared flags on `c`; `defaults` shows each shortcut's built-in default.
inline void add_run_flags(CLI::App* c, RunFlags& f, const std::vector<Shortcut>& shortcuts,
                          const config::Fields& defaults, const std::string& config_example) {
  c->add_option("--config", f.config, "YAML config (" + config_example + "); keys: --config-keys");
  c->add_option("--set", f.sets, "override any key: --set section.key=value (repeatable)");
  for (const auto& s : shortcuts) {
    std::string d = defaults.value(s.key);
    if (d.size() >= 2 && d.front() == '"') d = d.substr(1, d.size() - 2);  // strings are shown unquoted
    if (d.empty()) d = "none";
    auto* o = c->add_option(s.flag, f.shortcuts[s.key],
                            std::string(s.help) + " (" + s.key + "; default " + d + ")");
    if (s.kind == Kind::Text) o->type_name("TEXT");
    else o->check(typed(s.kind, s.key))
             ->type_name(s.kind == Kind::Float || s.kind == Kind::PosFloat ? "FLOAT"
                         : s.kind == Kind::NonNegIntOrAuto                 ? "INT|auto"
                                                                           : "INT");
  }
  f.resume_opt = c->add_option("--resume", f.resume,
                               "continue a run: a run folder (its newest checkpoint), a checkpoint, or nothing (the "
                               "newest checkpoint of --out); writes into that run folder, with its stored config "
                               "unless --config")
                     ->expected(0, 1)
                     ->type_name("[RUN|FILE]");
  c->add_flag("--auto-resume", f.auto_resume,
              "continue the newest checkpoint of --out where it has one, else start the run there (also over a "
              "run that stopped before its first checkpoint, its log kept aside): one command line for a job's "
              "first start and every requeue")
      ->excludes(f.resume_opt);
  c->add_flag("--check-data", f.check_data, "read every image (and label) first; stop listing each unreadable one");
  c->add_flag("--print-config", f.print_config, "print the resolved config and stop");
  c->add_flag("--config-keys", f.keys, "list every config key with its default and stop");
  c->add_flag("--quiet", f.quiet, "no progress output");
  c->add_option("--dist-timeout", f.dist_timeout,
                "multi-process runs (torchrun, cp2 launch): seconds a collective or the rendezvous may wait for "
                "the other ranks before every rank stops with an error naming the missing one (default 300)")
      ->check(positive)
      ->type_name("SECONDS");
}

// Data parallel from the environment (RANK, WORLD_SIZE, ... as torchrun and cp2 launch
// set them): the rendezvous, after printing this process's place in the layout. World
// size 1: the single-process communicator, nothing printed.
inline std::shared_ptr<dist::Comm> connect_from_env(const std::string& command, const RunFlags& f,
                                                    const std::string& device) {
  const auto layout = dist::layout_from_env();
  if (layout.world == 1) return dist::single_process();
  if (!f.quiet) std::fprintf(stderr, "cp2 %s: %s\n", command.c_str(), layout.str().c_str());
  dist::ConnectOptions o;
  o.timeout = std::chrono::milliseconds(static_cast<int64_t>(f.dist_timeout * 1000));
  o.device = device;
  return dist::connect(layout, o);
}

// Drops the shortcut entries that were not given (CLI11 leaves them "").
inline void prune(RunFlags& f) {
  for (auto it = f.shortcuts.begin(); it != f.shortcuts.end();) it = it->second.empty() ? f.shortcuts.erase(it) : ++it;
}

// 0, or 128 + the signal that stopped a run (130 SIGINT, 143 SIGTERM, 138 SIGUSR1, 140 SIGUSR2).
inline int exit_status(int signal) { return signal ? 128 + signal : 0; }

// The command that continues a run a signal stopped; a data-parallel one is continued by the
// same launch (cp2 launch or torchrun, the same process count) around it.
inline void print_continue(const std::string& sub, const std::string& out, const dist::Comm* comm) {
  const bool launched = comm && comm->size() > 1;
  std::printf("continue with: %scp2 %s --resume %s%s\n", launched ? "the same launch of " : "", sub.c_str(),
              out.c_str(), launched ? (" (" + std::to_string(comm->size()) + " processes)").c_str() : "");
}

// RUN/report.html at the end of a run (not of a signalled one: preemption leaves little
// time); a failure to write it is a warning, never the run's failure.
inline void write_run_report(const std::string& out) {
  const std::string path = out + "/report.html";
  try {
    report::write(path, {out}, {});
    std::printf("report: %s\n", path.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "warning: report not written: %s\n", e.what());
  }
}

}  // namespace cp2::app
