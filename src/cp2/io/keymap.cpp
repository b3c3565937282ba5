#include "cp2/io/keymap.h"

#include <map>

#include "cp2/common.h"

namespace cp2::io {

namespace {
bool starts(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
std::string strip(const std::string& s, const std::string& p) { return starts(s, p) ? s.substr(p.size()) : s; }
bool any_starts(const TensorList& sd, const std::string& p) {
  for (const auto& kv : sd)
    if (starts(kv.first, p)) return true;
  return false;
}
}  // namespace

Preset parse_preset(const std::string& name, const std::string& key, bool allow_auto) {
  if (name == "auto" && allow_auto) return Preset::Auto;
  if (name == "torchvision") return Preset::Torchvision;
  if (name == "moco") return Preset::Moco;
  if (name == "cp2") return Preset::Cp2;
  if (name == "mmseg") return Preset::Mmseg;
  throw Error(key + ": expected one of " + (allow_auto ? "auto, " : "") + preset_names() + ", found '" + name + "'");
}

std::string preset_name(Preset p) {
  switch (p) {
    case Preset::Auto: return "auto";
    case Preset::Torchvision: return "torchvision";
    case Preset::Moco: return "moco";
    case Preset::Cp2: return "cp2";
    case Preset::Mmseg: return "mmseg";
  }
  return "?";
}

std::string preset_names() { return "torchvision, moco, cp2, mmseg"; }

TensorList find_state_dict(const Checkpoint& ck) {
  py::ObjPtr node = ck.root;
  if (node->kind != py::Kind::Dict)
    throw Error(ck.path + ": expected a dict at the top of the checkpoint, found " + node->type_name());
  for (const char* k : {"state_dict", "model"}) {
    auto sub = node->get(k);
    if (sub && sub->kind == py::Kind::Dict) { node = sub; break; }
  }
  TensorList out;
  for (auto& [k, v] : flatten(node))
    if (v->kind == py::Kind::Tensor) out.emplace_back(k, v->tensor);
  if (out.empty()) throw Error(ck.path + ": the checkpoint holds no tensors");
  return out;
}

Preset detect_preset(const TensorList& sd, const std::string& path) {
  for (const char* m : {"module.", ""}) {
    std::string q = std::string(m) + "encoder_q.";
    if (any_starts(sd, q + "backbone.") || any_starts(sd, q + "decode_head.")) return Preset::Cp2;
    if (any_starts(sd, q + "conv1.") || any_starts(sd, q + "layer1.")) return Preset::Moco;
  }
  if (any_starts(sd, "backbone.")) return Preset::Mmseg;
  if (any_starts(sd, "conv1.") && any_starts(sd, "layer1.")) return Preset::Torchvision;
  std::string first;
  for (size_t k = 0; k < sd.size() && k < 5; ++k) first += (k ? ", " : "") + sd[k].first;
  throw Error(path + ": cannot tell the checkpoint's key layout (first keys: " + first +
              "); name it with --from (" + preset_names() + ")");
}

Mapped map_to_segmentor(const Checkpoint& ck, Preset from) {
  TensorList sd = find_state_dict(ck);
  Mapped m;
  m.preset = from == Preset::Auto ? detect_preset(sd, ck.path) : from;
  for (const auto& [key, t] : sd) {
    std::string out;
    switch (m.preset) {
      case Preset::Torchvision:
        if (!starts(key, "fc.")) out = "backbone." + key;
        break;
      case Preset::Moco: {
        std::string k = strip(strip(key, "module."), "encoder_q.");
        if (starts(strip(key, "module."), "encoder_q.") && !starts(k, "fc.")) out = "backbone." + k;
        break;
      }
      case Preset::Cp2: {
        std::string k = strip(key, "module.");
        // The CP² authors' ASPPHead always builds a 21-class conv_seg that pretraining never
        // trains: reported as dropped, never loaded.
        if ((starts(k, "encoder_q.backbone.") || starts(k, "encoder_q.decode_head.")) &&
            !starts(k, "encoder_q.decode_head.conv_seg."))
          out = strip(k, "encoder_q.");
        break;
      }
      case Preset::Mmseg:
        if (starts(key, "backbone.") || starts(key, "decode_head.")) out = key;
        break;
      case Preset::Auto:
        break;
    }
    if (out.empty()) m.dropped.push_back(key);
    else m.tensors.emplace_back(out, t);
  }
  if (m.tensors.empty()) {
    std::string hint;
    try {
      const Preset d = detect_preset(sd, ck.path);
      if (d != m.preset)
        hint = "; its keys are the " + preset_name(d) + " layout: use the preset '" + preset_name(d) +
               "' (--init-preset / --from " + preset_name(d) + ") or auto";
    } catch (const Error&) {
    }
    throw Error(ck.path + ": preset '" + preset_name(m.preset) + "' maps none of the file's " +
                std::to_string(sd.size()) + " tensors (first key: " + sd.front().first + ")" + hint);
  }
  return m;
}

py::ObjPtr export_layout(const TensorList& seg, Preset to) {
  TensorList backbone, all;
  for (const auto& [k, t] : seg) {
    if (starts(k, "backbone.")) backbone.emplace_back(strip(k, "backbone."), t);
    if (starts(k, "backbone.") || starts(k, "decode_head.")) all.emplace_back(k, t);
  }
  auto need = [&](const TensorList& l, const char* what) {
    if (l.empty()) throw Error(std::string("nothing to export: the input has no ") + what + " tensors");
  };
  switch (to) {
    case Preset::Torchvision:
      need(backbone, "backbone");
      return to_state_dict(backbone);
    case Preset::Moco: {
      need(backbone, "backbone");
      TensorList q;
      for (const auto& [k, t] : backbone) q.emplace_back("module.encoder_q." + k, t);
      auto root = py::dict();
      py::set(root, "state_dict", to_state_dict(q));
      return root;
    }
    case Preset::Mmseg: {
      need(all, "backbone/decode_head");
      auto root = py::dict();
      py::set(root, "state_dict", to_state_dict(all));
      py::set(root, "meta", py::dict());
      return root;
    }
    case Preset::Cp2: {
      need(all, "backbone/decode_head");
      auto root = py::dict();
      auto meta = py::dict();
      py::set(meta, "format", py::integer(1));
      py::set(meta, "kind", py::str("segmentor"));
      py::set(root, "cp2", meta);
      py::set(root, "model", to_state_dict(all));
      return root;
    }
    case Preset::Auto:
      break;
  }
  throw Error("convert --to: expected one of " + preset_names());
}

std::vector<std::string> dropped_lines(const std::vector<std::string>& dropped, size_t listed) {
  auto prefix = [](const std::string& k) {
    const size_t first = k.find('.');
    if (first == std::string::npos) return k;  // a top-level key is its own group
    const size_t second = k.find('.', first + 1);
    return second == std::string::npos ? k.substr(0, first) : k.substr(0, second);
  };
  std::vector<std::string> order;
  std::map<std::string, std::vector<std::string>> groups;
  for (const auto& k : dropped) {
    const std::string p = prefix(k);
    auto& g = groups[p];
    if (g.empty()) order.push_back(p);
    g.push_back(k);
  }
  std::vector<std::string> lines;
  for (const auto& p : order) {
    const auto& g = groups[p];
    if (g.size() <= listed)
      lines.insert(lines.end(), g.begin(), g.end());
    else
      lines.push_back(p + ".* (" + std::to_string(g.size()) + " tensors)");
  }
  return lines;
}

}  // namespace cp2::io
