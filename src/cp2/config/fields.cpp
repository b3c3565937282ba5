#include "cp2/config/fields.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <stdexcept>

#include "cp2/common.h"

namespace cp2::config {

namespace {

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r\n"), b = s.find_last_not_of(" \t\r\n");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

// A bool key's text as "true" / "false" ("" for anything else).
std::string bool_word(const std::string& s) {
  if (s == "true" || s == "True" || s == "yes" || s == "1" || s == "on") return "true";
  if (s == "false" || s == "False" || s == "no" || s == "0" || s == "off") return "false";
  return "";
}

int64_t parse_int(const std::string& s) {
  size_t pos = 0;
  long long v = 0;
  try {
    v = std::stoll(s, &pos);
  } catch (...) {
    pos = 0;
  }
  if (pos == 0 || pos != s.size()) throw std::invalid_argument("an integer");
  return v;
}

double parse_double(const std::string& s) {
  size_t pos = 0;
  double v = 0;
  try {
    v = std::stod(s, &pos);
  } catch (...) {
    pos = 0;
  }
  if (pos == 0 || pos != s.size() || !std::isfinite(v)) throw std::invalid_argument("a finite number");
  return v;
}

std::string show_double(double v) {
  std::string s = num_str(v);
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

// "[a, b, ...]" -> numbers; throws std::invalid_argument(expect) unless bracketed.
std::vector<double> parse_list(const std::string& s0, const char* expect) {
  const std::string s = trim(s0);
  if (s.size() < 2 || s.front() != '[' || s.back() != ']') throw std::invalid_argument(expect);
  std::stringstream ss(s.substr(1, s.size() - 2));
  std::vector<double> out;
  for (std::string item; std::getline(ss, item, ',');) out.push_back(parse_double(trim(item)));
  return out;
}

std::string show_list(const double* v, size_t n) {
  std::string out = "[";
  for (size_t i = 0; i < n; ++i) out += (i ? ", " : "") + show_double(v[i]);
  return out + "]";
}

// Levenshtein distance, for "did you mean".
size_t distance(const std::string& a, const std::string& b) {
  std::vector<size_t> d(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) d[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t prev = d[0];
    d[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t cur = d[j];
      d[j] = std::min({d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] == b[j - 1] ? 0 : 1)});
      prev = cur;
    }
  }
  return d[b.size()];
}

}  // namespace

void Fields::add(const std::string& key, int& v, const std::string& help) {
  fields_.push_back({key, "int", help, [&v](const std::string& s) {
                       int64_t x = parse_int(s);
                       if (x < INT32_MIN || x > INT32_MAX) throw std::invalid_argument("a 32-bit integer");
                       v = static_cast<int>(x);
                     },
                     [&v] { return std::to_string(v); }});
}
void Fields::add_count_or_auto(const std::string& key, int& v, const std::string& help) {
  fields_.push_back({key, "int|auto", help,
                     [&v](const std::string& s) {
                       if (s == "auto") {
                         v = kAuto;
                         return;
                       }
                       int64_t x = -1;  // not a number: refused below with the same expectation
                       try {
                         x = parse_int(s);
                       } catch (const std::invalid_argument&) {
                       }
                       if (x < 0 || x > INT32_MAX) throw std::invalid_argument("auto or an integer >= 0");
                       v = static_cast<int>(x);
                     },
                     [&v] { return v == kAuto ? std::string("auto") : std::to_string(v); }});
}
void Fields::add(const std::string& key, int64_t& v, const std::string& help) {
  fields_.push_back({key, "int", help, [&v](const std::string& s) { v = parse_int(s); },
                     [&v] { return std::to_string(v); }});
}
void Fields::add(const std::string& key, uint64_t& v, const std::string& help) {
  fields_.push_back({key, "int", help,
                     [&v](const std::string& s) {
                       int64_t x = parse_int(s);
                       if (x < 0) throw std::invalid_argument("a non-negative integer");
                       v = static_cast<uint64_t>(x);
                     },
                     [&v] { return std::to_string(v); }});
}
void Fields::add(const std::string& key, double& v, const std::string& help) {
  fields_.push_back({key, "float", help, [&v](const std::string& s) { v = parse_double(s); },
                     [&v] { return show_double(v); }});
}
void Fields::add(const std::string& key, bool& v, const std::string& help) {
  fields_.push_back({key, "bool", help,
                     [&v](const std::string& s) {
                       const std::string w = bool_word(s);
                       if (w.empty()) throw std::invalid_argument("true or false");
                       v = w == "true";
                     },
                     [&v] { return std::string(v ? "true" : "false"); }});
}
void Fields::add_bool_or_auto(const std::string& key, std::string& v, const std::string& help) {
  fields_.push_back({key, "bool|auto", help,
                     [&v](const std::string& s) {
                       const std::string w = s == "auto" ? s : bool_word(s);
                       if (w.empty()) throw std::invalid_argument("true, false or auto");
                       v = w;
                     },
                     [&v] { return v; }});
}
void Fields::add(const std::string& key, std::string& v, const std::string& help) {
  fields_.push_back({key, "string", help, [&v](const std::string& s) { v = s; },
                     [&v] {  // always quoted, so paths with ':' or '#' survive the YAML round trip
                       std::string q = "\"";
                       for (char c : v) q += (c == '"' || c == '\\') ? std::string("\\") + c : std::string(1, c);
                       return q + "\"";
                     }});
}
void Fields::add(const std::string& key, std::array<double, 3>& v, const std::string& help) {
  fields_.push_back({key, "3 floats", help,
                     [&v](const std::string& s) {
                       const char* expect = "a list of 3 numbers like [0.5, 0.5, 0.5]";
                       auto l = parse_list(s, expect);
                       if (l.size() != 3) throw std::invalid_argument(expect);
                       std::copy(l.begin(), l.end(), v.begin());
                     },
                     [&v] { return show_list(v.data(), v.size()); }});
}
void Fields::add(const std::string& key, std::vector<double>& v, const std::string& help) {
  fields_.push_back({key, "list of floats", help,
                     [&v](const std::string& s) {
                       auto l = parse_list(s, "a list of numbers like [0.5, 1.0, 1.5]");
                       if (l.empty()) throw std::invalid_argument("a non-empty list of numbers like [1.0]");
                       v = l;
                     },
                     [&v] { return show_list(v.data(), v.size()); }});
}
void Fields::add_choice(const std::string& key, std::string& v, std::vector<std::string> choices,
                        const std::string& help) {
  const std::string list = join(choices);
  fields_.push_back({key, "one of " + list, help,
                     [&v, choices, list](const std::string& s) {
                       if (std::find(choices.begin(), choices.end(), s) == choices.end())
                         throw std::invalid_argument("one of " + list);
                       v = s;
                     },
                     [&v] { return v; }});
}

