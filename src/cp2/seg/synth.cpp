#include "cp2/seg/synth.h"

#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <tuple>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "cp2/common.h"
#include "cp2/data/fashion_mnist.h"
#include "cp2/data/rng.h"
#include "cp2/seg/classes.h"
#include "cp2/seg/label_png.h"

namespace fs = std::filesystem;

namespace cp2::seg {

namespace {

void mkdirs(const fs::path& p) {
  std::error_code ec;
  fs::create_directories(p, ec);
  if (ec) throw Error(p.string() + ": cannot create folder (" + ec.message() + ")");
}

// One image and its labels (0 = background, 1..classes = shapes, 255 = outline).
std::pair<cv::Mat, cv::Mat> draw(const SynthSegOptions& o, uint64_t key) {
  auto rng = data::Rng::derive(o.seed, {0x5E65, key});
  cv::Mat img(o.height, o.width, CV_8UC3), lab(o.height, o.width, CV_8UC1, cv::Scalar(0));
  cv::Vec3b c0(rng.randint(0, 128), rng.randint(0, 128), rng.randint(0, 128));
  cv::Vec3b c1(rng.randint(0, 128), rng.randint(0, 128), rng.randint(0, 128));
  for (int y = 0; y < o.height; ++y)
    for (int x = 0; x < o.width; ++x) {
      const double t = static_cast<double>(x + y) / (o.width + o.height);
      for (int c = 0; c < 3; ++c) img.at<cv::Vec3b>(y, x)[c] = cv::saturate_cast<uint8_t>(c0[c] * (1 - t) + c1[c] * t);
    }
  const auto pal = voc_palette(o.classes + 2);
  for (int s = 0; s < o.shapes; ++s) {
    const int cls = 1 + static_cast<int>(rng.randint(0, o.classes));
    const auto& col = pal[cls + 1];  // skip black
    cv::Scalar colour(std::min(255, col[0] + 60), std::min(255, col[1] + 60), std::min(255, col[2] + 60));
    const int rw = static_cast<int>(rng.randint(o.width / 6 + 1, o.width / 3 + 2));
    const int rh = static_cast<int>(rng.randint(o.height / 6 + 1, o.height / 3 + 2));
    cv::Point c(static_cast<int>(rng.randint(rw / 2, o.width - rw / 2)),
                static_cast<int>(rng.randint(rh / 2, o.height - rh / 2)));
    if (rng.bernoulli(0.5)) {
      cv::ellipse(img, c, cv::Size(rw / 2, rh / 2), 0, 0, 360, colour, cv::FILLED);
      cv::ellipse(lab, c, cv::Size(rw / 2, rh / 2), 0, 0, 360, cv::Scalar(cls), cv::FILLED);
      if (o.boundaries) cv::ellipse(lab, c, cv::Size(rw / 2, rh / 2), 0, 0, 360, cv::Scalar(255), 1);
    } else {
      cv::Rect r(c.x - rw / 2, c.y - rh / 2, rw, rh);
      cv::rectangle(img, r, colour, cv::FILLED);
      cv::rectangle(lab, r, cv::Scalar(cls), cv::FILLED);
      if (o.boundaries) cv::rectangle(lab, r, cv::Scalar(255), 1);
    }
  }
  // Mild noise so the images are not flat colours.
  cv::Mat noise(o.height, o.width, CV_8UC3);
  cv::randu(noise, cv::Scalar::all(0), cv::Scalar::all(16));
  img += noise;
  cv::cvtColor(img, img, cv::COLOR_RGB2BGR);  // drawn as RGB, written by OpenCV as BGR
  return {img, lab};
}

// Labels through a 256-entry table built from `f`.
template <class Fn>
cv::Mat relabel(const cv::Mat& lab, Fn f) {
  cv::Mat lut(1, 256, CV_8U), out;
  for (int v = 0; v < 256; ++v) lut.at<uint8_t>(v) = static_cast<uint8_t>(f(v));
  cv::LUT(lab, lut, out);
  return out;
}

void write_img(const fs::path& p, const cv::Mat& m) {
  mkdirs(p.parent_path());
  if (!cv::imwrite(p.string(), m)) throw Error(p.string() + ": cannot write image");
}

void write_lab(const fs::path& p, const cv::Mat& lab) {
  mkdirs(p.parent_path());
  auto t = torch::from_blob(lab.data, {lab.rows, lab.cols}, torch::kUInt8).clone();
  write_label_png(p.string(), t, voc_palette());
}

}  // namespace

std::pair<std::string, std::string> write_synthetic_dataset(const std::string& root_s, const SynthSegOptions& o) {
  if (o.train < 1 || o.val < 1 || o.width < 16 || o.height < 16 || o.classes < 1 || o.shapes < 1)
    throw Error("synth: expected train, val, classes, shapes >= 1 and size >= 16x16, found train " +
                std::to_string(o.train) + ", val " + std::to_string(o.val) + ", classes " + std::to_string(o.classes) +
                ", shapes " + std::to_string(o.shapes) + ", size " + std::to_string(o.width) + "x" +
                std::to_string(o.height));
  const bool fashion = o.source == "fashion-mnist";
  if (!fashion && o.source != "shapes")
    throw Error("synth --source: expected shapes or fashion-mnist, found '" + o.source + "'");
  // Fashion-MNIST items: training scenes from its train split, validation scenes from t10k.
  data::FashionMnist fm_train, fm_val;
  data::SceneOptions so;
  if (fashion) {
    const std::string dir = o.fashion_dir.empty() ? data::kFashionMnistDir : o.fashion_dir;
    fm_train = data::load_fashion_mnist(dir, "train");
    fm_val = data::load_fashion_mnist(dir, "t10k");
    so.width = o.width;
    so.height = o.height;
    so.max_items = o.max_items;
    if (o.backgrounds != "all" && o.backgrounds != "plain")
      throw Error("synth --backgrounds: expected all or plain, found '" + o.backgrounds + "'");
    so.background_kinds = o.backgrounds == "plain" ? 1 : 5;
    so.coarse = data::parse_fashion_classes(o.fashion_classes, "synth --fashion-classes");
  }
  const int classes = fashion ? (so.coarse ? 4 : 10) : o.classes;
  const fs::path root = root_s;
  const bool voc = o.layout == "voc", city = o.layout == "cityscapes", ade = o.layout == "ade20k",
             list = o.layout == "list";
  if (!voc && !city && !ade && !list) throw Error("synth: layout must be voc, cityscapes, ade20k or list, found '" + o.layout + "'");
  if (voc && classes > 20) throw Error("synth: voc has 20 foreground classes");
  if (city && classes > 19) throw Error("synth: cityscapes has 19 classes");
  mkdirs(root);
  std::pair<std::string, std::string> splits;
  for (int s = 0; s < 2; ++s) {
    const bool train = s == 0;
    const int n = train ? o.train : o.val;
    std::ofstream listing;
    if (voc) {
      mkdirs(root / "ImageSets/Segmentation");
      const std::string split = train ? "ImageSets/Segmentation/train_aug.txt" : "ImageSets/Segmentation/val.txt";
      listing.open(root / split);
      (train ? splits.first : splits.second) = split;
    } else if (list) {
      const std::string split = train ? "train.txt" : "val.txt";
      listing.open(root / split);
      (train ? splits.first : splits.second) = split;
    } else {
      (train ? splits.first : splits.second) = city ? (train ? "train" : "val") : (train ? "training" : "validation");
    }
    for (int i = 0; i < n; ++i) {
      const uint64_t key = static_cast<uint64_t>(s) << 32 | static_cast<uint64_t>(i);
      cv::Mat img, lab;
      if (fashion) {
        auto scene = data::draw_scene(train ? fm_train : fm_val, so, o.seed, key);
        cv::cvtColor(scene.image, img, cv::COLOR_RGB2BGR);
        lab = scene.label;
      } else {
        std::tie(img, lab) = draw(o, key);
      }
      char id[64];
      std::snprintf(id, sizeof id, "%s_%06d", train ? "train" : "val", i);
      if (voc) {
        write_img(root / "JPEGImages" / (std::string(id) + ".jpg"), img);
        write_lab(root / "SegmentationClassAug" / (std::string(id) + ".png"), lab);
        if (fashion) write_lab(root / "SegmentationClass" / (std::string(id) + ".png"), lab);  // VOC's palette copy
        listing << id << "\n";
      } else if (list) {
        write_img(root / "images" / (std::string(id) + ".png"), img);
        write_lab(root / "labels" / (std::string(id) + ".png"), lab);
        listing << "images/" << id << ".png labels/" << id << ".png\n";
      } else if (city) {
        // Foreground class k -> train id k - 1, background -> road (0); as labelIds, the
        // train id's Cityscapes id (255 -> 0, "unlabeled").
        static const int id_of_train[19] = {7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33};
        cv::Mat out = relabel(lab, [&](int v) {
          // Fashion: item class c (label c + 1) is train id c + 1, background road (0).
          const int t = v == 255 ? 255 : fashion ? v : (v == 0 ? 0 : v - 1);
          return o.label_ids ? (t == 255 ? 0 : id_of_train[t]) : t;
        });
        const std::string city_name = i % 2 ? "aachen" : "bremen";
        const std::string stem = city_name + "_000000_" + std::string(id);
        const auto split = train ? "train" : "val";
        write_img(root / "leftImg8bit" / split / city_name / (stem + "_leftImg8bit.png"), img);
        write_lab(root / "gtFine" / split / city_name /
                      (stem + (o.label_ids ? "_gtFine_labelIds.png" : "_gtFine_labelTrainIds.png")),
                  out);
      } else {
        // ADE20k: background -> "wall" (file value 1), class k -> k + 1; 0 would be "other".
        cv::Mat out = relabel(lab, [](int v) { return v == 255 ? 0 : v + 1; });
        const auto split = train ? "training" : "validation";
        write_img(root / "images" / split / (std::string("ADE_") + id + ".jpg"), img);
        write_lab(root / "annotations" / split / (std::string("ADE_") + id + ".png"), out);
      }
    }
  }
  if (list || fashion) {  // the list type's names; the other layouts' readers rename their first classes
    std::ofstream c(root / "classes.txt");
    c << "background\n";
    for (size_t k = 0; k < static_cast<size_t>(classes); ++k) {
      if (!fashion) c << "shape_" << k + 1 << "\n";
      else c << (so.coarse ? data::fashion_mnist_coarse_classes()[k] : data::fashion_mnist_classes()[k]) << "\n";
    }
  }
  return splits;
}

}  // namespace cp2::seg
