// Built-in real data: the IDX reader, Debian's Fashion-MNIST, and the scenes built from it
// (object-centric pretraining images; multi-item segmentation scenes in the real layouts).
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <zlib.h>

#include <filesystem>
#include <opencv2/imgproc.hpp>
#include <set>

#include "../helpers.h"
#include "cp2/data/fashion_mnist.h"
#include "cp2/data/synth.h"
#include "cp2/seg/classes.h"
#include "cp2/seg/dataset.h"
#include "cp2/seg/synth.h"

namespace fs = std::filesystem;

namespace cp2::test {
namespace {

void write_gz(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
  gzclose(f);
}

std::string be32(uint32_t v) {
  return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}

// A tiny Fashion-MNIST look-alike: `n` items per split whose classes are `first`..`first+4`
// (a filled square, so every item has a clear shape).
void write_tiny_split(const std::string& dir, const std::string& split, int n, int first) {
  std::string img = std::string("\0\0\x08\x03", 4) + be32(n) + be32(28) + be32(28), lab = std::string("\0\0\x08\x01", 4) + be32(n);
  for (int i = 0; i < n; ++i) {
    std::string px(28 * 28, '\0');
    for (int y = 6; y < 22; ++y)
      for (int x = 6; x < 22; ++x) px[y * 28 + x] = static_cast<char>(200);
    img += px;
    lab += static_cast<char>(first + i % 5);
  }
  write_gz(dir + "/" + split + "-images-idx3-ubyte.gz", img);
  write_gz(dir + "/" + split + "-labels-idx1-ubyte.gz", lab);
}

TEST(Idx, GoodTruncatedWrongMagicMissing) {
  const auto dir = temp_dir("idx");
  write_gz(dir + "/good.gz", std::string("\0\0\x08\x02", 4) + be32(2) + be32(3) + "abcdef");
  auto a = data::read_idx(dir + "/good.gz");
  EXPECT_EQ(a.dims, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(std::string(a.data.begin(), a.data.end()), "abcdef");
  write_gz(dir + "/short.gz", std::string("\0\0\x08\x02", 4) + be32(2) + be32(3) + "abc");
  expect_error([&] { data::read_idx(dir + "/short.gz"); }, {"short.gz", "truncated", "expected 6 bytes", "found 3"});
  write_gz(dir + "/magic.gz", std::string("\0\0\x0d\x02", 4) + be32(2) + be32(3) + "abcdef");
  expect_error([&] { data::read_idx(dir + "/magic.gz"); }, {"magic.gz", "magic expected 00 00 08 0N, found 00 00 0d 02"});
  { std::ofstream(dir + "/broken.gz", std::ios::binary) << std::string("\x1f\x8b\x08\x00garbage", 12); }
  expect_error([&] { data::read_idx(dir + "/broken.gz"); }, {"broken.gz"});
  expect_error([&] { data::read_idx(dir + "/none.gz"); }, {"none.gz", "dataset-fashion-mnist"});
}

TEST(FashionMnist, DebiansFilesLoad) {
  auto train = data::load_fashion_mnist(data::kFashionMnistDir, "train");
  auto test = data::load_fashion_mnist(data::kFashionMnistDir, "t10k");
  EXPECT_EQ(train.count, 60000);
  EXPECT_EQ(test.count, 10000);
  std::vector<int> per(10, 0);
  for (auto l : train.labels) ++per[l];
  for (int c = 0; c < 10; ++c) EXPECT_EQ(per[c], 6000) << c;
  EXPECT_EQ(std::string(data::fashion_mnist_classes()[9]), "Ankle boot");
}

TEST(FashionScenes, LabelsMatchPixelsAndAreDeterministic) {
  auto items = data::load_fashion_mnist(data::kFashionMnistDir, "t10k");
  data::SceneOptions o;
  o.width = 96;
  o.height = 80;
  int64_t labelled = 0, changed = 0, bg = 0, bg_changed = 0;
  for (uint64_t key = 0; key < 12; ++key) {
    auto s = data::draw_scene(items, o, 7, key);
    auto again = data::draw_scene(items, o, 7, key);
    ASSERT_EQ(cv::norm(s.image, again.image, cv::NORM_INF), 0) << key;
    ASSERT_EQ(cv::norm(s.label, again.label, cv::NORM_INF), 0) << key;
    ASSERT_GE(s.items.size(), 1u);
    ASSERT_LE(s.items.size(), 4u);
    std::set<int> classes;
    for (const auto& it : s.items) {
      EXPECT_EQ(it.cls, items.labels[static_cast<size_t>(it.index)]);
      classes.insert(it.cls + 1);
    }
    cv::Mat background = data::draw_background(o.width, o.height, 7, key), bg8;
    background.convertTo(bg8, CV_8UC3);
    for (int y = 0; y < o.height; ++y)
      for (int x = 0; x < o.width; ++x) {
        const int l = s.label.at<uint8_t>(y, x);
        const auto d = cv::norm(cv::Vec3i(s.image.at<cv::Vec3b>(y, x)) - cv::Vec3i(bg8.at<cv::Vec3b>(y, x)), cv::NORM_INF);
        if (l == 255) continue;
        if (l == 0) {
          ++bg;
          bg_changed += d > 40;
        } else {
          EXPECT_TRUE(classes.count(l)) << "label " << l << " of no item in scene " << key;
          ++labelled;
          changed += d > 0;
        }
      }
  }
  // An item's label sits on its pixels; the background keeps its own.
  EXPECT_GT(labelled, 0);
  EXPECT_GE(static_cast<double>(changed) / labelled, 0.97) << changed << "/" << labelled;
  EXPECT_LE(static_cast<double>(bg_changed) / bg, 0.02) << bg_changed << "/" << bg;
  auto other = data::draw_scene(items, o, 8, 0);
  EXPECT_GT(cv::norm(other.image, data::draw_scene(items, o, 7, 0).image, cv::NORM_L1), 0);
}

TEST(FashionScenes, PlainBackgroundsAreGradients) {
  // background_kinds 1: every background is a two-colour gradient, smooth everywhere (the
  // other kinds have noise, stripe, blob or tile edges); the default draws all five kinds.
  int smooth_all = 0;
  for (uint64_t key = 0; key < 20; ++key) {
    cv::Mat plain = data::draw_background(64, 48, 3, key, 1), all = data::draw_background(64, 48, 3, key);
    auto max_step = [](const cv::Mat& m) {
      cv::Mat dx;
      cv::absdiff(m.colRange(1, m.cols), m.colRange(0, m.cols - 1), dx);
      double mx = 0;
      cv::minMaxLoc(dx.reshape(1), nullptr, &mx);
      return mx;
    };
    EXPECT_LT(max_step(plain), 12) << key;
    smooth_all += max_step(all) < 12;
  }
  EXPECT_LT(smooth_all, 12);  // the default mixes in textured kinds
  seg::SynthSegOptions so;
  so.source = "fashion-mnist";
  so.backgrounds = "busy";
  expect_error([&] { seg::write_synthetic_dataset(temp_dir("fashion_bad_bg"), so); },
               {"synth --backgrounds: expected all or plain, found 'busy'"});
}

TEST(FashionScenes, CoarseLabelsAreTheGroupsOfTheSameItems) {
  auto items = data::load_fashion_mnist(data::kFashionMnistDir, "t10k");
  data::SceneOptions fine, coarse;
  coarse.coarse = true;
  const int group[10] = {1, 2, 1, 1, 1, 3, 1, 3, 4, 3};  // top, trousers, top, top, top, footwear, top, footwear, bag, footwear
  std::set<int> seen;
  for (uint64_t key = 0; key < 16; ++key) {
    auto f = data::draw_scene(items, fine, 5, key), c = data::draw_scene(items, coarse, 5, key);
    ASSERT_EQ(cv::norm(f.image, c.image, cv::NORM_INF), 0) << key;  // the same picture
    for (int y = 0; y < f.label.rows; ++y)
      for (int x = 0; x < f.label.cols; ++x) {
        const int lf = f.label.at<uint8_t>(y, x), lc = c.label.at<uint8_t>(y, x);
        if (lf == 0 || lf == 255) {
          EXPECT_EQ(lc, lf);
        } else {
          ASSERT_EQ(lc, group[lf - 1]) << "fine label " << lf << " at " << x << "," << y;
          seen.insert(lc);
        }
      }
  }
  EXPECT_EQ(seen.size(), 4u);
  EXPECT_EQ(data::fashion_mnist_coarse_of(8), 3);
  EXPECT_EQ(std::string(data::fashion_mnist_coarse_classes()[2]), "footwear");
  expect_error([] { data::fashion_mnist_coarse_of(10); }, {"class 10 outside 0..9"});
  seg::SynthSegOptions so;
  so.source = "fashion-mnist";
  // Every layout's reader names the groups (classes.txt), keeping the layout's class count.
  so.train = 2;
  so.val = 1;
  so.width = so.height = 48;
  so.fashion_classes = "coarse";
  for (const std::string layout : {"voc", "cityscapes", "ade20k"}) {
    so.layout = layout;
    const auto dir = temp_dir("fashion_coarse_" + layout);
    const auto splits = seg::write_synthetic_dataset(dir, so);
    seg::SegDataset ds(seg::DatasetOptions{layout, dir, splits.second, "", ""});
    ASSERT_GE(ds.classes().size(), 5u) << layout;
    EXPECT_EQ(ds.num_classes(), static_cast<int>(seg::classes_of(layout).size())) << layout;
    EXPECT_EQ(ds.classes()[1], "top") << layout;
    EXPECT_EQ(ds.classes()[4], "bag") << layout;
  }
  so.fashion_classes = "medium";
  expect_error([&] { seg::write_synthetic_dataset(temp_dir("fashion_bad_classes"), so); },
               {"synth --fashion-classes: expected fine (the 10 classes) or coarse (4 groups), found 'medium'"});
}

TEST(FashionScenes, ValidationItemsComeFromT10kOnly) {
  // Train items are classes 0-4, t10k items classes 5-9: labels tell the splits apart.
  const auto fm = temp_dir("fm_tiny");
  write_tiny_split(fm, "train", 20, 0);
  write_tiny_split(fm, "t10k", 20, 5);
  for (const char* layout : {"voc", "cityscapes", "ade20k"}) {
    SCOPED_TRACE(layout);
    const auto root = temp_dir(std::string("fm_scenes_") + layout);
    seg::SynthSegOptions so;
    so.layout = layout;
    so.source = "fashion-mnist";
    so.fashion_dir = fm;
    so.train = 6;
    so.val = 4;
    so.width = 64;
    so.height = 48;
    auto splits = seg::write_synthetic_dataset(root, so);
    for (int s = 0; s < 2; ++s) {
      seg::DatasetOptions d;
      d.type = layout;
      d.root = root;
      d.split = s == 0 ? splits.first : splits.second;
      seg::SegDataset ds(d);
      EXPECT_EQ(ds.size(), s == 0 ? 6 : 4);
      std::set<int> seen;
      for (int64_t i = 0; i < ds.size(); ++i) {
        auto img = ds.image(i);
        auto lab = ds.label(i, img.size(0), img.size(1));
        auto vals = std::get<0>(at::_unique(lab));
        for (int64_t k = 0; k < vals.numel(); ++k) seen.insert(vals[k].item<int>());
      }
      seen.erase(255);
      // VOC labels are class + 1; cityscapes train ids class + 1 (background road 0);
      // ADE20k's file values are shifted back by its reader.
      const int lo = s == 0 ? 1 : 6, hi = s == 0 ? 5 : 10;
      int items = 0;
      for (int v : seen) {
        if (v == 0) continue;
        ++items;
        EXPECT_GE(v, lo) << "split " << s << " label " << v;
        EXPECT_LE(v, hi) << "split " << s << " label " << v;
      }
      EXPECT_GT(items, 0);
    }
  }
}

TEST(FashionScenes, PretrainingImagesSameForAnyThreadCount) {
  data::SynthOptions o;
  o.source = "fashion-mnist";
  o.count = 24;
  o.width = 64;
  o.height = 64;
  o.classes = 10;
  o.ext = "png";
  o.seed = 5;
  set_threads(1);
  auto a = data::write_synthetic_images(temp_dir("fm_pre_a"), o);
  set_threads(2);
  auto b = data::write_synthetic_images(temp_dir("fm_pre_b"), o);
  ASSERT_EQ(a.size(), 24u);
  ASSERT_EQ(b.size(), 24u);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(fs::path(a[i]).filename(), fs::path(b[i]).filename());
    EXPECT_EQ(read_text(a[i]), read_text(b[i])) << a[i];
  }
  // Class folders are the items' classes.
  EXPECT_NE(a[0].find("class_"), std::string::npos);
}

}  // namespace
}  // namespace cp2::test
