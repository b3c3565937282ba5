// Image decoding: PNGs through libpng equal OpenCV's decode (RGB, grey, 16-bit, alpha),
// and libpng's warnings reach the user once per file, not once per read (every epoch).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "../helpers.h"
#include "cp2/data/image.h"

namespace cp2::test {
namespace {

at::Tensor opencv_rgb(const std::string& path) {
  cv::Mat m = cv::imread(path, cv::IMREAD_COLOR | cv::IMREAD_IGNORE_ORIENTATION), rgb;
  cv::cvtColor(m, rgb, cv::COLOR_BGR2RGB);
  return torch::from_blob(rgb.data, {rgb.rows, rgb.cols, 3}, torch::kUInt8).clone().permute({2, 0, 1});
}

TEST(Image, PngMatchesOpenCv) {
  const auto dir = temp_dir("image_png");
  cv::RNG rng(3);
  cv::Mat bgr(23, 31, CV_8UC3), grey(23, 31, CV_8UC1), deep(23, 31, CV_16UC3), bgra(23, 31, CV_8UC4);
  rng.fill(bgr, cv::RNG::UNIFORM, 0, 256);
  rng.fill(grey, cv::RNG::UNIFORM, 0, 256);
  rng.fill(deep, cv::RNG::UNIFORM, 0, 65536);
  rng.fill(bgra, cv::RNG::UNIFORM, 0, 256);
  const std::vector<std::pair<std::string, cv::Mat>> cases{
      {"rgb.png", bgr}, {"grey.png", grey}, {"deep.png", deep}, {"alpha.png", bgra}};
  for (const auto& [name, m] : cases) {
    const auto path = dir + "/" + name;
    ASSERT_TRUE(cv::imwrite(path, m));
    auto ours = data::read_image(path);
    EXPECT_EQ(ours.sizes(), (std::vector<int64_t>{3, 23, 31})) << name;
    EXPECT_TRUE(torch::equal(ours, opencv_rgb(path))) << name;
  }
  // Truncated: an error naming the file.
  const auto bytes = read_text(dir + "/rgb.png");
  std::ofstream(dir + "/cut.png", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  expect_error([&] { data::read_image(dir + "/cut.png"); }, {"cut.png", "cannot decode image"});
}

TEST(Image, PngWarningOncePerFile) {
  const auto dir = temp_dir("image_png_warn");
  cv::Mat bgr(8, 8, CV_8UC3, cv::Scalar(10, 20, 30));
  ASSERT_TRUE(cv::imwrite(dir + "/w.png", bgr));
  // An ancillary tEXt chunk with a wrong CRC after IHDR: libpng warns and discards it.
  std::string b = read_text(dir + "/w.png");
  const std::string chunk = std::string("\0\0\0\4tEXta\0bc\xde\xad\xbe\xef", 16);
  b.insert(33, chunk);
  std::ofstream(dir + "/w.png", std::ios::binary | std::ios::trunc) << b;
  testing::internal::CaptureStderr();
  auto first = data::read_image(dir + "/w.png");
  auto second = data::read_image(dir + "/w.png");
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_TRUE(torch::equal(first, second));
  EXPECT_EQ(first[0][0][0].item<int>(), 30);  // R of BGR (10, 20, 30)
  size_t count = 0;
  for (size_t p = 0; (p = err.find("libpng warning", p)) != std::string::npos; ++p) ++count;
  EXPECT_EQ(count, 1u) << err;
  EXPECT_NE(err.find("w.png"), std::string::npos) << err;
}

}  // namespace
}  // namespace cp2::test
