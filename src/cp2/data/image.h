// Reading images and listing image folders for pretraining (SPEC §6: any folder of
// images; ImageNet's root/<class>/<image> or flat).
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace cp2::data {

// 3 x H x W uint8 RGB, a view of interleaved H x W x 3 memory (what decoders produce,
// and what resized_crop reads fastest). Grey and 16-bit files are converted as PIL's convert("RGB")
// would; EXIF orientation is ignored (PIL does not apply it either). Throws cp2::Error
// naming the file when it is missing or cannot be decoded.
at::Tensor read_image(const std::string& path);

// Every image file (jpg, jpeg, png, bmp, webp, tif, tiff; any case) under `root`,
// recursively, sorted by path so the order is the same on every machine.
// Throws naming the folder when it is missing, not a folder, or holds no image.
std::vector<std::string> list_images(const std::string& root);

// OpenCV's ops (decodes of other formats, resizes, colour conversions) run inside cp2's own
// loader threads, N of them beside the step's intra-op threads: OpenCV's pool on top of each
// (every core by default) only oversubscribes the cores. Every dataset calls this; the pixels
// are the same either way.
void opencv_in_callers_thread_only();

}  // namespace cp2::data
