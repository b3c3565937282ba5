// Subcommand registration for the cp2 program; all logic lives in the library.
#pragma once
#include <CLI/CLI.hpp>

#include <functional>

namespace cp2::app {

struct Command {
  CLI::App* sub;
  std::function<int()> run;  // called when `sub` was parsed
};

Command register_convert(CLI::App& app);
Command register_demo(CLI::App& app);
Command register_loss(CLI::App& app);
Command register_pretrain(CLI::App& app);
Command register_synth(CLI::App& app);
Command register_bench(CLI::App& app);
Command register_finetune(CLI::App& app);
Command register_evaluate(CLI::App& app);
Command register_predict(CLI::App& app);
Command register_ablate(CLI::App& app);
Command register_trials(CLI::App& app);
Command register_report(CLI::App& app);
Command register_launch(CLI::App& app);

}  // namespace cp2::app
