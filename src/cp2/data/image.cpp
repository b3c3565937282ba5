#include "cp2/data/image.h"

#include <torch/torch.h>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <set>
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

// PNGs decode through libpng here rather than OpenCV's copy, whose warnings ("iCCP:
// known incorrect sRGB profile") go to stderr on every read, i.e. every epoch: cp2 prints
// a file's warning once, as for JPEGs. 8-bit RGB out: palette and grey expanded, 16-bit
// truncated and alpha dropped as cv::imread(IMREAD_COLOR) does.
struct PngState {
  char error[256] = {0};
  char warning[256] = {0};
  const uint8_t* data = nullptr;
  size_t size = 0, off = 0;
};

void png_fail(png_structp png, png_const_charp msg) {
  auto* st = static_cast<PngState*>(png_get_error_ptr(png));
  std::snprintf(st->error, sizeof st->error, "%s", msg);
  png_longjmp(png, 1);
}

void png_warn(png_structp png, png_const_charp msg) {
  auto* st = static_cast<PngState*>(png_get_error_ptr(png));
  if (!st->warning[0]) std::snprintf(st->warning, sizeof st->warning, "%s", msg);
}

void png_read_mem(png_structp png, png_bytep out, png_size_t n) {
  auto* st = static_cast<PngState*>(png_get_error_ptr(png));
  if (st->off + n > st->size) png_error(png, "file is truncated");
  std::memcpy(out, st->data + st->off, n);
  st->off += n;
}

void warn_once(const std::string& path, const std::string& msg) {
  static std::mutex mu;
  static std::set<std::string> seen;
  std::lock_guard<std::mutex> lk(mu);
  if (seen.insert(path).second) std::fprintf(stderr, "warning: %s: %s (shown once per file)\n", path.c_str(), msg.c_str());
}

// The two libpng stages, each returning false after a libpng error (setjmp in a frame
// that holds no C++ objects with destructors).
bool png_header(png_structp png, png_infop info, PngState* st, png_uint_32* w, png_uint_32* h) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_set_read_fn(png, st, png_read_mem);
  png_read_info(png, info);
  *w = png_get_image_width(png, info);
  *h = png_get_image_height(png, info);
  png_set_expand(png);       // palette -> RGB, grey < 8 bit -> 8 bit, tRNS -> alpha
  png_set_strip_16(png);     // 16 -> 8 bit (truncation, as OpenCV)
  png_set_strip_alpha(png);  // alpha dropped, not composited (as IMREAD_COLOR)
  png_set_gray_to_rgb(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  if (png_get_rowbytes(png, info) != static_cast<size_t>(*w) * 3) png_error(png, "unexpected row layout");
  return true;
}

bool png_pixels(png_structp png, png_infop info, png_bytep* rows) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_read_image(png, rows);
  png_read_end(png, nullptr);
  return true;
}

at::Tensor decode_png(const std::string& path, const std::string& bytes) {
  PngState st;
  st.data = reinterpret_cast<const uint8_t*>(bytes.data());
  st.size = bytes.size();
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &st, png_fail, png_warn);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  auto fail = [&](const std::string& why) {
    png_destroy_read_struct(&png, &info, nullptr);
    return Error(path + ": cannot decode image (" + why + ")");
  };
  if (!png || !info) throw fail("out of memory");
  png_uint_32 w = 0, h = 0;
  if (!png_header(png, info, &st, &w, &h)) throw fail(st.error);
  auto t = torch::empty({static_cast<int64_t>(h), static_cast<int64_t>(w), 3}, torch::kUInt8);
  std::vector<png_bytep> rows(h);
  for (png_uint_32 y = 0; y < h; ++y) rows[y] = t.data_ptr<uint8_t>() + static_cast<size_t>(y) * w * 3;
  if (!png_pixels(png, info, rows.data())) throw fail(st.error);
  png_destroy_read_struct(&png, &info, nullptr);
  if (st.warning[0]) warn_once(path, std::string("libpng warning: ") + st.warning);
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
    static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
    if (bytes.size() >= 8 && std::memcmp(bytes.data(), kPng, 8) == 0) return decode_png(path, bytes);
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

void opencv_in_callers_thread_only() { cv::setNumThreads(0); }

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
