#include "cp2/data/fashion_mnist.h"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <opencv2/imgproc.hpp>

#include "cp2/common.h"
#include "cp2/data/rng.h"

namespace cp2::data {

IdxArray read_idx(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    throw Error(path + ": IDX file not found (Fashion-MNIST: apt-get install dataset-fashion-mnist)");
  gzFile f = gzopen(path.c_str(), "rb");  // reads plain files too
  if (!f) throw Error(path + ": cannot open");
  std::string bytes;
  char buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0) bytes.append(buf, static_cast<size_t>(n));
  int err = 0;
  const char* msg = gzerror(f, &err);
  const std::string zmsg = msg ? msg : "";
  gzclose(f);
  if (n < 0 || (err != Z_OK && err != Z_STREAM_END))
    throw Error(path + ": corrupt gzip data (" + zmsg + ")");
  auto u8 = [&](size_t i) { return static_cast<uint8_t>(bytes[i]); };
  if (bytes.size() < 4 || u8(0) != 0 || u8(1) != 0 || u8(2) != 0x08 || u8(3) < 1 || u8(3) > 4) {
    char found[32] = "(too short)";
    if (bytes.size() >= 4) std::snprintf(found, sizeof found, "%02x %02x %02x %02x", u8(0), u8(1), u8(2), u8(3));
    throw Error(path + ": not an IDX file of unsigned bytes (magic expected 00 00 08 0N, found " + found + ")");
  }
  IdxArray a;
  const int nd = u8(3);
  if (bytes.size() < 4 + 4 * static_cast<size_t>(nd)) throw Error(path + ": IDX header is truncated");
  int64_t total = 1;
  for (int d = 0; d < nd; ++d) {
    const size_t o = 4 + 4 * static_cast<size_t>(d);
    const int64_t v = (int64_t{u8(o)} << 24) | (int64_t{u8(o + 1)} << 16) | (int64_t{u8(o + 2)} << 8) | u8(o + 3);
    a.dims.push_back(v);
    total *= v;
  }
  const size_t off = 4 + 4 * static_cast<size_t>(nd);
  if (bytes.size() - off < static_cast<size_t>(total))
    throw Error(path + ": IDX data is truncated (expected " + std::to_string(total) + " bytes for dims " +
                shape_str(std::vector<long>(a.dims.begin(), a.dims.end())) + ", found " +
                std::to_string(bytes.size() - off) + ")");
  a.data.assign(bytes.begin() + static_cast<std::ptrdiff_t>(off),
                bytes.begin() + static_cast<std::ptrdiff_t>(off) + total);
  return a;
}

