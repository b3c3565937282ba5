// Declarative config keys: each subsystem's options struct lists its keys once (name,
// variable, help); YAML files, `--set key=value` overrides and the resolved-config dump
// all go through this table. Unknown keys and bad values are errors naming the key, the
// expected type or choices, the value found, and (for unknown keys) the valid keys.
#pragma once
#include <array>
#include <functional>
#include <initializer_list>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace cp2::config {

// The value of a count key (add_count_or_auto) set to "auto".
constexpr int kAuto = -1;

class Fields {
 public:
  void add(const std::string& key, int& v, const std::string& help);
  void add(const std::string& key, int64_t& v, const std::string& help);
  void add(const std::string& key, uint64_t& v, const std::string& help);
  void add(const std::string& key, double& v, const std::string& help);
  void add(const std::string& key, bool& v, const std::string& help);
  void add(const std::string& key, std::string& v, const std::string& help);
  void add(const std::string& key, std::array<double, 3>& v, const std::string& help);
  void add(const std::string& key, std::vector<double>& v, const std::string& help);  // non-empty list
  // A count or "auto" (held as kAuto; resolved where what it depends on is known, e.g. the
  // device for data.workers). Negative numbers are refused.
  void add_count_or_auto(const std::string& key, int& v, const std::string& help);
  // true, false (any spelling the bool keys take) or auto, held as "true", "false" or "auto":
  // a switch whose auto is resolved where what it depends on is known (train.channels_last).
  void add_bool_or_auto(const std::string& key, std::string& v, const std::string& help);
  // A string restricted to `choices`.
  void add_choice(const std::string& key, std::string& v, std::vector<std::string> choices, const std::string& help);

  // Sets one key from text; `origin` (a file or "command line") prefixes errors.
  void set(const std::string& key, const std::string& value, const std::string& origin);
  // "key=value" items.
  void apply_overrides(const std::vector<std::string>& items, const std::string& origin = "--set");
  // A YAML file of nested maps (`train: {epochs: 2}` is key train.epochs).
  void load_yaml_file(const std::string& path);
  void load_yaml_text(const std::string& text, const std::string& origin);

  // Nested YAML of every key's current value, in declaration order.
  std::string to_yaml() const;
  // A key's current value as the YAML dump writes it ("" for an unknown key).
  std::string value(const std::string& key) const;
  // One line per key: name, current value, help (for --help-config).
  std::string describe() const;
  // Where `key`'s value was last set from (a file, "command line", "--set", a checkpoint's
  // stored config); "" while it holds its default.
  std::string origin(const std::string& key) const;

 private:
  struct Field {
    std::string key, type, help;
    std::function<void(const std::string&)> parse;  // throws std::invalid_argument with the expectation
    std::function<std::string()> show;
  };
  const Field* find(const std::string& key) const;
  std::vector<Field> fields_;
  std::map<std::string, std::string> origins_;
};

// Runs `check` (a config's validate(), whose errors start with the key or keys at fault:
// "model.arch: ...", "view.scale_min/scale_max: ...") and, where those keys' values were set
// from a file, the command line or a checkpoint, puts that origin in front of the error, as
// parse errors have it ("a.yaml: model.arch: expected one of ..."; "a.yaml and --set: ...").
void check_naming_origin(const Fields& f, const std::function<void()>& check);

// Where a run's settings come from, lowest precedence first: the defaults, the config
// file (or, when resuming without one, the config stored in the checkpoint), the
// command-line flags (key, value), then --set key=value items.
struct Sources {
  std::string file;
  std::string stored_config;  // YAML text from a checkpoint
  std::string stored_origin;
  std::vector<std::pair<std::string, std::string>> flags;
  std::vector<std::string> sets;
  // Whether a flag or --set names `key` (the user chose it on the command line).
  bool names(const std::string& key) const;
};
void apply_sources(Fields& f, const Sources& src);

// A YAML text of nested maps as (dotted key, value text) pairs, in file order: what
// load_yaml_text sets, for comparing two configs. Throws naming `origin`.
std::vector<std::pair<std::string, std::string>> flatten_yaml(const std::string& text, const std::string& origin);

// The candidate nearest to `word` in edit distance, if within `max_distance` ("" else):
// the "did you mean" of keys, subcommands and flags.
std::string closest(const std::string& word, const std::vector<std::string>& candidates, size_t max_distance = 3);
// Up to 4 keys in other sections with the same last name ("model.batch" -> train.batch), or
// with prefix, whose last name starts with it ("train.crop" -> pipeline.crop_h,
// pipeline.crop_w, eval.crop_h, eval.crop_w): a key put under the wrong section.
std::vector<std::string> same_name_elsewhere(const std::string& key, const std::vector<std::string>& keys,
                                             bool prefix);

// Throws "<key>: expected >= <min>, found <v>" when v < min (validate() helpers).
void require_at_least(const std::string& key, int64_t v, int64_t min);
// Throws "<key>: expected one of a, b, c, found <v>" unless v is listed.
void require_one_of(const std::string& key, int64_t v, std::initializer_list<int64_t> allowed);

}  // namespace cp2::config
