#include "cp2/seg/dataset.h"

#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "cp2/common.h"
#include "cp2/data/image.h"
#include "cp2/seg/classes.h"

namespace fs = std::filesystem;

namespace cp2::seg {

namespace {

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

void need_dir(const fs::path& p, const std::string& type, const std::string& what) {
  std::error_code ec;
  if (!fs::is_directory(p, ec))
    throw Error(type + " layout: expected " + what + " at " + p.string() + " (not found)");
}

std::vector<std::string> read_lines(const fs::path& p, const std::string& what) {
  std::ifstream f(p);
  if (!f) throw Error(what + ": cannot read " + p.string());
  std::vector<std::string> out;
  std::string line;
  while (std::getline(f, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.pop_back();
    size_t s = line.find_first_not_of(" \t");
    if (s == std::string::npos) continue;
    out.push_back(line.substr(s));
  }
  return out;
}

std::vector<fs::path> sorted_files(const fs::path& dir, const std::string& suffix) {
  std::vector<fs::path> out;
  for (auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file() && ends_with(e.path().filename().string(), suffix)) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

std::string default_split(const std::string& type, bool train) {
  if (type == "voc") return train ? "ImageSets/Segmentation/train_aug.txt" : "ImageSets/Segmentation/val.txt";
  if (type == "cityscapes") return train ? "train" : "val";
  if (type == "ade20k") return train ? "training" : "validation";
  return "";
}

void DatasetOptions::validate() const {
  if (type != "voc" && type != "cityscapes" && type != "ade20k" && type != "list")
    throw Error("data.type: expected voc, cityscapes, ade20k or list, found '" + type + "'");
  if (root.empty()) throw Error("data.root: expected the dataset folder, found an empty string");
  if (type == "list" && classes_file.empty()) throw Error("data.classes_file: the list type needs a file of class names");
}

SegDataset::SegDataset(DatasetOptions o) : opt_(std::move(o)) {
  opt_.validate();
  data::opencv_in_callers_thread_only();  // the pipeline's resizes and HSV conversions
  if (opt_.type == "list" && opt_.split.empty())
    throw Error("data.train_split / data.val_split: the list type needs a list file (\"image label\" lines)");
  const fs::path root = opt_.root;
  const std::string split = opt_.split.empty() ? default_split(opt_.type, true) : opt_.split;
  need_dir(root, opt_.type, "the dataset root");
  auto missing_label = [](const fs::path& img, const fs::path& lab) {
    throw Error("image " + img.string() + " has no label: expected " + lab.string());
  };
  std::error_code ec;
  classes_ = classes_of(opt_.type);
  palette_ = palette_of(opt_.type);
  // A dataset may name its classes in classes.txt at its root (one per line in label
  // order, background first; cp2 synth writes one for Fashion-MNIST scenes): the names
  // replace the layout's first ones in reports and evaluations; the class count stays
  // the layout's, so models and checkpoints are unchanged.
  if (opt_.type != "list" && fs::is_regular_file(root / "classes.txt", ec)) {
    const auto names = read_lines(root / "classes.txt", "classes.txt");
    if (names.size() > classes_.size())
      throw Error((root / "classes.txt").string() + ": expected at most " + std::to_string(classes_.size()) +
                  " class names for the " + opt_.type + " layout, found " + std::to_string(names.size()));
    std::copy(names.begin(), names.end(), classes_.begin());
  }
  if (opt_.type == "voc") {
    const std::string ann = opt_.ann_dir.empty() ? "SegmentationClassAug" : opt_.ann_dir;
    need_dir(root / "JPEGImages", "voc", "JPEGImages/");
    need_dir(root / ann, "voc", ann + "/ (data.ann_dir: SegmentationClassAug or SegmentationClass)");
    const fs::path list = root / split;
    if (!fs::is_regular_file(list, ec))
      throw Error("voc layout: expected the split file " + list.string() +
                  " (data.train_split / data.val_split; SBD converters write train_aug.txt, trainaug.txt or aug.txt)");
    for (const auto& id : read_lines(list, "voc split")) {
      fs::path img = root / "JPEGImages" / (id + ".jpg"), lab = root / ann / (id + ".png");
      if (!fs::exists(img, ec)) throw Error(list.string() + ": lists '" + id + "' but " + img.string() + " is missing");
      if (!fs::exists(lab, ec)) missing_label(img, lab);
      items_.emplace_back(img.string(), lab.string());
    }
  } else if (opt_.type == "cityscapes") {
    const fs::path idir = root / "leftImg8bit" / split, ldir = root / "gtFine" / split;
    need_dir(idir, "cityscapes", "leftImg8bit/" + split + "/<city>/");
    need_dir(ldir, "cityscapes", "gtFine/" + split + "/<city>/");
    const std::string suf = "_leftImg8bit.png";
    for (const auto& img : sorted_files(idir, suf)) {
      const auto rel = fs::relative(img.parent_path(), idir);
      const auto stem = img.filename().string().substr(0, img.filename().string().size() - suf.size());
      fs::path train_ids = ldir / rel / (stem + "_gtFine_labelTrainIds.png");
      fs::path ids = ldir / rel / (stem + "_gtFine_labelIds.png");
      if (fs::exists(train_ids, ec)) items_.emplace_back(img.string(), train_ids.string());
      else if (fs::exists(ids, ec)) items_.emplace_back(img.string(), ids.string());
      else missing_label(img, train_ids);
    }
  } else if (opt_.type == "ade20k") {
    const fs::path idir = root / "images" / split, ldir = root / "annotations" / split;
    need_dir(idir, "ade20k", "images/" + split + "/");
    need_dir(ldir, "ade20k", "annotations/" + split + "/");
    for (const auto& img : sorted_files(idir, ".jpg")) {
      fs::path lab = ldir / fs::relative(img, idir);
      lab.replace_extension(".png");
      if (!fs::exists(lab, ec)) missing_label(img, lab);
      items_.emplace_back(img.string(), lab.string());
    }
  } else {
    classes_ = read_lines(root / opt_.classes_file, "data.classes_file");
    if (classes_.empty() || classes_.size() > 255)
      throw Error("data.classes_file: expected 1..255 class names in " + (root / opt_.classes_file).string() +
                  ", found " + std::to_string(classes_.size()));
    const fs::path list = root / split;
    int n = 0;
    for (const auto& line : read_lines(list, "list file")) {
      ++n;
      std::istringstream is(line);
      std::string img, lab, extra;
      is >> img >> lab;
      if (img.empty() || lab.empty() || (is >> extra))
        throw Error(list.string() + ":" + std::to_string(n) + ": expected 'image label', found '" + line + "'");
      fs::path ip = root / img, lp = root / lab;
      if (!fs::exists(ip, ec)) throw Error(list.string() + ":" + std::to_string(n) + ": image " + ip.string() + " is missing");
      if (!fs::exists(lp, ec)) missing_label(ip, lp);
      items_.emplace_back(ip.string(), lp.string());
    }
  }
  if (items_.empty()) throw Error(opt_.type + " dataset at " + root.string() + ", split '" + split + "': no images");
}

at::Tensor SegDataset::image(int64_t i) const { return data::read_image(image_path(i)).permute({1, 2, 0}).contiguous(); }

at::Tensor SegDataset::label(int64_t i, int64_t h, int64_t w) {
  const auto& path = label_path(i);
  auto lab = read_label_png(path, opt_.type == "voc" ? &palette_ : nullptr);
  if (lab.size(0) != h || lab.size(1) != w)
    throw Error(path + ": label is " + std::to_string(lab.size(1)) + "x" + std::to_string(lab.size(0)) + ", its image " +
                image_path(i) + " is " + std::to_string(w) + "x" + std::to_string(h));
  // One pass through a table: the dataset's convention (ADE20k: mmseg's reduce_zero_label;
  // Cityscapes labelIds -> train ids), then values outside the classes -> 255, flagged.
  std::array<uint8_t, 256> to{};
  std::array<bool, 256> out_of_range{};
  const bool ade = opt_.type == "ade20k", ids = opt_.type == "cityscapes" && ends_with(path, "_labelIds.png");
  for (int v = 0; v < 256; ++v) {
    int t = ade ? (v == 0 || v == 255 ? 255 : v - 1) : ids ? cityscapes_train_id(v) : v;
    out_of_range[v] = t >= num_classes() && t != 255;
    to[v] = static_cast<uint8_t>(out_of_range[v] ? 255 : t);
  }
  uint8_t* p = lab.data_ptr<uint8_t>();
  const int64_t n = lab.numel();
  int64_t bad = 0;
  for (int64_t k = 0; k < n; ++k) {
    bad += out_of_range[p[k]];
    p[k] = to[p[k]];
  }
  if (bad) {
    std::lock_guard<std::mutex> lk(mu_);
    stats_.pixels += bad;
    if (stats_.files++ == 0) stats_.first_file = path;
  }
  return lab;
}

LabelStats SegDataset::take_label_stats() {
  std::lock_guard<std::mutex> lk(mu_);
  LabelStats s = stats_;
  stats_ = {};
  return s;
}

}  // namespace cp2::seg
