#include "cp2/seg/predict.h"

#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "cp2/common.h"
#include "cp2/data/image.h"
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

std::vector<std::string> predict_files(FinetunedModel& m, const std::string& input, const EvalOptions& eo,
                                       const PredictOptions& po, bool progress) {
  eo.validate();
  if (!(po.alpha >= 0 && po.alpha <= 1)) throw Error("--alpha: expected 0..1, found " + std::to_string(po.alpha));
  std::error_code ec;
  std::vector<std::string> inputs;
  fs::path base;
  if (fs::is_directory(input, ec)) {
    inputs = data::list_images(input);
    base = input;
  } else if (fs::is_regular_file(input, ec)) {
    inputs = {input};
    base = fs::path(input).parent_path();
  } else {
    throw Error(input + ": no such image or folder");
  }
  fs::create_directories(po.out, ec);
  if (ec) throw Error(po.out + ": cannot create folder (" + ec.message() + ")");
  std::vector<std::string> written;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const auto img = data::read_image(inputs[i]).permute({1, 2, 0}).contiguous();
    auto labels = predict_probs(*m.model, img, eo).argmax(0).to(torch::kCPU).to(torch::kUInt8);
    // Keep sub-folders of a folder input apart: a/b/x.jpg -> out/a/b/x.png.
    fs::path rel = fs::relative(inputs[i], base, ec);
    if (ec || rel.empty()) rel = fs::path(inputs[i]).filename();
    const fs::path stem = fs::path(po.out) / rel.parent_path() / rel.stem();
    fs::create_directories(stem.parent_path(), ec);
    const std::string lab_path = stem.string() + ".png";
    write_label_png(lab_path, labels, m.palette);
    written.push_back(lab_path);
    if (po.overlays) {
      auto ov = overlay(img, labels, m.palette, po.alpha);
      cv::Mat rgb(static_cast<int>(ov.size(0)), static_cast<int>(ov.size(1)), CV_8UC3, ov.data_ptr<uint8_t>()), bgr;
      cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
      const std::string ov_path = stem.string() + "_overlay.jpg";
      if (!cv::imwrite(ov_path, bgr)) throw Error(ov_path + ": cannot write image");
    }
    if (progress) std::fprintf(stderr, "[%zu/%zu] %s -> %s\n", i + 1, inputs.size(), inputs[i].c_str(), lab_path.c_str());
  }
  return written;
}

}  // namespace cp2::seg
