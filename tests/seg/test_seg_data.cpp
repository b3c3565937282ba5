// Segmentation data: label PNGs (palette indices, not colours), the four dataset
// layouts with their label conventions and errors, and mmseg's pipeline semantics.
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "../helpers.h"
#include "cp2/seg/classes.h"
#include "cp2/seg/dataset.h"
#include "cp2/seg/label_png.h"
#include "cp2/seg/loader.h"
#include "cp2/seg/pipeline.h"
#include "cp2/seg/synth.h"

namespace fs = std::filesystem;

namespace cp2::test {
namespace {

using namespace cp2::seg;

// Runs a Python snippet with Debian's python3 (PIL comes with python3-torchvision).
void python(const std::string& code) {
  // In a registered temporary folder (a passing test leaves no script behind), named by
  // the code so tests running in parallel never share one.
  const auto name = "py_snippet_" + std::to_string(std::hash<std::string>{}(code));
  const auto script = fs::path(temp_dir(name)) / "snippet.py";
  std::ofstream(script) << code;
  ASSERT_EQ(std::system((std::string(CP2_PYTHON) + " " + script.string()).c_str()), 0) << code;
}

TEST(LabelPng, PaletteIndicesNotColours) {
  auto dir = temp_dir("label_png");
  // PIL writes what VOC ships: a palette PNG whose indices are the labels, a grey PNG,
  // a 16-bit grey PNG, a 4-bit palette PNG, and an RGB one.
  python("import numpy as np\nfrom PIL import Image\n"
         "a = (np.arange(12).reshape(3, 4) * 20).astype(np.uint8)\na[0, 0] = 255\n"
         "im = Image.fromarray(a, 'P')\npal = [0] * 768\npal[3:6] = [128, 0, 0]\npal[60:63] = [1, 2, 3]\nim.putpalette(pal)\n"
         "im.save('" + dir + "/pal.png')\n"
         "Image.fromarray(a, 'L').save('" + dir + "/grey.png')\n"
         "Image.fromarray(a.astype(np.uint16) * 1).save('" + dir + "/grey16.png')\n"
         "Image.fromarray(np.array([[300]], dtype=np.uint16)).save('" + dir + "/big16.png')\n"
         "b = np.array([[0, 1, 2], [3, 4, 5]], dtype=np.uint8)\nim4 = Image.fromarray(b, 'P')\nim4.putpalette(pal)\n"
         "im4.save('" + dir + "/pal4.png', bits=4)\n"
         "rgb = np.zeros((2, 2, 3), np.uint8)\nrgb[0, 1] = [128, 0, 0]\nrgb[1, 0] = [224, 224, 192]\n"
         "Image.fromarray(rgb, 'RGB').save('" + dir + "/rgb.png')\n");
  auto expect = torch::arange(12, torch::kInt).reshape({3, 4}).mul(20).remainder(256).to(torch::kUInt8);
  expect[0][0] = 255;
  EXPECT_TRUE(torch::equal(read_label_png(dir + "/pal.png"), expect));
  EXPECT_TRUE(torch::equal(read_label_png(dir + "/grey.png"), expect));
  EXPECT_TRUE(torch::equal(read_label_png(dir + "/grey16.png"), expect));
  auto p4 = read_label_png(dir + "/pal4.png");
  EXPECT_EQ(p4.sizes(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(p4[1][2].item<int>(), 5);
  expect_error([&] { read_label_png(dir + "/big16.png"); }, {"big16.png", "300", "0..255"});
  expect_error([&] { read_label_png(dir + "/rgb.png"); }, {"rgb.png", "colour", "palette-indexed"});
  auto pal = voc_palette();
  auto rgb = read_label_png(dir + "/rgb.png", &pal);  // mapped back through the VOC palette
  EXPECT_EQ(rgb[0][0].item<int>(), 0);
  EXPECT_EQ(rgb[0][1].item<int>(), 1);
  EXPECT_EQ(rgb[1][0].item<int>(), 255);

  // Round trip through our writer, and PIL sees the same indices.
  auto lab = torch::randint(0, 21, {5, 7}, torch::kUInt8);
  lab[2][3] = 255;
  write_label_png(dir + "/ours.png", lab, voc_palette());
  EXPECT_TRUE(torch::equal(read_label_png(dir + "/ours.png"), lab));
  python("import numpy as np\nfrom PIL import Image\nim = Image.open('" + dir + "/ours.png')\nassert im.mode == 'P', im.mode\n"
         "a = np.array(im)\nassert a.shape == (5, 7) and a[2, 3] == 255\n"
         "assert im.getpalette()[3:6] == [128, 0, 0], im.getpalette()[:6]\n");

  // Bad files: one message naming the file.
  std::ofstream(dir + "/not.png") << "hello";
  expect_error([&] { read_label_png(dir + "/not.png"); }, {"not.png", "not a PNG"});
  auto bytes = io::read_file(dir + "/pal.png");
  std::ofstream(dir + "/trunc.png", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  expect_error([&] { read_label_png(dir + "/trunc.png"); }, {"trunc.png", "cannot decode"});
  expect_error([&] { read_label_png(dir + "/missing.png"); }, {"missing.png"});
}

TEST(SegClasses, TablesAndMaps) {
  EXPECT_EQ(voc_classes().size(), 21u);
  EXPECT_EQ(cityscapes_classes().size(), 19u);
  EXPECT_EQ(ade20k_classes().size(), 150u);
  auto p = voc_palette();
  EXPECT_EQ(p[1], (std::array<uint8_t, 3>{128, 0, 0}));
  EXPECT_EQ(p[15], (std::array<uint8_t, 3>{192, 128, 128}));  // person
  EXPECT_EQ(cityscapes_train_id(7), 0);    // road
  EXPECT_EQ(cityscapes_train_id(26), 13);  // car
  EXPECT_EQ(cityscapes_train_id(33), 18);  // bicycle
  EXPECT_EQ(cityscapes_train_id(0), 255);
  EXPECT_EQ(cityscapes_train_id(-1), 255);
}

TEST(SegDataset, EveryLayoutAndItsLabelConvention) {
  SynthSegOptions o;
  o.train = 3;
  o.val = 2;
  o.width = 40;
  o.height = 30;
  o.classes = 3;
  o.boundaries = true;
  for (std::string layout : {"voc", "cityscapes", "ade20k", "list"}) {
    SCOPED_TRACE(layout);
    auto root = temp_dir("seg_layout_" + layout);
    o.layout = layout;
    auto [tr, va] = write_synthetic_dataset(root, o);
    DatasetOptions d;
    d.type = layout;
    d.root = root;
    d.split = tr;
    if (layout == "list") d.classes_file = "classes.txt";
    SegDataset train(d);
    d.split = va;
    SegDataset val(d);
    EXPECT_EQ(train.size(), 3);
    EXPECT_EQ(val.size(), 2);
    const int C = layout == "voc" ? 21 : layout == "cityscapes" ? 19 : layout == "ade20k" ? 150 : 4;
    EXPECT_EQ(train.num_classes(), C);
    auto img = train.image(0);
    EXPECT_EQ(img.sizes(), (std::vector<int64_t>{30, 40, 3}));
    auto lab = train.label(0, 30, 40);
    std::set<int> values;
    for (int64_t i = 0; i < lab.numel(); ++i) values.insert(lab.data_ptr<uint8_t>()[i]);
    for (int v : values) EXPECT_TRUE(v < C || v == 255) << v;
    if (layout == "voc") EXPECT_TRUE(values.count(255));   // outlines stay ignore
    if (layout == "ade20k") EXPECT_TRUE(values.count(255));  // 0 ("other") -> 255
    if (layout == "ade20k") EXPECT_TRUE(values.count(0));   // file value 1 -> class 0
    EXPECT_EQ(train.take_label_stats().pixels, 0);
  }
  // Cityscapes labelIds are mapped to train ids, exactly as labelTrainIds files say.
  auto a = temp_dir("seg_city_trainids"), b = temp_dir("seg_city_ids");
  o.layout = "cityscapes";
  o.boundaries = false;
  write_synthetic_dataset(a, o);
  o.label_ids = true;
  write_synthetic_dataset(b, o);
  DatasetOptions da{"cityscapes", a, "train", "", ""}, db{"cityscapes", b, "train", "", ""};
  SegDataset ta(da), tb(db);
  EXPECT_NE(tb.label_path(0).find("_gtFine_labelIds.png"), std::string::npos);
  for (int64_t i = 0; i < ta.size(); ++i) EXPECT_TRUE(torch::equal(ta.label(i, 30, 40), tb.label(i, 30, 40)));
}

TEST(SegDataset, WrongLayoutsAndLabels) {
  SynthSegOptions o;
  o.train = 2;
  o.val = 1;
  o.width = 32;
  o.height = 24;
  auto root = temp_dir("seg_bad");
  write_synthetic_dataset(root, o);
  DatasetOptions d{"voc", root, "ImageSets/Segmentation/train_aug.txt", "", ""};
  // Wrong type for the folder: names the expected folder and where.
  expect_error([&] { SegDataset(DatasetOptions{"cityscapes", root, "train", "", ""}); },
               {"cityscapes layout", "leftImg8bit/train", root});
  expect_error([&] { SegDataset(DatasetOptions{"ade20k", root, "training", "", ""}); }, {"ade20k layout", "images/training"});
  // Split file names vary: a missing one says which and why.
  expect_error([&] { SegDataset(DatasetOptions{"voc", root, "ImageSets/Segmentation/trainaug.txt", "", ""}); },
               {"trainaug.txt", "train_aug.txt"});
  expect_error([&] { SegDataset(DatasetOptions{"voc", root, "ImageSets/Segmentation/train_aug.txt", "SegmentationClass", ""}); },
               {"SegmentationClass/", "data.ann_dir"});
  expect_error([&] { SegDataset(DatasetOptions{"nyu", root, "", "", ""}); }, {"data.type", "voc, cityscapes", "nyu"});
  // A missing label names the image and the expected label file.
  fs::remove(fs::path(root) / "SegmentationClassAug/train_000001.png");
  expect_error([&] { SegDataset{d}; }, {"train_000001.jpg", "has no label", "SegmentationClassAug/train_000001.png"});
  // Out-of-range values are made 255, counted, and the first file named.
  auto lab = torch::zeros({24, 32}, torch::kUInt8);
  lab[0][0] = 40;
  lab[0][1] = 21;
  lab[0][2] = 255;
  write_label_png(root + "/SegmentationClassAug/train_000001.png", lab, voc_palette());
  SegDataset ds(d);
  auto l = ds.label(1, 24, 32);
  EXPECT_EQ(l[0][0].item<int>(), 255);
  EXPECT_EQ(l[0][1].item<int>(), 255);
  auto st = ds.take_label_stats();
  EXPECT_EQ(st.pixels, 2);
  EXPECT_EQ(st.files, 1);
  EXPECT_NE(st.first_file.find("train_000001.png"), std::string::npos);
  // A label whose size differs from its image's.
  write_label_png(root + "/SegmentationClassAug/train_000001.png", torch::zeros({10, 10}, torch::kUInt8), voc_palette());
  expect_error([&] { ds.label(1, 24, 32); }, {"train_000001.png", "10x10", "32x24"});
  // List files: malformed lines name the line.
  std::ofstream(root + "/list.txt") << "JPEGImages/train_000000.jpg\n";
  std::ofstream(root + "/names.txt") << "a\nb\n";
  expect_error([&] { SegDataset(DatasetOptions{"list", root, "list.txt", "", "names.txt"}); },
               {"list.txt:1", "expected 'image label'"});
  expect_error([&] { SegDataset(DatasetOptions{"list", root, "list.txt", "", ""}); }, {"data.classes_file"});
}

TEST(SegPipeline, RescaleSizeAsMmcv) {
  // mmcv.rescale_size(w, h, (2048, 512)): factor min(2048 / long, 512 / short), int(x * f + 0.5).
  EXPECT_EQ(rescale_size(375, 500, 2048, 512), (std::pair<int, int>{512, 683}));
  EXPECT_EQ(rescale_size(1024, 2048, 2048, 512), (std::pair<int, int>{512, 1024}));
  EXPECT_EQ(rescale_size(500, 333, 2048, 512), (std::pair<int, int>{769, 512}));
  EXPECT_EQ(rescale_size(100, 1000, 2048, 512), (std::pair<int, int>{205, 2048}));  // long edge binds
  // ratio 0.5 of (2048, 512) is (1024, 256)
  EXPECT_EQ(rescale_size(375, 500, 1024, 256), (std::pair<int, int>{256, 341}));
}

TEST(SegPipeline, LabelsResizeNearestImagesBilinear) {
  auto lab = torch::tensor({0, 5, 255, 7}, torch::kUInt8).reshape({2, 2});
  auto up = resize_label(lab, 5, 7);
  std::set<int> vals;
  for (int64_t i = 0; i < up.numel(); ++i) vals.insert(up.data_ptr<uint8_t>()[i]);
  EXPECT_EQ(vals, (std::set<int>{0, 5, 7, 255}));  // no blended values
  auto img = torch::zeros({2, 2, 3}, torch::kUInt8);
  img[0][1].fill_(200);
  auto r = resize_image(img, 2, 4);
  EXPECT_EQ(r[0][0][0].item<int>(), 0);
  EXPECT_EQ(r[0][3][0].item<int>(), 200);
  EXPECT_EQ(r[0][1][0].item<int>(), 50);   // cv2 INTER_LINEAR, half-pixel centres
  EXPECT_EQ(r[0][2][0].item<int>(), 150);
}

TEST(SegPipeline, CropRejectsSingleClassCrops) {
  // 60 x 60: class 1 everywhere except a 20 x 20 block of class 2 at the top left.
  auto lab = torch::ones({60, 60}, torch::kUInt8);
  lab.slice(0, 0, 20).slice(1, 0, 20).fill_(2);
  auto count_mixed = [&](double ratio) {
    int mixed = 0;
    for (uint64_t s = 0; s < 400; ++s) {
      data::Rng rng(s);
      auto b = random_crop_box(lab, 20, 20, ratio, rng);
      EXPECT_EQ(b.h, 20);
      EXPECT_EQ(b.w, 20);
      const double share2 = (crop(lab, b) == 2).sum().item<double>() / 400.0;
      if (share2 > 0.25 && share2 < 0.75) ++mixed;
    }
    return mixed;
  };
  const int plain = count_mixed(1.0), rejecting = count_mixed(0.75);
  // Plain crops rarely mix the classes that much; with up to 10 redraws most do.
  EXPECT_LT(plain, 40);
  EXPECT_GT(rejecting, 3 * plain);
  EXPECT_GT(rejecting, 100);
  // A crop where 255 dominates still counts only labelled pixels: class 1 (60 %) vs 2.
  auto ign = torch::full({10, 10}, 255, torch::kUInt8);
  ign.slice(0, 0, 1).slice(1, 0, 6).fill_(1);
  ign.slice(0, 1, 2).slice(1, 0, 4).fill_(2);
  data::Rng rng(1);
  auto b = random_crop_box(ign, 10, 10, 0.75, rng);  // image == crop: the only box, accepted
  EXPECT_EQ(b.y0, 0);
  EXPECT_EQ(b.x0, 0);
  // An image smaller than the crop: the whole image, later padded.
  auto small = torch::zeros({5, 8}, torch::kUInt8);
  auto sb = random_crop_box(small, 16, 16, 0.75, rng);
  EXPECT_EQ(sb.h, 5);
  EXPECT_EQ(sb.w, 8);
}

TEST(SegPipeline, NormalizePadFlip) {
  PipelineOptions o;
  auto img = torch::full({2, 3, 3}, 100, torch::kUInt8);
  auto x = seg::normalize(img, o.mean, o.std);
  EXPECT_EQ(x.sizes(), (std::vector<int64_t>{3, 2, 3}));
  EXPECT_NEAR(x[0][0][0].item<double>(), (100 - 123.675) / 58.395, 1e-6);
  EXPECT_NEAR(x[2][1][2].item<double>(), (100 - 103.53) / 57.375, 1e-6);
  auto lab = torch::ones({2, 3}, torch::kUInt8);
  auto [px, pl] = pad(x, lab, 4, 5);
  EXPECT_EQ(px.sizes(), (std::vector<int64_t>{3, 4, 5}));
  EXPECT_EQ(px[1][3][4].item<double>(), 0.0);  // image padded with 0 after normalising
  EXPECT_EQ(px[1][1][2].item<double>(), x[1][1][2].item<double>());
  EXPECT_EQ(pl[3][0].item<int>(), 255);        // labels padded with ignore
  EXPECT_EQ(pl[1][2].item<int>(), 1);
  auto f = hflip(torch::tensor({1, 2, 3}, torch::kUInt8).reshape({1, 3}));
  EXPECT_EQ(f[0][0].item<int>(), 3);
}

TEST(SegPipeline, PhotometricDistortionBounds) {
  PipelineOptions o;
  auto base = torch::randint(0, 256, {16, 16, 3}, torch::kUInt8);
  // Identity ranges: only OpenCV's 8-bit HSV round trip may change a value, by a little.
  PipelineOptions id = o;
  id.brightness_delta = 0;
  id.contrast_min = id.contrast_max = id.saturation_min = id.saturation_max = 1.0;
  id.hue_delta = 0;
  for (uint64_t s = 0; s < 8; ++s) {
    auto img = base.clone();
    data::Rng rng(s);
    photometric_distortion(img, id, rng);
    EXPECT_LE((img.to(torch::kInt) - base.to(torch::kInt)).abs().max().item<int>(), 8);
  }
  // Brightness alone: every pixel moves by the same delta (truncated, clipped).
  PipelineOptions br = id;
  br.brightness_delta = 32;
  bool moved = false;
  for (uint64_t s = 0; s < 16; ++s) {
    auto img = torch::full({4, 4, 3}, 128, torch::kUInt8);
    data::Rng rng(s);
    photometric_distortion(img, br, rng);
    const int v = img[0][0][0].item<int>();
    EXPECT_GE(v, 128 - 32);
    EXPECT_LE(v, 128 + 32);
    moved |= v != 128;
    EXPECT_TRUE(torch::equal(img, torch::full({4, 4, 3}, v, torch::kUInt8)));
  }
  EXPECT_TRUE(moved);
  // Contrast, saturation and hue alone each take effect for some seed (each is drawn with
  // probability 1/2), on a muted orange that all three can move.
  auto takes_effect = [&](const PipelineOptions& only) {
    const auto orange = torch::tensor({200, 120, 60}, torch::kUInt8).repeat({4, 4, 1}).contiguous();
    for (uint64_t s = 0; s < 16; ++s) {
      auto img = orange.clone();
      data::Rng rng(s);
      photometric_distortion(img, only, rng);
      if ((img.to(torch::kInt) - orange.to(torch::kInt)).abs().max().item<int>() > 8) return true;
    }
    return false;
  };
  PipelineOptions con = id, sat = id, hue = id;
  con.contrast_min = 0.5;
  con.contrast_max = 1.5;
  sat.saturation_min = 0.5;
  sat.saturation_max = 1.5;
  hue.hue_delta = 18;
  EXPECT_TRUE(takes_effect(con));
  EXPECT_TRUE(takes_effect(sat));
  EXPECT_TRUE(takes_effect(hue));
}

TEST(SegPipeline, TrainTransformAndLoaderDeterminism) {
  SynthSegOptions so;
  so.train = 6;
  so.val = 1;
  so.width = 60;
  so.height = 40;
  auto root = temp_dir("seg_loader");
  write_synthetic_dataset(root, so);
  auto ds = std::make_shared<SegDataset>(DatasetOptions{"voc", root, "ImageSets/Segmentation/train_aug.txt", "", ""});
  PipelineOptions p;
  p.scale_long = 80;
  p.scale_short = 40;
  p.crop_h = p.crop_w = 48;
  data::LoaderOptions one{2, 0, 1}, many{2, 3, 3};
  SegTrainLoader a(ds, p, one, 7), b(ds, p, many, 7);
  a.start(0, 7);
  b.start(2, 7);  // a resumed run: the same batches from iteration 2 on
  std::vector<SegBatch> first;
  for (int i = 0; i < 7; ++i) first.push_back(*a.next());
  EXPECT_FALSE(a.next().has_value());
  for (int i = 2; i < 7; ++i) {
    auto x = b.next();
    ASSERT_TRUE(x.has_value());
    EXPECT_TRUE(torch::equal(x->image, first[i].image)) << i;
    EXPECT_TRUE(torch::equal(x->label, first[i].label)) << i;
  }
  const auto& s = first[0];
  EXPECT_EQ(s.image.sizes(), (std::vector<int64_t>{2, 3, 48, 48}));
  EXPECT_EQ(s.label.scalar_type(), torch::kLong);
  // Resized to 40 px high at ratio <= 1 (short edge 40 x ratio < 48): padding with 255 below.
  bool padded = false;
  for (const auto& bt : first) padded |= (bt.label.slice(1, 47, 48) == 255).all().item<bool>();
  EXPECT_TRUE(padded);
  EXPECT_FALSE(torch::equal(first[0].image, first[3].image));  // epochs reshuffle and redraw
  SegTrainLoader c(ds, p, data::LoaderOptions{16, 0, 1}, 7);
  expect_error([&] { c.batches_per_epoch(); }, {"6 images", "batch of 16"});
  // Batches pinned for a CUDA run's device (data::batch_tensor): pinned where there is CUDA,
  // else LibTorch's refusal shows that the loader asked.
  data::LoaderOptions pinned{2, 0, 1};
  pinned.pin_for = data::pin_target(torch::Device(torch::kCUDA, 0));
  SegTrainLoader d(ds, p, pinned, 7);
  if (torch::cuda::is_available()) {
    const auto b = d.build(0);
    EXPECT_TRUE(b.image.is_pinned() && b.label.is_pinned());
  } else
    EXPECT_THROW(d.build(0), c10::Error);
}

}  // namespace
}  // namespace cp2::test
