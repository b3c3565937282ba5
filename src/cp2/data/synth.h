// Generated image folders: random shapes on smooth backgrounds, for tests, benchmarks
// and the built-in demo data (no download needed).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace cp2::data {

struct SynthOptions {
  int count = 64;
  int width = 160, height = 120;
  int classes = 4;          // root/class_<c>/img_<i>.<ext>; 0 = flat folder
  std::string ext = "jpg";  // jpg or png
  uint64_t seed = 0;
  // "shapes" (drawn primitives) or "fashion-mnist" (one Fashion-MNIST item per image,
  // scaled, tinted, textured, off-centre on a procedural background; train split only;
  // class folders are the item's class when classes > 0).
  std::string source = "shapes";
  std::string fashion_dir;  // "" = Debian's /usr/share/datasets/fashion-mnist
};

// Writes the images, creating folders; returns their paths. Same seed, same files.
std::vector<std::string> write_synthetic_images(const std::string& root, const SynthOptions& o);

}  // namespace cp2::data
