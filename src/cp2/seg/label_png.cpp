#include "cp2/seg/label_png.h"

#include <png.h>
#include <torch/torch.h>

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <map>

#include "cp2/common.h"
#include "cp2/io/atomic_file.h"
#include "cp2/io/checkpoint.h"

namespace cp2::seg {

namespace {

struct ErrState {
  char msg[256] = {0};
};

void on_error(png_structp png, png_const_charp msg) {
  auto* st = static_cast<ErrState*>(png_get_error_ptr(png));
  std::snprintf(st->msg, sizeof st->msg, "%s", msg);
  png_longjmp(png, 1);
}
void on_warning(png_structp, png_const_charp) {}

struct MemReader {
  const uint8_t* data;
  size_t size, off;
};

void read_mem(png_structp png, png_bytep out, png_size_t n) {
  auto* r = static_cast<MemReader*>(png_get_io_ptr(png));
  if (r->off + n > r->size) png_error(png, "file is truncated");
  std::memcpy(out, r->data + r->off, n);
  r->off += n;
}

// Decoded rows, before any label interpretation. Plain data: safe across longjmp.
struct Raw {
  uint32_t w = 0, h = 0;
  int depth = 0, color = 0, channels = 0;
  std::vector<uint8_t> pixels;  // rows of w * channels samples (16-bit: big-endian pairs)
};

// Returns "" on success, else libpng's message. No C++ objects with destructors are
// created between setjmp and a possible longjmp except `raw`, which outlives both.
std::string decode(const std::string& bytes, Raw& raw) {
  ErrState err;
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &err, on_error, on_warning);
  if (!png) return "out of memory";
  png_infop info = png_create_info_struct(png);
  if (!info) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    return "out of memory";
  }
  MemReader mr{reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), 0};
  std::vector<png_bytep> rows;
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    return err.msg[0] ? err.msg : "cannot decode";
  }
  png_set_read_fn(png, &mr, read_mem);
  png_read_info(png, info);
  raw.w = png_get_image_width(png, info);
  raw.h = png_get_image_height(png, info);
  raw.depth = png_get_bit_depth(png, info);
  raw.color = png_get_color_type(png, info);
  if (raw.depth < 8) png_set_packing(png);  // 1/2/4-bit indices or grey values, one per byte, unscaled
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  raw.channels = png_get_channels(png, info);
  const size_t rowbytes = png_get_rowbytes(png, info);
  raw.pixels.resize(rowbytes * raw.h);
  rows.resize(raw.h);
  for (uint32_t y = 0; y < raw.h; ++y) rows[y] = raw.pixels.data() + y * rowbytes;
  png_read_image(png, rows.data());
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  return "";
}

}  // namespace

at::Tensor read_label_png(const std::string& path, const Palette* colours) {
  const std::string bytes = io::read_file(path);
  if (bytes.size() < 8 || png_sig_cmp(reinterpret_cast<png_const_bytep>(bytes.data()), 0, 8) != 0)
    throw Error(path + ": not a PNG file (labels must be PNG)");
  Raw raw;
  auto msg = decode(bytes, raw);
  if (!msg.empty()) throw Error(path + ": cannot decode label PNG (" + msg + ")");
  const int64_t H = raw.h, W = raw.w;
  auto out = torch::empty({H, W}, torch::kUInt8);
  uint8_t* o = out.data_ptr<uint8_t>();
  const uint8_t* p = raw.pixels.data();
  const bool gray = raw.color == PNG_COLOR_TYPE_GRAY || raw.color == PNG_COLOR_TYPE_GRAY_ALPHA;
  if (raw.color == PNG_COLOR_TYPE_PALETTE || (gray && raw.depth <= 8)) {
    for (int64_t i = 0; i < H * W; ++i) o[i] = p[i * raw.channels];  // grey+alpha: the grey sample
    return out;
  }
  if (gray && raw.depth == 16) {
    for (int64_t i = 0; i < H * W; ++i) {
      const int v = p[i * 2 * raw.channels] << 8 | p[i * 2 * raw.channels + 1];
      if (v > 255)
        throw Error(path + ": 16-bit label value " + std::to_string(v) + " at pixel (" + std::to_string(i / W) + ", " +
                    std::to_string(i % W) + "); expected 0..255");
      o[i] = static_cast<uint8_t>(v);
    }
    return out;
  }
  // RGB(A): colour-coded labels.
  if (!colours)
    throw Error(path + ": colour (RGB) label PNG; expected palette-indexed or single-channel labels");
  if (raw.depth != 8) throw Error(path + ": 16-bit colour label PNG is not supported");
  std::map<uint32_t, uint8_t> lut;
  for (size_t c = 0; c < colours->size() && c < 256; ++c)
    lut.emplace((*colours)[c][0] << 16 | (*colours)[c][1] << 8 | (*colours)[c][2], static_cast<uint8_t>(c));
  lut.emplace(224u << 16 | 224u << 8 | 192u, 255);  // VOC's boundary colour
  for (int64_t i = 0; i < H * W; ++i) {
    const uint8_t* px = p + i * raw.channels;
    const uint32_t key = px[0] << 16 | px[1] << 8 | px[2];
    auto it = lut.find(key);
    if (it == lut.end())
      throw Error(path + ": colour (" + std::to_string(px[0]) + ", " + std::to_string(px[1]) + ", " +
                  std::to_string(px[2]) + ") at pixel (" + std::to_string(i / W) + ", " + std::to_string(i % W) +
                  ") is not in the dataset's palette");
    o[i] = it->second;
  }
  return out;
}

void write_label_png(const std::string& path, const at::Tensor& labels, const Palette& palette) {
  if (labels.dim() != 2 || labels.scalar_type() != torch::kUInt8)
    throw Error(path + ": labels to write must be H x W uint8");
  auto l = labels.contiguous().to(torch::kCPU);
  const int64_t H = l.size(0), W = l.size(1);
  std::vector<png_color> pal(256);
  for (int i = 0; i < 256; ++i) {
    std::array<uint8_t, 3> c{0, 0, 0};
    if (i < static_cast<int>(palette.size())) c = palette[i];
    else if (i == 255) c = {224, 224, 192};
    pal[i] = {c[0], c[1], c[2]};
  }
  const std::string tmp = io::temp_path(path);
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error(path + ": cannot write (" + std::strerror(errno) + ")");
  ErrState err;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &err, on_error, on_warning);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  std::vector<png_bytep> rows(H);
  const uint8_t* d = l.data_ptr<uint8_t>();
  for (int64_t y = 0; y < H; ++y) rows[y] = const_cast<png_bytep>(d + y * W);
  volatile bool ok = png && info;  // volatile: read after a possible longjmp
  if (ok && setjmp(png_jmpbuf(png))) {
    ok = false;
  } else if (ok) {
    png_init_io(png, f);
    png_set_IHDR(png, info, static_cast<png_uint_32>(W), static_cast<png_uint_32>(H), 8, PNG_COLOR_TYPE_PALETTE,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_set_PLTE(png, info, pal.data(), 256);
    png_write_info(png, info);
    png_write_image(png, rows.data());
    png_write_end(png, nullptr);
  }
  png_destroy_write_struct(&png, &info);
  const bool closed = std::fclose(f) == 0;
  if (!ok || !closed) {
    std::remove(tmp.c_str());
    throw Error(path + ": cannot write PNG (" + (err.msg[0] ? std::string(err.msg) : "disk full?") + ")");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error(path + ": cannot write (" + std::strerror(errno) + ")");
  }
}

}  // namespace cp2::seg
