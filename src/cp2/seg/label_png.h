// Label maps as PNG files. Label PNGs are read with libpng *without* palette expansion:
// VOC's SegmentationClass/ files are palette PNGs whose palette indices are the labels,
// which OpenCV would turn into colours (SPEC §6).
#pragma once
#include <ATen/core/Tensor.h>

#include <array>
#include <string>
#include <vector>

namespace cp2::seg {

using Palette = std::vector<std::array<uint8_t, 3>>;  // colour of label 0, 1, ...

// H x W uint8 labels: palette indices (palette PNG), values (8-bit grey; 16-bit grey
// when every value is <= 255). RGB(A) files are mapped back through `colours` when given
// (an unknown colour is an error naming it), and refused otherwise. Throws cp2::Error
// naming the file on anything else.
at::Tensor read_label_png(const std::string& path, const Palette* colours = nullptr);

// Writes H x W uint8 labels as an 8-bit palette PNG (every index gets a palette entry:
// `palette` first, 255 = ignore drawn light grey, the rest black).
void write_label_png(const std::string& path, const at::Tensor& labels, const Palette& palette);

}  // namespace cp2::seg
