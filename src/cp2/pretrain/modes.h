// What each pretraining mode switches, in one table (SPEC §4: Table 6's rows, and MoCo v2
// itself, the Quick Tuning base). The model, the config (which also sets the views'
// copy-paste from it), the report and the ablation protocol read it. Light header: no LibTorch.
#pragma once
#include <string>
#include <vector>

namespace cp2::pretrain {

enum class Mode { Cp2, InstanceOnly, DenseOnly, NoCopyPaste, Moco };

struct ModeSpec {
  Mode mode;
  const char* name;   // model.mode's value
  bool copy_paste;    // composite views with paste masks (else plain views, masks all ones)
  bool instance;      // the instance (InfoNCE) loss
  bool dense;         // the dense loss
  bool moco_encoder;  // MoCo v2's encoder (ResNet at stride 32 + MLP), not the segmentor
};

const std::vector<ModeSpec>& modes();               // in Table 6's order, then moco
const ModeSpec& mode_spec(Mode m);
const ModeSpec& mode_spec(const std::string& name);  // throws naming the value and listing the modes
std::vector<std::string> mode_names();               // cp2, instance-only, dense-only, no-copy-paste, moco
inline Mode parse_mode(const std::string& s) { return mode_spec(s).mode; }

}  // namespace cp2::pretrain
