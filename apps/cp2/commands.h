// Subcommand registration for the cp2 program; all logic lives in the library.
#pragma once
#include <CLI/CLI.hpp>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <string>

namespace cp2::app {

// Checks for numeric options. CLI11 2.1's PositiveNumber and NonNegativeNumber answer
// "--threads: Value 0 not in range 0.000000 to 17976931348623157...(300 digits)"; these
// say what is expected and what was found. Same names in --help (INT:POSITIVE).
inline CLI::Validator number_check(bool zero_allowed) {
  return CLI::Validator(
      [zero_allowed](std::string& s) -> std::string {
        char* end = nullptr;
        errno = 0;
        const double v = std::strtod(s.c_str(), &end);
        const bool number = !s.empty() && *end == '\0' && errno != ERANGE && std::isfinite(v);
        if (number && (zero_allowed ? v >= 0 : v > 0)) return {};
        return std::string(zero_allowed ? "expected a number >= 0" : "expected a positive number") + ", found '" + s +
               "'";
      },
      zero_allowed ? "NONNEGATIVE" : "POSITIVE");
}
inline const CLI::Validator positive = number_check(false);
inline const CLI::Validator non_negative = number_check(true);

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
