// Subcommand registration for the cp2 program; all logic lives in the library.
#pragma once
#include <CLI/CLI.hpp>

#include <cmath>
#include <functional>
#include <string>

namespace cp2::app {

// What a numeric option holds, checked before CLI11 converts it.
enum class Kind { Int, PosInt, NonNegInt, NonNegIntOrAuto, Float, PosFloat, NonNegFloat, Text };

// A value checked as its kind, with the config key it sets where there is one:
// "expected a positive integer (train.batch), found 'zero'". Non-finite numbers are refused.
inline CLI::Validator typed(Kind kind, const std::string& key = "", const std::string& name = "") {
  return CLI::Validator(
      [kind, key](std::string& v) -> std::string {
        if (kind == Kind::NonNegIntOrAuto && v == "auto") return std::string();
        const bool integer =
            kind == Kind::Int || kind == Kind::PosInt || kind == Kind::NonNegInt || kind == Kind::NonNegIntOrAuto;
        const char* what = kind == Kind::PosInt            ? "a positive integer"
                           : kind == Kind::NonNegInt       ? "an integer >= 0"
                           : kind == Kind::NonNegIntOrAuto ? "auto or an integer >= 0"
                           : kind == Kind::Int         ? "an integer"
                           : kind == Kind::PosFloat    ? "a positive number"
                           : kind == Kind::NonNegFloat ? "a number >= 0"
                                                       : "a number";
        size_t used = 0;
        double x = 0;
        try {
          x = integer ? static_cast<double>(std::stoll(v, &used)) : std::stod(v, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        const bool positive = kind == Kind::PosInt || kind == Kind::PosFloat;
        const bool non_negative =
            kind == Kind::NonNegInt || kind == Kind::NonNegIntOrAuto || kind == Kind::NonNegFloat;
        const bool ok = used > 0 && used == v.size() && std::isfinite(x) && (!positive || x > 0) &&
                        (!non_negative || x >= 0);
        return ok ? std::string() : "expected " + std::string(what) + (key.empty() ? "" : " (" + key + ")") + ", found '" + v + "'";
      },
      name, "");
}
// For options without a config key. CLI11 2.1's PositiveNumber and NonNegativeNumber answer
// "Value 0 not in range 0.000000 to 17976931348623157...(300 digits)"; the same names in --help.
inline const CLI::Validator positive = typed(Kind::PosFloat, "", "POSITIVE");
inline const CLI::Validator non_negative = typed(Kind::NonNegFloat, "", "NONNEGATIVE");
// Counts, sizes and seeds: CLI11 takes "-1" for an unsigned option and converts it.
inline const CLI::Validator positive_int = typed(Kind::PosInt, "", "POSITIVE");
inline const CLI::Validator non_negative_int = typed(Kind::NonNegInt, "", "NONNEGATIVE");

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