const std::array<const char*, 10>& fashion_mnist_classes() {
  static const std::array<const char*, 10> c{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                             "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return c;
}

const std::array<const char*, 4>& fashion_mnist_coarse_classes() {
  static const std::array<const char*, 4> c{"top", "trousers", "footwear", "bag"};
  return c;
}

int fashion_mnist_coarse_of(int cls) {
  static const int group[10] = {0, 1, 0, 0, 0, 2, 0, 2, 3, 2};
  if (cls < 0 || cls > 9) throw Error("fashion-mnist class " + std::to_string(cls) + " outside 0..9");
  return group[cls];
}

bool parse_fashion_classes(const std::string& value, const std::string& key) {
  if (value != "fine" && value != "coarse")
    throw Error(key + ": expected fine (the 10 classes) or coarse (4 groups), found '" + value + "'");
  return value == "coarse";
}

FashionMnist load_fashion_mnist(const std::string& dir, const std::string& split) {
  if (split != "train" && split != "t10k") throw Error("fashion-mnist split: expected train or t10k, found '" + split + "'");
  const std::string ip = dir + "/" + split + "-images-idx3-ubyte.gz", lp = dir + "/" + split + "-labels-idx1-ubyte.gz";
  auto im = read_idx(ip), lb = read_idx(lp);
  if (im.dims.size() != 3 || im.dims[1] != 28 || im.dims[2] != 28)
    throw Error(ip + ": expected N x 28 x 28 images, found " + shape_str(std::vector<long>(im.dims.begin(), im.dims.end())));
  if (lb.dims.size() != 1 || lb.dims[0] != im.dims[0])
    throw Error(lp + ": expected " + std::to_string(im.dims[0]) + " labels, found dims " +
                shape_str(std::vector<long>(lb.dims.begin(), lb.dims.end())));
  for (auto l : lb.data)
    if (l > 9) throw Error(lp + ": label " + std::to_string(l) + " outside 0..9");
  FashionMnist f;
  f.count = im.dims[0];
  f.images = std::move(im.data);
  f.labels = std::move(lb.data);
  return f;
}

namespace {

cv::Vec3f random_colour(Rng& r, float lo, float hi) {
  return {static_cast<float>(r.uniform(lo, hi)), static_cast<float>(r.uniform(lo, hi)), static_cast<float>(r.uniform(lo, hi))};
}

// An item as RGB (float 0..255) and alpha (0..1) at `size` x `size`: an opaque object
// whose outline is the photograph's silhouette (Fashion-MNIST items are light on pure
// black: every pixel above 5 % intensity, cracks of one pixel closed), shaded by the
// photograph's intensity, tinted, with a texture. (Using the intensity itself as alpha
// made dark parts of an item half transparent and labelled them background, which no
// finetuning run could learn: docs/results.md.)
void render_item(const FashionMnist& items, int64_t index, int size, Rng& r, cv::Mat& rgb, cv::Mat& alpha) {
  cv::Mat src(28, 28, CV_8UC1, const_cast<uint8_t*>(items.image(index))), f, big, sil;
  src.convertTo(f, CV_32F, 1.0 / 255);
  cv::resize(f, big, cv::Size(size, size), 0, 0, cv::INTER_LINEAR);
  cv::morphologyEx(src > 12, sil, cv::MORPH_CLOSE, cv::getStructuringElement(cv::MORPH_RECT, cv::Size(3, 3)));
  sil.convertTo(sil, CV_32F, 1.0 / 255);
  cv::resize(sil, alpha, cv::Size(size, size), 0, 0, cv::INTER_LINEAR);  // soft edge, opaque inside
  const cv::Vec3f tint = random_colour(r, 60, 255);
  const int texture = static_cast<int>(r.randint(0, 3));  // plain, stripes, checks
  const double period = r.uniform(3, 9), phase = r.uniform(0, 6.3);
  rgb.create(size, size, CV_32FC3);
  for (int y = 0; y < size; ++y)
    for (int x = 0; x < size; ++x) {
      float t = 1.0f;
      if (texture == 1) t = 0.75f + 0.25f * static_cast<float>(std::sin(y / period + phase));
      if (texture == 2) t = ((x / static_cast<int>(period) + y / static_cast<int>(period)) % 2) ? 1.0f : 0.7f;
      const float shade = (0.45f + 0.55f * big.at<float>(y, x)) * t;  // the photograph's shading
      rgb.at<cv::Vec3f>(y, x) = tint * shade;
    }
}

// The part of a size x size item placed at (x0, y0) that lies on a w x h canvas: the
// rectangle in the item and the same one on the canvas (empty when it misses).
std::pair<cv::Rect, cv::Rect> overlap(int x0, int y0, int size, int w, int h) {
  const cv::Rect on_canvas = cv::Rect(x0, y0, size, size) & cv::Rect(0, 0, w, h);
  return {on_canvas - cv::Point(x0, y0), on_canvas};
}

// Alpha-composites an item onto `canvas` (float RGB) at (x0, y0), clipped.
void paste(cv::Mat& canvas, const cv::Mat& rgb, const cv::Mat& alpha, int x0, int y0) {
  const auto [src, dst] = overlap(x0, y0, rgb.cols, canvas.cols, canvas.rows);
  for (int y = 0; y < src.height; ++y) {
    const auto* c = rgb.ptr<cv::Vec3f>(src.y + y) + src.x;
    const auto* a = alpha.ptr<float>(src.y + y) + src.x;
    auto* d = canvas.ptr<cv::Vec3f>(dst.y + y) + dst.x;
    for (int x = 0; x < src.width; ++x) d[x] = d[x] * (1 - a[x]) + c[x] * a[x];
  }
}

cv::Mat to_u8(const cv::Mat& f) {
  cv::Mat out;
  f.convertTo(out, CV_8UC3);
  return out;
}

}  // namespace

cv::Mat draw_background(int width, int height, uint64_t seed, uint64_t key, int kinds) {
  auto r = Rng::derive(seed, {0xB6, key});
  cv::Mat bg(height, width, CV_32FC3);
  const cv::Vec3f a = random_colour(r, 0, 200), b = random_colour(r, 0, 200);
  const int kind = static_cast<int>(r.randint(0, std::clamp(kinds, 1, 5)));
  const double angle = r.uniform(0, 3.1416), period = r.uniform(4, 16);
  const double ca = std::cos(angle), sa = std::sin(angle);
  const int tile = static_cast<int>(r.randint(6, 20));
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) {
      float t = 0;
      const double u = (x * ca + y * sa) / std::max(width, height);
      switch (kind) {
        case 0: t = static_cast<float>(std::clamp(u, 0.0, 1.0)); break;                                  // gradient
        case 1: t = static_cast<float>(r.uniform01()); break;                                            // noise
        case 2: t = std::sin((x * ca + y * sa) / period) > 0 ? 1.0f : 0.0f; break;                        // stripes
        case 3: t = 0; break;                                                                            // blobs below
        default: t = ((x / tile + y / tile) % 2) ? 1.0f : 0.0f; break;                                    // tiles
      }
      bg.at<cv::Vec3f>(y, x) = a * (1 - t) + b * t;
    }
  if (kind == 3) {
    const int blobs = static_cast<int>(r.randint(3, 9));
    for (int k = 0; k < blobs; ++k) {
      const cv::Vec3f c = random_colour(r, 0, 200);
      cv::circle(bg, cv::Point(static_cast<int>(r.randint(0, width)), static_cast<int>(r.randint(0, height))),
                 static_cast<int>(r.randint(std::min(width, height) / 10 + 1, std::min(width, height) / 3 + 2)),
                 cv::Scalar(c[0], c[1], c[2]), cv::FILLED, cv::LINE_AA);
    }
  }
  return bg;
}

