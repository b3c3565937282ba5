// Built-in real data: Fashion-MNIST (Debian's dataset-fashion-mnist: 70,000 28x28
// photographs of clothing in 10 classes, gzip'd IDX files) and the scenes cp2 builds from
// it — object-centric pretraining images (the ImageNet stand-in) and multi-item scenes
// with per-pixel labels (the VOC stand-in). Everything is drawn from (seed, index).
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <opencv2/core/mat.hpp>

namespace cp2::data {

// An IDX array (Yann LeCun's MNIST format): dims and unsigned-byte data, row-major.
struct IdxArray {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;
};
// Reads a gzip'd (or plain) IDX file of unsigned bytes; throws naming the file for a
// missing or unreadable file, a wrong magic number, or data shorter than the dims say.
IdxArray read_idx(const std::string& path);

// Where Debian installs it.
inline const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";
const std::array<const char*, 10>& fashion_mnist_classes();  // "T-shirt/top", ...
// The four coarse groups ("top", "trousers", "footwear", "bag") and the group of each of
// the ten classes: tops are T-shirt, pullover, dress, coat and shirt; footwear sandal,
// sneaker and ankle boot. Five of the ten classes are tops that differ only in sleeves
// and length, which a CPU-sized finetuning does not learn to tell apart (docs/results.md).
const std::array<const char*, 4>& fashion_mnist_coarse_classes();
int fashion_mnist_coarse_of(int cls);
// "coarse" -> true, "fine" -> false; anything else an error naming `key` (the option).
bool parse_fashion_classes(const std::string& value, const std::string& key);

struct FashionMnist {
  int64_t count = 0;
  std::vector<uint8_t> images;  // count x 28 x 28
  std::vector<uint8_t> labels;  // 0..9
  const uint8_t* image(int64_t i) const { return images.data() + i * 28 * 28; }
};
// split "train" (60,000) or "t10k" (10,000); throws naming the file (and the package).
FashionMnist load_fashion_mnist(const std::string& dir, const std::string& split);

struct SceneOptions {
  int width = 96, height = 96;
  int min_items = 1, max_items = 4;  // per segmentation scene
  double item_min = 0.35, item_max = 0.7;  // item size as a share of the shorter side
  int boundary = 1;                       // width of the 255 band around items (0 = none)
  // Background kinds drawn from, in order gradient, noise, stripes, blobs, tiles: 5 = all,
  // 1 = gradients only (`cp2 synth --backgrounds plain`; they did not make finetuning
  // learn faster: docs/results.md).
  int background_kinds = 5;
  bool coarse = false;  // labels 1..4 = the coarse groups instead of 1..10 = the classes
};

// An item placed in a scene: which Fashion-MNIST image, and its class (0..9).
struct PlacedItem {
  int64_t index = 0;
  int cls = 0;
};

// A procedural background (gradient, noise, stripes, blobs or tiles), RGB.
cv::Mat draw_background(int width, int height, uint64_t seed, uint64_t key, int kinds = 5);

// A pretraining image: one item scaled up, tinted and textured, off-centre on a background.
cv::Mat draw_object_image(const FashionMnist& items, const SceneOptions& o, uint64_t seed, uint64_t key,
                          PlacedItem* placed = nullptr);

// A segmentation scene: 1..4 items that may overlap (the later one wins), RGB image and
// labels (0 background, 1..10 = class + 1 (coarse: 1..4 = group + 1), 255 on a thin band
// along each item's edge).
struct Scene {
  cv::Mat image;  // CV_8UC3, RGB
  cv::Mat label;  // CV_8UC1
  std::vector<PlacedItem> items;
};
Scene draw_scene(const FashionMnist& items, const SceneOptions& o, uint64_t seed, uint64_t key);

}  // namespace cp2::data
