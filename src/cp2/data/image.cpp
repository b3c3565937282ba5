#include "cp2/data/image.h"

#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "cp2/common.h"

namespace fs = std::filesystem;

namespace cp2::data {

at::Tensor read_image(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) throw Error(path + ": image not found");
  cv::Mat m;
  try {
    m = cv::imread(path, cv::IMREAD_COLOR | cv::IMREAD_IGNORE_ORIENTATION);
  } catch (const cv::Exception& e) {
    throw Error(path + ": cannot decode image (" + e.what() + ")");
  }
  if (m.empty() || m.rows < 1 || m.cols < 1) throw Error(path + ": cannot decode image (corrupt or unsupported format)");
  cv::Mat rgb;
  cv::cvtColor(m, rgb, cv::COLOR_BGR2RGB);
  auto t = torch::from_blob(rgb.data, {rgb.rows, rgb.cols, 3}, torch::kUInt8);
  return t.permute({2, 0, 1}).contiguous();
}

void write_image(const std::string& path, const at::Tensor& img) {
  auto t = img.to(torch::kCPU).to(torch::kUInt8);
  cv::Mat out;
  if (t.dim() == 2) {
    t = t.contiguous();
    out = cv::Mat(t.size(0), t.size(1), CV_8UC1, t.data_ptr()).clone();
  } else if (t.dim() == 3 && t.size(0) == 3) {
    auto hwc = t.permute({1, 2, 0}).contiguous();
    cv::Mat rgb(hwc.size(0), hwc.size(1), CV_8UC3, hwc.data_ptr());
    cv::cvtColor(rgb, out, cv::COLOR_RGB2BGR);
  } else {
    throw Error(path + ": write_image expects 3 x H x W or H x W, found " + shape_str(t.sizes().vec()));
  }
  bool ok = false;
  try {
    ok = cv::imwrite(path, out);
  } catch (const cv::Exception& e) {
    throw Error(path + ": cannot write image (" + e.what() + ")");
  }
  if (!ok) throw Error(path + ": cannot write image (unsupported extension or unwritable folder)");
}

static bool is_image_name(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  for (const char* e : {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
    if (ext == e) return true;
  return false;
}

std::vector<std::string> list_images(const std::string& root) {
  std::error_code ec;
  if (!fs::exists(root, ec)) throw Error(root + ": image folder not found");
  if (!fs::is_directory(root, ec)) throw Error(root + ": expected an image folder, found a file");
  std::vector<std::string> out;
  for (auto it = fs::recursive_directory_iterator(root, fs::directory_options::follow_directory_symlink, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) throw Error(root + ": cannot list folder (" + ec.message() + ")");
    if (it->is_regular_file(ec) && is_image_name(it->path())) out.push_back(it->path().string());
  }
  if (out.empty())
    throw Error(root + ": no images found (expected root/<class>/<image> or root/<image> with extension jpg, "
                       "jpeg, png, bmp, webp, tif or tiff)");
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace cp2::data
