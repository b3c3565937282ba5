#include "cp2/seg/model.h"

#include <torch/torch.h>

#include <filesystem>
#include <map>

#include "cp2/common.h"
#include "cp2/config/fields.h"
#include "cp2/models/init.h"
#include "cp2/seg/classes.h"
#include "cp2/seg/config.h"
#include "cp2/train/run_folder.h"

namespace fs = std::filesystem;

namespace cp2::seg {

namespace {

bool starts(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

const at::Tensor* find(const io::TensorList& sd, const std::string& key) {
  for (const auto& [k, t] : sd)
    if (k == key) return &t;
  return nullptr;
}

}  // namespace

models::Segmentor make_segmentor(const models::SegmentorOptions& o, uint64_t seed) {
  torch::manual_seed(seed);
  models::Segmentor m(o);
  models::init_weights(*m, seed);
  return m;
}

std::string InitResult::str() const {
  return "initialised from a " + io::preset_name(preset) + "-layout checkpoint (" + std::to_string(dropped.size()) +
         " tensors not used: projection, classifier, fc, key encoder, queue):\n" + report.str();
}

InitResult init_from_pretrained(models::SegmentorImpl& m, const std::string& path, io::Preset preset) {
  auto ck = io::load_checkpoint(path);
  auto mapped = io::map_to_segmentor(ck, preset);
  InitResult r;
  r.preset = mapped.preset;
  r.dropped = mapped.dropped;
  io::TensorList keep;
  for (auto& [k, t] : mapped.tensors) {
    // The authors finetune the query encoder's backbone + ASPP; the projection has no
    // counterpart and the classifier is trained from its init (SPEC §2).
    if (starts(k, "decode_head.contrast_conv.") || starts(k, "decode_head.conv_seg.")) r.dropped.push_back(k);
    else keep.emplace_back(k, t);
  }
  r.report = io::load_state(m, keep, /*strict=*/false, path);
  if (!r.report.mismatched.empty()) {
    const auto& mm = r.report.mismatched[0];
    throw Error(path + ": does not fit the model (" + std::to_string(r.report.mismatched.size()) +
                " mis-shaped tensors, first: " + mm.key + " expected " + shape_str(mm.expected) + ", found " +
                shape_str(mm.found) + "); check model.arch / model.head_channels");
  }
  return r;
}

models::SegmentorOptions infer_segmentor_options(const io::TensorList& sd, int output_stride, const std::string& path) {
  const bool bottleneck = find(sd, "backbone.layer1.0.conv3.weight") != nullptr;
  std::vector<int> blocks(4, 0);
  for (const auto& [k, t] : sd)
    for (int l = 0; l < 4; ++l) {
      const std::string p = "backbone.layer" + std::to_string(l + 1) + ".";
      if (starts(k, p)) {
        const int b = std::atoi(k.c_str() + p.size());
        blocks[l] = std::max(blocks[l], b + 1);
      }
    }
  const std::map<std::vector<int>, int> depths_b{{{3, 4, 6, 3}, 50}, {{3, 4, 23, 3}, 101}, {{3, 8, 36, 3}, 152}};
  const std::map<std::vector<int>, int> depths_s{{{2, 2, 2, 2}, 18}, {{3, 4, 6, 3}, 34}};
  const auto& table = bottleneck ? depths_b : depths_s;
  auto it = table.find(blocks);
  auto list = [&] {
    return std::to_string(blocks[0]) + "," + std::to_string(blocks[1]) + "," + std::to_string(blocks[2]) + "," +
           std::to_string(blocks[3]);
  };
  if (it == table.end())
    throw Error(path + ": cannot tell the ResNet depth (blocks per stage " + list() + ", " +
                (bottleneck ? "bottleneck" : "basic") + " blocks)");
  const auto* seg = find(sd, "decode_head.conv_seg.weight");
  const auto* bott = find(sd, "decode_head.bottleneck.conv.weight");
  if (!seg || !bott)
    throw Error(path + ": not a finetuned DeepLabV3 (expected decode_head.conv_seg.weight and "
                "decode_head.bottleneck.conv.weight)");
  models::SegmentorOptions o;
  o.backbone.depth = it->second;
  o.backbone.output_stride = output_stride;
  o.head.channels = static_cast<int>(bott->size(0));
  o.head.proj_channels = 0;
  o.head.num_classes = static_cast<int>(seg->size(0));
  return o;
}

std::string resolve_model_file(const std::string& file_or_run) {
  std::error_code ec;
  if (fs::is_regular_file(file_or_run, ec)) return file_or_run;
  if (!fs::is_directory(file_or_run, ec)) throw Error(file_or_run + ": no such model file or run folder");
  if (fs::is_regular_file(fs::path(file_or_run) / "best.pt", ec)) return (fs::path(file_or_run) / "best.pt").string();
  auto last = train::latest_checkpoint(file_or_run);
  if (last.empty()) throw Error(file_or_run + ": run folder holds no best.pt and no checkpoints/checkpoint_*.pt");
  return last;
}

FinetunedFile read_finetuned(const std::string& file_or_run) {
  FinetunedFile f;
  f.path = resolve_model_file(file_or_run);
  auto ck = io::load_checkpoint(f.path);
  auto sd = io::map_to_segmentor(ck, io::Preset::Auto);
  if (sd.preset != io::Preset::Mmseg)
    throw Error(f.path + ": a " + io::preset_name(sd.preset) +
                "-layout checkpoint holds no trained classifier; finetune it first (cp2 finetune --init " + f.path + ")");
  if (auto c = ck.root->get("config"); c && c->kind == py::Kind::Str) f.config_text = c->s;
  f.tensors = std::move(sd.tensors);
  f.root = ck.root;
  return f;
}

ModelSettings model_settings(const FinetunedFile& file, const SegModelConfig& model, const config::Sources& src) {
  return {model, !file.config_text.empty() || src.names("model.arch") || src.names("model.head_channels")};
}

FinetunedModel load_finetuned(const std::string& file_or_run) {
  auto file = read_finetuned(file_or_run);
  FinetuneConfig cfg;
  if (!file.config_text.empty()) cfg.fields().load_yaml_text(file.config_text, file.path + " (stored config)");
  return build_finetuned(file, {cfg.model, !file.config_text.empty()});
}

FinetunedModel build_finetuned(const FinetunedFile& file, const ModelSettings& settings) {
  FinetunedModel out;
  out.path = file.path;
  out.config_text = file.config_text;
  FinetuneConfig cfg;  // the stored dataset type names the classes of files without meta
  if (!file.config_text.empty()) cfg.fields().load_yaml_text(file.config_text, file.path + " (stored config)");
  const auto& mc = settings.model;
  auto opt = infer_segmentor_options(file.tensors, mc.output_stride, file.path);
  if (settings.check_shapes && opt.backbone.depth != mc.arch)
    throw Error("model.arch: " + std::to_string(mc.arch) + " asked, " + file.path + " holds a ResNet-" +
                std::to_string(opt.backbone.depth));
  if (settings.check_shapes && opt.head.channels != mc.head_channels)
    throw Error("model.head_channels: " + std::to_string(mc.head_channels) + " asked, " + file.path + " holds " +
                std::to_string(opt.head.channels) + "-channel ASPP");
  opt.head.align_corners = mc.align_corners;
  opt.head.dropout = mc.dropout;
  out.model = models::Segmentor(opt);
  io::load_state(*out.model, file.tensors, /*strict=*/true, file.path);
  out.model->eval();
  // Class names: mmseg's meta.CLASSES, else the stored dataset type's, else numbers.
  if (auto meta = file.root->get("meta"); meta && meta->get("CLASSES")) {
    for (const auto& c : meta->get("CLASSES")->items)
      if (c->kind == py::Kind::Str) out.classes.push_back(c->s);
  }
  if (auto meta = file.root->get("meta"); meta && meta->get("PALETTE")) {
    for (const auto& c : meta->get("PALETTE")->items)
      if (c->items.size() == 3)
        out.palette.push_back({static_cast<uint8_t>(c->items[0]->i), static_cast<uint8_t>(c->items[1]->i),
                               static_cast<uint8_t>(c->items[2]->i)});
  }
  const int C = opt.head.num_classes;
  if (static_cast<int>(out.classes.size()) != C) out.classes = classes_of(cfg.data.type);
  if (static_cast<int>(out.classes.size()) != C) {
    out.classes.clear();
    for (int c = 0; c < C; ++c) out.classes.push_back("class " + std::to_string(c));
  }
  if (static_cast<int>(out.palette.size()) < C) out.palette = palette_of(cfg.data.type);
  if (static_cast<int>(out.palette.size()) < C) out.palette = voc_palette();
  return out;
}

}  // namespace cp2::seg