cv::Mat draw_object_image(const FashionMnist& items, const SceneOptions& o, uint64_t seed, uint64_t key,
                          PlacedItem* placed) {
  auto r = Rng::derive(seed, {0x0B1, key});
  cv::Mat canvas = draw_background(o.width, o.height, seed, key);
  const int64_t idx = r.randint(0, items.count);
  const int side = std::min(o.width, o.height);
  const int size = std::max(8, static_cast<int>(side * r.uniform(0.5, 0.9)));
  cv::Mat rgb, alpha;
  render_item(items, idx, size, r, rgb, alpha);
  // Off-centre: anywhere the item stays at least three quarters inside.
  const int x0 = static_cast<int>(r.randint(-size / 8, std::max(-size / 8 + 1, o.width - size + size / 8)));
  const int y0 = static_cast<int>(r.randint(-size / 8, std::max(-size / 8 + 1, o.height - size + size / 8)));
  paste(canvas, rgb, alpha, x0, y0);
  if (placed) *placed = {idx, items.labels[static_cast<size_t>(idx)]};
  return to_u8(canvas);
}

Scene draw_scene(const FashionMnist& items, const SceneOptions& o, uint64_t seed, uint64_t key) {
  if (o.min_items < 1 || o.max_items < o.min_items)
    throw Error("scenes: expected 1 <= min_items <= max_items, found " + std::to_string(o.min_items) + ".." +
                std::to_string(o.max_items));
  auto r = Rng::derive(seed, {0x5CE, key});
  Scene s;
  cv::Mat canvas = draw_background(o.width, o.height, seed, key, o.background_kinds);
  s.label = cv::Mat(o.height, o.width, CV_8UC1, cv::Scalar(0));
  cv::Mat band(o.height, o.width, CV_8UC1, cv::Scalar(0));
  const int n = static_cast<int>(r.randint(o.min_items, o.max_items + 1));
  const int side = std::min(o.width, o.height);
  for (int k = 0; k < n; ++k) {
    const int64_t idx = r.randint(0, items.count);
    const int cls = items.labels[static_cast<size_t>(idx)];
    const int size = std::max(8, static_cast<int>(side * r.uniform(o.item_min, o.item_max)));
    cv::Mat rgb, alpha;
    render_item(items, idx, size, r, rgb, alpha);
    const int x0 = static_cast<int>(r.randint(-size / 4, std::max(-size / 4 + 1, o.width - size + size / 4)));
    const int y0 = static_cast<int>(r.randint(-size / 4, std::max(-size / 4 + 1, o.height - size + size / 4)));
    paste(canvas, rgb, alpha, x0, y0);
    // The item's pixels: where it is more than half opaque. The front item wins, its band
    // replaces what the items behind drew there.
    cv::Mat mask(o.height, o.width, CV_8UC1, cv::Scalar(0));
    const auto [src, dst] = overlap(x0, y0, size, o.width, o.height);
    if (!src.empty()) mask(dst).setTo(1, alpha(src) > 0.5f);
    s.label.setTo((o.coarse ? fashion_mnist_coarse_of(cls) : cls) + 1, mask);
    band.setTo(0, mask);
    if (o.boundary > 0) {
      cv::Mat grown, shrunk, edge;
      const auto kernel = cv::getStructuringElement(cv::MORPH_RECT, cv::Size(2 * o.boundary + 1, 2 * o.boundary + 1));
      cv::dilate(mask, grown, kernel);
      cv::erode(mask, shrunk, kernel);
      edge = grown - shrunk;
      band.setTo(1, edge);
    }
    s.items.push_back({idx, cls});
  }
  s.label.setTo(255, band);
  s.image = to_u8(canvas);
  return s;
}

}  // namespace cp2::data
