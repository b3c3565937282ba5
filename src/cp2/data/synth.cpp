#include "cp2/data/synth.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "cp2/common.h"
#include "cp2/data/fashion_mnist.h"
#include "cp2/data/rng.h"

namespace fs = std::filesystem;

namespace cp2::data {

namespace {

// The ImageNet stand-in: object-centric images of Fashion-MNIST's train split.
std::vector<std::string> write_fashion_images(const std::string& root, const SynthOptions& o) {
  const auto items = load_fashion_mnist(o.fashion_dir.empty() ? kFashionMnistDir : o.fashion_dir, "train");
  SceneOptions so;
  so.width = o.width;
  so.height = o.height;
  std::vector<std::string> paths(static_cast<size_t>(o.count));
  // Every image from (seed, i): threads change nothing but the time.
  const auto errors = for_each_index(o.count, std::max(1, get_threads()), [&](int64_t i) {
    PlacedItem item;
    cv::Mat rgb = draw_object_image(items, so, o.seed, static_cast<uint64_t>(i), &item), bgr;
    fs::path dir = root;
    if (o.classes > 0) dir /= "class_" + std::to_string(item.cls % o.classes);
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) throw Error(dir.string() + ": cannot create folder (" + ec.message() + ")");
    cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
    char name[64];
    std::snprintf(name, sizeof name, "fm_%06lld.%s", static_cast<long long>(i), o.ext.c_str());
    const auto path = (dir / name).string();
    if (!cv::imwrite(path, bgr)) throw Error(path + ": cannot write image");
    paths[static_cast<size_t>(i)] = path;
  });
  for (const auto& e : errors)
    if (!e.empty()) throw Error(e);
  return paths;
}

}  // namespace

std::vector<std::string> write_synthetic_images(const std::string& root, const SynthOptions& o) {
  if (o.count < 1 || o.width < 8 || o.height < 8)
    throw Error("synth: expected count >= 1 and size >= 8x8, found count " + std::to_string(o.count) + ", " +
                std::to_string(o.width) + "x" + std::to_string(o.height));
  if (o.ext != "jpg" && o.ext != "png") throw Error("synth --ext: expected jpg or png, found '" + o.ext + "'");
  if (o.source == "fashion-mnist") return write_fashion_images(root, o);
  if (o.source != "shapes") throw Error("synth --source: expected shapes or fashion-mnist, found '" + o.source + "'");
  std::vector<std::string> paths;
  for (int i = 0; i < o.count; ++i) {
    Rng rng = Rng::derive(o.seed, {0x5157, static_cast<uint64_t>(i)});
    fs::path dir = root;
    if (o.classes > 0) dir /= "class_" + std::to_string(i % o.classes);
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) throw Error(dir.string() + ": cannot create folder (" + ec.message() + ")");
    cv::Mat img(o.height, o.width, CV_8UC3);
    // Smooth two-colour gradient background.
    cv::Vec3b c0(rng.randint(0, 256), rng.randint(0, 256), rng.randint(0, 256));
    cv::Vec3b c1(rng.randint(0, 256), rng.randint(0, 256), rng.randint(0, 256));
    const double angle = rng.uniform(0, 6.2831853);
    for (int y = 0; y < o.height; ++y)
      for (int x = 0; x < o.width; ++x) {
        double t = 0.5 + 0.5 * std::sin(angle + (std::cos(angle) * x + std::sin(angle) * y) * 6.0 / o.width);
        for (int c = 0; c < 3; ++c) img.at<cv::Vec3b>(y, x)[c] = cv::saturate_cast<uint8_t>(c0[c] * (1 - t) + c1[c] * t);
      }
    // A few filled shapes of distinct colours.
    const int shapes = 2 + static_cast<int>(rng.randint(0, 4));
    for (int s = 0; s < shapes; ++s) {
      cv::Scalar col(rng.randint(0, 256), rng.randint(0, 256), rng.randint(0, 256));
      cv::Point c(rng.randint(0, o.width), rng.randint(0, o.height));
      int r = static_cast<int>(rng.randint(o.height / 10 + 1, o.height / 3 + 2));
      if (rng.bernoulli(0.5)) cv::circle(img, c, r, col, cv::FILLED, cv::LINE_AA);
      else cv::rectangle(img, c - cv::Point(r, r / 2), c + cv::Point(r, r), col, cv::FILLED);
    }
    auto path = (dir / ("img_" + std::to_string(i) + "." + o.ext)).string();
    if (!cv::imwrite(path, img)) throw Error(path + ": cannot write image");
    paths.push_back(path);
  }
  return paths;
}

}  // namespace cp2::data
