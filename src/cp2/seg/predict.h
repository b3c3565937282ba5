// `cp2 predict`: label PNGs in the dataset's palette and blended overlays.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "cp2/seg/config.h"
#include "cp2/seg/model.h"

namespace cp2::seg {

// H x W x 3 uint8: image * (1 - alpha) + palette colour * alpha (label 255 left as is).
at::Tensor overlay(const at::Tensor& image, const at::Tensor& labels, const Palette& palette, double alpha);

struct PredictOptions {
  std::string out;       // output folder
  double alpha = 0.5;    // overlay opacity
  bool overlays = true;
  bool skip_bad = false;  // continue past unreadable images (listed in the result)
};

struct PredictResult {
  std::vector<std::string> labels, overlays;  // files written
  std::vector<std::string> bad;               // "image: error" for each image skipped
  std::vector<std::string> removed_temps;     // temp files a killed predict had left where this one wrote
};

// Predicts every image (files, and folders listed recursively); writes <stem>.png
// (palette-indexed labels) and <stem>_overlay.jpg into `out`, atomically, mirroring the
// inputs' paths below the deepest folder that holds them all (one folder: its own
// layout; photos/*.jpg: flat); an image named twice is predicted once. Never writes
// over an input: `out` may not be an input folder or inside one, earlier overlays
// (*_overlay.jpg) are not inputs, and inputs sharing a stem in one folder (a.jpg,
// a.png) are written as <stem>_<ext>.png.
PredictResult predict_files(FinetunedModel& m, const std::vector<std::string>& images_or_folders, const EvalOptions& eo,
                            const PredictOptions& po, bool progress);

}  // namespace cp2::seg
