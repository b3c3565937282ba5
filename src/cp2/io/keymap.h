// Named, explicit key-mapping presets between checkpoint layouts and cp2's segmentor
// names (`backbone.*`, `decode_head.*`). No fuzzy matching: a key maps by rule or is dropped.
#pragma once
#include <string>
#include <vector>

#include "cp2/io/checkpoint.h"

namespace cp2::io {

enum class Preset {
  Auto,         // detect from the keys
  Torchvision,  // conv1.weight, layer1.0..., fc.* (dropped)
  Moco,         // [module.]encoder_q.* (MoCo v2 release; fc, encoder_k, queue dropped)
  Cp2,          // [module.]encoder_q.backbone.* / .decode_head.* (CP² authors' and cp2's pretraining)
  Mmseg,        // backbone.* / decode_head.* (mmsegmentation, cp2's segmentor checkpoints)
};

// Throws "KEY: expected one of auto, torchvision, ..., found 'x'". An output layout
// (allow_auto false) is a real one: auto is refused and not listed.
Preset parse_preset(const std::string& name, const std::string& key = "train.init_preset", bool allow_auto = true);
std::string preset_name(Preset p);
std::string preset_names();                    // "torchvision, moco, cp2, mmseg"

// The state dict inside a checkpoint: root["state_dict"], root["model"] or root itself;
// tensor leaves only, nested keys joined with dots.
TensorList find_state_dict(const Checkpoint& ck);

// Detects the layout of a state dict; throws naming the file and its first keys.
Preset detect_preset(const TensorList& sd, const std::string& path);

struct Mapped {
  Preset preset = Preset::Auto;  // resolved preset
  TensorList tensors;            // segmentor names
  std::vector<std::string> dropped;
};

// Maps a checkpoint's tensors to segmentor names with the given (or detected) preset.
Mapped map_to_segmentor(const Checkpoint& ck, Preset from);

// Dropped keys for a person to read, in first-seen order: keys under one prefix (their
// first two dotted parts, or all but the last part of a shorter key) one per line while
// there are at most `listed` of them, else one line "prefix.* (N tensors)". A pretraining
// checkpoint's key encoder is one line instead of ~300.
std::vector<std::string> dropped_lines(const std::vector<std::string>& dropped, size_t listed = 4);

// Segmentor-named tensors to a layout (the inverse direction); returns the file's root.
// torchvision: a bare OrderedDict of the backbone; moco: {"state_dict": module.encoder_q.*};
// mmseg: {"state_dict": backbone.*, decode_head.*, "meta": {}}; cp2: {"model": ..., "cp2": {...}}.
py::ObjPtr export_layout(const TensorList& segmentor_tensors, Preset to);

}  // namespace cp2::io
