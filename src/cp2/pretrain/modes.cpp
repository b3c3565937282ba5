#include "cp2/pretrain/modes.h"

#include "cp2/common.h"

namespace cp2::pretrain {

const std::vector<ModeSpec>& modes() {
  // SPEC §4's table: no copy-paste = plain views with all-ones masks and the instance loss
  // only; instance-/dense-only drop the other term; moco = MoCo v2 (plain views, instance
  // loss, its own encoder), the Quick Tuning base.
  static const std::vector<ModeSpec> m{
      // mode               name             copy-paste instance dense  moco encoder
      {Mode::Cp2,          "cp2",           true,      true,    true,  false},
      {Mode::InstanceOnly, "instance-only", true,      true,    false, false},
      {Mode::DenseOnly,    "dense-only",    true,      false,   true,  false},
      {Mode::NoCopyPaste,  "no-copy-paste", false,     true,    false, false},
      {Mode::Moco,         "moco",          false,     true,    false, true},
  };
  return m;
}

const ModeSpec& mode_spec(Mode mode) {
  for (const auto& s : modes())
    if (s.mode == mode) return s;
  throw Error("mode: not in the mode table");  // unreachable: every enum value is listed
}

std::vector<std::string> mode_names() {
  std::vector<std::string> n;
  for (const auto& s : modes()) n.push_back(s.name);
  return n;
}

const ModeSpec& mode_spec(const std::string& name) {
  for (const auto& s : modes())
    if (name == s.name) return s;
  throw Error("mode: expected one of " + join(mode_names()) + "; found '" + name + "'");
}

}  // namespace cp2::pretrain