const Fields::Field* Fields::find(const std::string& key) const {
  for (const auto& f : fields_)
    if (f.key == key) return &f;
  return nullptr;
}

void Fields::set(const std::string& key, const std::string& value, const std::string& origin) {
  const Field* f = find(key);
  if (!f) {
    std::vector<std::string> keys;
    for (const auto& g : fields_) keys.push_back(g.key);
    // The same name under another section says more than a few edits ("model.batch" is 2
    // from model.arch); then edits ("train.epoch"); then a name that starts with it.
    std::vector<std::string> near = same_name_elsewhere(key, keys, /*prefix=*/false);
    if (near.empty())
      if (auto best = closest(key, keys); !best.empty()) near.push_back(best);
    if (near.empty()) near = same_name_elsewhere(key, keys, /*prefix=*/true);
    std::string msg = origin + ": unknown key '" + key + "'";
    if (!near.empty()) {  // 'a', 'b' or 'c'
      for (auto& k : near) k = "'" + k + "'";
      const std::string last = near.back();
      near.pop_back();
      msg += " (did you mean " + (near.empty() ? last : join(near) + " or " + last) + "?)";
    }
    msg += "; valid keys:";
    for (const auto& g : fields_) msg += "\n  " + g.key + " (" + g.type + ")";
    throw Error(msg);
  }
  try {
    f->parse(trim(value));
  } catch (const std::invalid_argument& e) {
    throw Error(origin + ": key '" + key + "': expected " + e.what() + ", found '" + value + "'");
  }
  origins_[key] = origin;
}

std::string Fields::origin(const std::string& key) const {
  auto it = origins_.find(key);
  return it == origins_.end() ? "" : it->second;
}

