// cp2 convert: list a checkpoint's keys, or rewrite it in another key layout.
#include <cstdio>
#include <filesystem>
#include <string>

#include "commands.h"
#include "cp2/common.h"
#include "cp2/io/keymap.h"
#include "cp2/io/weights.h"
#include "cp2/models/segmentor.h"
#include "cp2/train/run_folder.h"

namespace cp2::app {

namespace {

struct ConvertArgs {
  std::string in, out, from = "auto", to = "torchvision";
  bool list = false, strict = false;
  int arch = 0, output_stride = 16;
};

std::string describe(const py::ObjPtr& v) {
  switch (v->kind) {
    case py::Kind::Tensor: {
      const auto& t = v->tensor;
      return shape_str(std::vector<long>(t.sizes().begin(), t.sizes().end())) + " " + std::string(c10::toString(t.scalar_type()));
    }
    case py::Kind::Int: return "int " + std::to_string(v->i);
    case py::Kind::Float: return "float " + num_str(v->f);
    case py::Kind::Bool: return std::string("bool ") + (v->b ? "True" : "False");
    case py::Kind::Str: return "str '" + v->s.substr(0, 60) + "'";
    default: return v->type_name();
  }
}

int run_convert(ConvertArgs a) {
  // Said before a long read of IN, not after it (rename's "Is a directory").
  if (!a.list && a.out.empty()) throw Error("convert: OUT is required unless --list is given");
  std::error_code ec;
  if (!a.list && std::filesystem::is_directory(a.out, ec))
    throw Error("convert OUT " + a.out + ": is a folder; expected the checkpoint file to write (e.g. " +
                (std::filesystem::path(a.out) / "model.pt").string() + ")");
  a.in = train::init_checkpoint(a.in, "convert IN");  // a run folder: its newest checkpoint
  io::Checkpoint ck = io::load_checkpoint(a.in);
  const char* fmt = ck.format == io::Format::Zip ? "zip" : "legacy";
  if (a.list) {
    auto leaves = io::flatten(ck.root);
    std::printf("# %s (%s format): %zu entries\n", a.in.c_str(), fmt, leaves.size());
    for (const auto& [k, v] : leaves) std::printf("%s\t%s\n", k.c_str(), describe(v).c_str());
    return 0;
  }
  const io::Preset to = io::parse_preset(a.to, "--to", /*allow_auto=*/false);
  io::Mapped m = io::map_to_segmentor(ck, io::parse_preset(a.from, "--from"));
  std::printf("read %s (%s format), layout %s: %zu tensors mapped, %zu dropped\n", a.in.c_str(), fmt,
              io::preset_name(m.preset).c_str(), m.tensors.size(), m.dropped.size());
  for (const auto& k : io::dropped_lines(m.dropped)) std::printf("  dropped: %s\n", k.c_str());
  if (a.arch) {
    models::SegmentorOptions so;
    so.backbone.depth = a.arch;
    so.backbone.output_stride = a.output_stride;
    models::Segmentor seg(so);
    auto r = io::load_state(*seg, m.tensors, a.strict, a.in);
    std::printf("%s\n", r.str().c_str());
  }
  io::save_checkpoint(a.out, io::export_layout(m.tensors, to));
  std::printf("wrote %s (%s layout)\n", a.out.c_str(), a.to.c_str());
  return 0;
}

}  // namespace

Command register_convert(CLI::App& app) {
  auto a = std::make_shared<ConvertArgs>();
  auto* c = app.add_subcommand("convert", "List a PyTorch checkpoint's keys, or rewrite it in another key layout");
  c->add_option("IN", a->in, "input checkpoint (zip or legacy torch.save file), or a cp2 run folder (its newest checkpoint)")->required();
  c->add_option("OUT", a->out, "output checkpoint (zip format, readable by torch.load)");
  c->add_flag("--list", a->list, "print every key with shape and dtype (nested dicts joined with dots)");
  c->add_option("--from", a->from, "input key layout: auto, " + io::preset_names())->capture_default_str();
  c->add_option("--to", a->to, "output key layout: " + io::preset_names())->capture_default_str();
  auto* arch = c->add_option("--arch", a->arch, "also load into a ResNet-N segmentor and print the load report (18/34/50/101)");
  c->add_option("--output-stride", a->output_stride, "output stride of that model (8/16/32)")->capture_default_str()->needs(arch);
  c->add_flag("--strict", a->strict, "with --arch: fail on any missing, unexpected or mis-shaped key")->needs(arch);
  return {c, [a] { return run_convert(*a); }};
}

}  // namespace cp2::app
