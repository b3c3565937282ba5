#include "cp2/seg/predict.h"

#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "cp2/common.h"
#include "cp2/data/image.h"
#include "cp2/io/atomic_file.h"
#include "cp2/seg/inference.h"

namespace fs = std::filesystem;

namespace cp2::seg {

at::Tensor overlay(const at::Tensor& image, const at::Tensor& labels, const Palette& palette, double alpha) {
  auto img = image.contiguous();
  auto lab = labels.contiguous();
  auto out = torch::empty_like(img);
  const uint8_t* s = img.data_ptr<uint8_t>();
  const uint8_t* l = lab.data_ptr<uint8_t>();
  uint8_t* d = out.data_ptr<uint8_t>();
  const int64_t n = lab.numel();
  for (int64_t i = 0; i < n; ++i)
    for (int c = 0; c < 3; ++c) {
      const double v = s[i * 3 + c];
      d[i * 3 + c] = l[i] < palette.size() && l[i] != 255
                         ? static_cast<uint8_t>(std::lround(v * (1 - alpha) + palette[l[i]][c] * alpha))
                         : s[i * 3 + c];
    }
  return out;
}

namespace {

// Whether `inner` is `outer` or lies inside it (both absolute and normalised).
bool within(const fs::path& inner, const fs::path& outer) {
  auto i = inner.begin();
  for (auto o = outer.begin(); o != outer.end(); ++o, ++i) {
    if (o->empty()) continue;  // a trailing separator
    if (i == inner.end() || *i != *o) return false;
  }
  return true;
}

fs::path canonical_or_absolute(const fs::path& p) {
  std::error_code ec;
  auto c = fs::weakly_canonical(p, ec);
  return ec ? fs::absolute(p).lexically_normal() : c;
}

// The deepest folder holding every path (each absolute and normalised).
fs::path common_folder(const std::vector<fs::path>& folders) {
  fs::path common = folders.front();
  for (size_t k = 1; k < folders.size(); ++k) {
    fs::path next;
    auto a = common.begin(), b = folders[k].begin();
    for (; a != common.end() && b != folders[k].end() && *a == *b; ++a, ++b) next /= *a;
    common = next;
  }
  return common;
}

}  // namespace

PredictResult predict_files(FinetunedModel& m, const std::vector<std::string>& inputs_given, const EvalOptions& eo,
                            const PredictOptions& po, bool progress) {
  eo.validate();
  if (!(po.alpha >= 0 && po.alpha <= 1)) throw Error("--alpha: expected 0..1, found " + num_str(po.alpha));
  if (inputs_given.empty()) throw Error("predict: no image or folder given");
  std::error_code ec;
  std::vector<std::string> inputs;  // as given (messages, progress)
  std::vector<fs::path> canon;       // each input's canonical path
  std::set<fs::path> seen;           // the same: an image named twice (itself and in its folder) is predicted once
  std::vector<fs::path> folders;     // where each input lies: outputs mirror the paths below their common folder
  const fs::path out = canonical_or_absolute(po.out);
  auto add = [&](const std::string& f) {
    fs::path c = canonical_or_absolute(f);
    if (!seen.insert(c).second) return;
    inputs.push_back(f);
    canon.push_back(std::move(c));
  };
  for (const auto& input : inputs_given) {
    if (fs::is_directory(input, ec)) {
      folders.push_back(canonical_or_absolute(input));
      if (within(out, folders.back()))
        throw Error("--out " + po.out + ": inside the input folder " + input +
                    " (predictions could overwrite or be read as inputs); choose a folder outside it");
      for (auto& f : data::list_images(input)) {
        const std::string name = fs::path(f).filename().string();
        const bool overlay_file = name.size() > 12 && name.compare(name.size() - 12, 12, "_overlay.jpg") == 0;
        if (!overlay_file) add(f);
      }
    } else if (fs::is_regular_file(input, ec)) {
      add(input);
      folders.push_back(canonical_or_absolute(fs::path(input).parent_path().empty() ? "." : fs::path(input).parent_path()));
    } else {
      throw Error(input + ": no such image or folder");
    }
  }
  const fs::path base = common_folder(folders);
  // Output stems: a/b/x.jpg -> out/a/b/x; inputs sharing a stem in one folder keep their extension apart.
  std::vector<fs::path> stems;
  std::map<fs::path, int> uses;
  for (size_t i = 0; i < inputs.size(); ++i) {
    fs::path rel = fs::relative(canon[i], base, ec);
    if (ec || rel.empty()) rel = fs::path(inputs[i]).filename();
    stems.push_back(rel.parent_path() / rel.stem());
    ++uses[stems.back()];
  }
  for (size_t i = 0; i < inputs.size(); ++i)
    if (uses[stems[i]] > 1) {
      std::string ext = fs::path(inputs[i]).extension().string();
      if (!ext.empty()) ext[0] = '_';  // ".png" -> "_png"
      stems[i] = stems[i].parent_path() / (stems[i].filename().string() + ext);
    }
  // Whatever the folders, no output file may be an input (a single image inside --out).
  for (const auto& stem : stems)
    for (const char* suffix : {".png", "_overlay.jpg"})
      if (seen.count(canonical_or_absolute(out / (stem.string() + suffix))))
        throw Error("--out " + po.out + ": would write " + (out / (stem.string() + suffix)).string() +
                    ", an input; choose another folder");
  fs::create_directories(out, ec);
  if (ec) throw Error(po.out + ": cannot create folder (" + ec.message() + ")");
  PredictResult res;
  // A predict killed during a write left its temp file (NAME.<pid>.tmp) in the folder it was
  // writing; each folder is cleared of those before this run's first write into it.
  std::set<fs::path> swept;
  auto sweep = [&](const fs::path& dir) {
    if (!swept.insert(dir).second) return;
    const auto gone = io::remove_killed_writes(dir.string());
    res.removed_temps.insert(res.removed_temps.end(), gone.paths.begin(), gone.paths.end());
    if (const auto line = io::describe(gone, dir.string()); !line.empty()) std::fprintf(stderr, "%s\n", line.c_str());
  };
  for (size_t i = 0; i < inputs.size(); ++i) {
    at::Tensor img;
    try {
      img = data::read_image(inputs[i]).permute({1, 2, 0}).contiguous();
    } catch (const Error& e) {
      if (!po.skip_bad) throw Error(std::string(e.what()) + " (--skip-bad continues past unreadable images)");
      res.bad.push_back(e.what());
      if (progress) std::fprintf(stderr, "[%zu/%zu] skipped: %s\n", i + 1, inputs.size(), e.what());
      continue;
    }
    auto labels = eval::predicted_class(predict_probs(*m.model, img, eo), 0).to(torch::kCPU).to(torch::kUInt8);
    const fs::path stem = out / stems[i];
    fs::create_directories(stem.parent_path(), ec);
    sweep(stem.parent_path());
    const std::string lab_path = stem.string() + ".png";
    write_label_png(lab_path, labels, m.palette);
    res.labels.push_back(lab_path);
    if (po.overlays) {
      auto ov = overlay(img, labels, m.palette, po.alpha);
      cv::Mat rgb(static_cast<int>(ov.size(0)), static_cast<int>(ov.size(1)), CV_8UC3, ov.data_ptr<uint8_t>()), bgr;
      cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
      const std::string ov_path = stem.string() + "_overlay.jpg";
      std::vector<uchar> bytes;
      if (!cv::imencode(".jpg", bgr, bytes)) throw Error(ov_path + ": cannot encode image");
      io::write_file_atomic(ov_path, std::string(bytes.begin(), bytes.end()));
      res.overlays.push_back(ov_path);
    }
    if (progress) std::fprintf(stderr, "[%zu/%zu] %s -> %s\n", i + 1, inputs.size(), inputs[i].c_str(), lab_path.c_str());
  }
  return res;
}

}  // namespace cp2::seg