void check_naming_origin(const Fields& f, const std::function<void()>& check) {
  try {
    check();
  } catch (const Error& e) {
    // The keys are the message's head: "model.arch: ..." or, for a relation between keys,
    // "view.scale_min/scale_max: ..." (the later names in the first one's section).
    const std::string msg = e.what();
    const size_t colon = msg.find(':');
    if (colon == std::string::npos ||
        msg.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_./ ") < colon)
      throw;
    std::vector<std::string> origins;
    std::string section;
    std::stringstream head(msg.substr(0, colon));
    for (std::string name; std::getline(head, name, '/');) {
      name = trim(name);
      const size_t dot = name.rfind('.');
      if (dot != std::string::npos) section = name.substr(0, dot);
      else if (!section.empty()) name = section + "." + name;
      const std::string o = f.origin(name);
      if (!o.empty() && std::find(origins.begin(), origins.end(), o) == origins.end()) origins.push_back(o);
    }
    if (origins.empty()) throw;
    std::string where;
    for (const auto& o : origins) where += (where.empty() ? "" : " and ") + o;
    throw Error(where + ": " + msg);
  }
}

void Fields::apply_overrides(const std::vector<std::string>& items, const std::string& origin) {
  for (const auto& it : items) {
    auto eq = it.find('=');
    if (eq == std::string::npos || eq == 0)
      throw Error(origin + ": expected key=value, found '" + it + "'");
    set(trim(it.substr(0, eq)), it.substr(eq + 1), origin);
  }
}

namespace {

// Nested maps to dotted keys; lists of scalars as "[a, b]", null as "".
void walk(const YAML::Node& n, const std::string& prefix, const std::string& origin,
          std::vector<std::pair<std::string, std::string>>& out) {
  if (n.IsMap()) {
    for (const auto& kv : n) {
      auto k = kv.first.as<std::string>();
      walk(kv.second, prefix.empty() ? k : prefix + "." + k, origin, out);
    }
  } else if (n.IsSequence()) {
    std::string s = "[";
    for (size_t i = 0; i < n.size(); ++i) {
      if (!n[i].IsScalar()) throw Error(origin + ": key '" + prefix + "': expected a list of numbers");
      s += (i ? ", " : "") + n[i].as<std::string>();
    }
    out.emplace_back(prefix, s + "]");
  } else if (n.IsScalar()) {
    out.emplace_back(prefix, n.as<std::string>());
  } else if (n.IsNull()) {
    out.emplace_back(prefix, "");
  }
}

std::vector<std::pair<std::string, std::string>> flatten(const YAML::Node& root, const std::string& origin) {
  std::vector<std::pair<std::string, std::string>> out;
  if (root.IsNull()) return out;
  if (!root.IsMap()) throw Error(origin + ": expected a YAML map of keys at the top");
  walk(root, "", origin, out);
  return out;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> flatten_yaml(const std::string& text, const std::string& origin) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw Error(origin + ": invalid YAML: " + e.what());
  }
  return flatten(root, origin);
}

void Fields::load_yaml_text(const std::string& text, const std::string& origin) {
  for (const auto& [k, v] : flatten_yaml(text, origin)) set(k, v, origin);
}

void Fields::load_yaml_file(const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    throw Error(path + ": config file not found or unreadable");
  } catch (const YAML::Exception& e) {
    throw Error(path + ": invalid YAML: " + e.what());
  }
  for (const auto& [k, v] : flatten(root, path)) set(k, v, path);
}

std::string Fields::to_yaml() const {
  // Keys are "section.name" (at most one level of nesting is used by cp2's configs).
  std::ostringstream o;
  std::string section;
  for (const auto& f : fields_) {
    auto dot = f.key.find('.');
    std::string sec = dot == std::string::npos ? "" : f.key.substr(0, dot);
    std::string name = dot == std::string::npos ? f.key : f.key.substr(dot + 1);
    if (sec != section) {
      section = sec;
      if (!sec.empty()) o << sec << ":\n";
    }
    o << (sec.empty() ? "" : "  ") << name << ": " << f.show() << "\n";
  }
  return o.str();
}

std::string Fields::value(const std::string& key) const {
  const Field* f = find(key);
  return f ? f->show() : "";
}

std::string Fields::describe() const {
  std::ostringstream o;
  size_t w = 0;
  for (const auto& f : fields_) w = std::max(w, f.key.size() + f.show().size() + 3);
  for (const auto& f : fields_) {
    std::string kv = f.key + " = " + f.show();
    o << "  " << kv << std::string(w + 2 - kv.size(), ' ') << f.help << "\n";
  }
  return o.str();
}

std::string closest(const std::string& word, const std::vector<std::string>& candidates, size_t max_distance) {
  std::string best;
  size_t bd = max_distance + 1;
  for (const auto& c : candidates) {
    const size_t d = distance(word, c);
    if (d < bd) bd = d, best = c;
  }
  return best;
}

std::vector<std::string> same_name_elsewhere(const std::string& key, const std::vector<std::string>& keys,
                                             bool prefix) {
  const auto leaf = [](const std::string& k) { return k.substr(k.rfind('.') + 1); };
  const std::string want = leaf(key);
  std::vector<std::string> found;
  if (prefix && want.size() < 3) return found;  // "n", "lr": the start of too many names
  for (const auto& k : keys) {
    const std::string l = leaf(k);
    if ((prefix ? l.compare(0, want.size(), want) == 0 : l == want) && found.size() < 4) found.push_back(k);
  }
  return found;
}

void require_at_least(const std::string& key, int64_t v, int64_t min) {
  if (v < min) throw Error(key + ": expected >= " + std::to_string(min) + ", found " + std::to_string(v));
}

void require_one_of(const std::string& key, int64_t v, std::initializer_list<int64_t> allowed) {
  std::vector<std::string> list;
  for (auto a : allowed) {
    if (a == v) return;
    list.push_back(std::to_string(a));
  }
  throw Error(key + ": expected one of " + join(list) + ", found " + std::to_string(v));
}

bool Sources::names(const std::string& key) const {
  for (const auto& [k, v] : flags)
    if (k == key) return true;
  for (const auto& s : sets) {
    auto eq = s.find('=');
    if (eq != std::string::npos && trim(s.substr(0, eq)) == key) return true;
  }
  return false;
}

void apply_sources(Fields& f, const Sources& src) {
  if (!src.file.empty()) f.load_yaml_file(src.file);
  else if (!src.stored_config.empty()) f.load_yaml_text(src.stored_config, src.stored_origin);
  for (const auto& [k, v] : src.flags) f.set(k, v, "command line");
  f.apply_overrides(src.sets);
}

}  // namespace cp2::config
