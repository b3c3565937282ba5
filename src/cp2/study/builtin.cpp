#include "cp2/study/builtin.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "cp2/common.h"
#include "cp2/config/fields.h"
#include "cp2/data/fashion_mnist.h"
#include "cp2/data/synth.h"
#include "cp2/io/atomic_file.h"
#include "cp2/seg/synth.h"
#include "cp2/train/run_folder.h"

namespace cp2::study {

namespace fs = std::filesystem;

void BuiltinData::validate() const {
  using config::require_at_least;  // "<flag>: expected >= N, found V", as the config keys
  require_at_least("--images", images, 8);
  require_at_least("--image-size", image_size, 32);
  require_at_least("--train-scenes", train_scenes, 4);
  require_at_least("--val-scenes", val_scenes, 1);
  require_at_least("--scene-width", scene_width, 32);
  require_at_least("--scene-height", scene_height, 32);
  data::parse_fashion_classes(fashion_classes, "--fashion-classes");
}

namespace {

// Writes `folder` with `write` unless its stamp says it holds exactly `stamp`.
template <class Write>
std::string once(const fs::path& folder, const std::string& stamp, Write write) {
  const fs::path mark = folder / ".cp2-builtin";
  std::ifstream in(mark);
  std::stringstream have;
  have << in.rdbuf();
  if (in && have.str() == stamp) return train::absolute_path(folder.string());
  fs::remove_all(folder);  // written with other options, or interrupted half way
  write(folder.string());
  io::write_file_atomic(mark.string(), stamp);
  return train::absolute_path(folder.string());
}

std::string common_stamp(const BuiltinData& o) {
  return "fashion-mnist v2 seed " + std::to_string(o.seed) + " from " + (o.fashion_dir.empty() ? "debian" : o.fashion_dir) + "\n";
}

}  // namespace

std::string builtin_images(const std::string& dir, const BuiltinData& o) {
  o.validate();
  const std::string stamp = common_stamp(o) + "images " + std::to_string(o.images) + " size " + std::to_string(o.image_size) + "\n";
  return once(fs::path(dir) / "pretrain", stamp, [&](const std::string& f) {
    data::SynthOptions so;
    so.count = o.images;
    so.width = so.height = o.image_size;
    so.classes = 0;
    so.seed = o.seed;
    so.source = "fashion-mnist";
    so.fashion_dir = o.fashion_dir;
    data::write_synthetic_images(f, so);
  });
}

std::string builtin_seg(const std::string& dir, const std::string& layout, const BuiltinData& o) {
  o.validate();
  if (layout != "voc" && layout != "cityscapes" && layout != "ade20k")
    throw Error("built-in segmentation data: layout must be voc, cityscapes or ade20k, found '" + layout + "'");
  const std::string stamp = common_stamp(o) + layout + " train " + std::to_string(o.train_scenes) + " val " +
                            std::to_string(o.val_scenes) + " size " + std::to_string(o.scene_width) + "x" +
                            std::to_string(o.scene_height) + " classes " + o.fashion_classes + "\n";
  return once(fs::path(dir) / layout, stamp, [&](const std::string& f) {
    seg::SynthSegOptions so;
    so.layout = layout;
    so.train = o.train_scenes;
    so.val = o.val_scenes;
    so.width = o.scene_width;
    so.height = o.scene_height;
    so.seed = o.seed;
    so.source = "fashion-mnist";
    so.fashion_dir = o.fashion_dir;
    so.fashion_classes = o.fashion_classes;
    seg::write_synthetic_dataset(f, so);
  });
}

}  // namespace cp2::study
