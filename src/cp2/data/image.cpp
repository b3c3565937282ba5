#include "cp2/data/image.h"

#include <torch/torch.h>

#include <jpeglib.h>
#include <jerror.h>

#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <filesystem>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "cp2/common.h"
#include "cp2/io/checkpoint.h"

namespace fs = std::filesystem;

namespace cp2::data {

namespace {

// JPEGs (ImageNet is all JPEG) decode through libjpeg-turbo straight into RGB planes:
// a third faster than cv::imread's BGR output + reordering. PIL (the authors' loader)
// refuses truncated files, so a premature end of data is an error here too.
struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char msg[JMSG_LENGTH_MAX] = {0};
};

void jpeg_fail(j_common_ptr c) {
  auto* e = reinterpret_cast<JpegError*>(c->err);
  c->err->format_message(c, e->msg);
  std::longjmp(e->jump, 1);
}

void jpeg_warn(j_common_ptr c, int level) {
  if (level >= 0) return;  // trace messages
  auto* e = reinterpret_cast<JpegError*>(c->err);
  if (c->err->msg_code == JWRN_JPEG_EOF) {  // truncated file
    c->err->format_message(c, e->msg);
    std::longjmp(e->jump, 1);
  }
}

// Returns an undefined tensor when libjpeg cannot give RGB (CMYK/YCCK): OpenCV then.
at::Tensor decode_jpeg(const std::string& path, const std::string& bytes) {
  jpeg_decompress_struct cinfo{};
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_fail;
  err.mgr.emit_message = jpeg_warn;
  at::Tensor t;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    throw Error(path + ": cannot decode image (" + err.msg + ")");
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
    jpeg_destroy_decompress(&cinfo);
    return {};
  }
  cinfo.out_color_space = JCS_RGB;
  jpeg_start_decompress(&cinfo);
  const int64_t H = cinfo.output_height, W = cinfo.output_width;
  t = torch::empty({H, W, 3}, torch::kUInt8);  // scanlines go straight into it
  uint8_t* p = t.data_ptr<uint8_t>();
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW r = p + static_cast<int64_t>(cinfo.output_scanline) * W * 3;
    jpeg_read_scanlines(&cinfo, &r, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return t.permute({2, 0, 1});
}

}  // namespace

at::Tensor read_image(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) throw Error(path + ": image not found");
  {
    const std::string bytes = io::read_file(path);
    if (bytes.size() >= 3 && static_cast<uint8_t>(bytes[0]) == 0xFF && static_cast<uint8_t>(bytes[1]) == 0xD8 &&
        static_cast<uint8_t>(bytes[2]) == 0xFF) {
      auto t = decode_jpeg(path, bytes);
      if (t.defined()) return t;
    }
  }
  cv::Mat m;
  try {
    m = cv::imread(path, cv::IMREAD_COLOR | cv::IMREAD_IGNORE_ORIENTATION);
  } catch (const cv::Exception& e) {
    throw Error(path + ": cannot decode image (" + e.what() + ")");
  }
  if (m.empty() || m.rows < 1 || m.cols < 1) throw Error(path + ": cannot decode image (corrupt or unsupported format)");
  // BGR -> RGB straight into the tensor's memory (no ATen kernel: loader threads).
  auto t = torch::empty({m.rows, m.cols, 3}, torch::kUInt8);
  cv::Mat dst(m.rows, m.cols, CV_8UC3, t.data_ptr<uint8_t>());
  cv::cvtColor(m, dst, cv::COLOR_BGR2RGB);
  return t.permute({2, 0, 1});
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
