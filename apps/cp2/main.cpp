// cp2: CP² copy-paste contrastive pretraining and DeepLabV3 finetuning on LibTorch.
#include <cstdio>
#include <algorithm>
#include <exception>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "commands.h"
#include "cp2/common.h"
#include "cp2/config/fields.h"
#include "cp2/version.h"

namespace {

// "did you mean" for a mistyped flag of the chosen subcommand, from CLI11's parse error
// (an unknown command is caught before parsing, in main).
std::string suggestion(const CLI::App& app, int argc, char** argv) {
  const CLI::App* chosen = nullptr;
  for (const auto* s : app.get_subcommands([](const CLI::App* a) { return a->parsed(); })) chosen = s;
  if (!chosen) return "";
  std::vector<std::string> flags;
  for (const auto* o : chosen->get_options())
    for (const auto& l : o->get_lnames()) flags.push_back("--" + l);
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) continue;
    const std::string name = arg.substr(0, arg.find('='));
    if (std::find(flags.begin(), flags.end(), name) != flags.end()) continue;
    auto c = cp2::config::closest(name, flags);
    if (!c.empty()) return "unknown flag '" + name + "': did you mean '" + c + "'?";
  }
  return "";
}

// CLI11's help puts "Needs: --arch" and "Excludes: --resume" beside the option's name, which
// pushes the description onto a line of its own; they go at the end of the description.
class HelpFormatter : public CLI::Formatter {
 public:
  std::string make_option_opts(const CLI::Option* opt) const override {
    std::string s = CLI::Formatter::make_option_opts(opt);
    for (const char* label : {" Needs:", " Excludes:"})
      if (auto at = s.find(label); at != std::string::npos) s.erase(at);  // they come last, in this order
    return s;
  }
  std::string make_option_desc(const CLI::Option* opt) const override {
    std::string d = opt->get_description();
    auto names = [](const std::set<CLI::Option*>& opts) {
      std::vector<std::string> n;
      for (const auto* o : opts) n.push_back(o->get_name());
      std::sort(n.begin(), n.end());
      return cp2::join(n);
    };
    if (!opt->get_needs().empty()) d += " (needs " + names(opt->get_needs()) + ")";
    if (!opt->get_excludes().empty()) d += " (not with " + names(opt->get_excludes()) + ")";
    return d;
  }
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cp2: CP² copy-paste contrastive pretraining for semantic segmentation (LibTorch)"};
  app.formatter(std::make_shared<HelpFormatter>());  // before the subcommands: they take the parent's
  app.fallthrough();  // global options (--threads) may also follow the subcommand
  int threads = 0;
  bool version = false;
  auto* threads_opt = app.add_option("--threads", threads, "intra-op threads (default: every core this process may run on)")
                          ->check(cp2::app::positive)
                          ->type_name("INT");
  app.add_flag("--version", version, "print cp2's and LibTorch's versions, CUDA, CPU features, threads");
  // Listed by --help in the order of a user's work, under three headings.
  namespace ca = cp2::app;
  const std::pair<const char*, std::vector<ca::Command (*)(CLI::App&)>> groups[] = {
      {"Train and use a model", {ca::register_pretrain, ca::register_finetune, ca::register_evaluate,
                                 ca::register_predict, ca::register_launch}},
      {"The paper's experiments (Tables 6 and 7)", {ca::register_demo, ca::register_ablate, ca::register_trials}},
      {"Tools", {ca::register_report, ca::register_convert, ca::register_synth, ca::register_loss,
                 ca::register_bench}}};
  std::vector<ca::Command> cmds;
  for (const auto& [heading, registers] : groups)
    for (auto reg : registers) {
      cmds.push_back(reg(app));
      cmds.back().sub->group(heading);
    }
  // Every subcommand lists --threads in its own help (it sets the same value).
  for (auto& c : cmds)
    c.sub->add_option("--threads", threads, threads_opt->get_description())
        ->check(cp2::app::positive)
        ->type_name("INT");
  // The first word that is not a global option must be a command.
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--threads") {
      ++i;
      continue;
    }
    if (arg[0] == '-') continue;
    std::vector<std::string> names;
    for (const auto& c : cmds) names.push_back(c.sub->get_name());
    if (std::find(names.begin(), names.end(), arg) != names.end()) break;
    const auto near = cp2::config::closest(arg, names);
    std::fprintf(stderr, "error: unknown command '%s'%s; commands: %s (cp2 --help)\n", arg.c_str(),
                 near.empty() ? "" : (": did you mean '" + near + "'?").c_str(), cp2::join(names).c_str());
    return 2;
  }
  try {
    app.parse(argc, argv);
    if (version) {
      cp2::set_threads(threads);
      std::printf("%s", cp2::version_report().c_str());
      return 0;
    }
    if (app.get_subcommands().empty()) {
      std::fprintf(stderr, "%s", app.help().c_str());
      return 1;
    }
  } catch (const CLI::ParseError& e) {
    if (app.exit(e) == 0) return 0;  // --help
    const auto hint = suggestion(app, argc, argv);
    if (!hint.empty()) std::fprintf(stderr, "%s\n", hint.c_str());
    return 2;  // a usage error (a failed run exits 1; a signalled one 128 + the signal)
  }
  try {
    cp2::set_threads(threads);
    for (auto& c : cmds)
      if (c.sub->parsed()) return c.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", cp2::error_message(e).c_str());
    return 1;
  }
  return 1;
}
