// `cp2 bench view`: the loader thread's per-view work op by op (augment.h's ops at MoCo v2's
// settings, ms per call), with the plain loops beside the AVX2 ones where both exist, then a
// whole view with drawn parameters and, given a file, its decode. The evidence behind the
// loader figures in docs/benchmarks.md; a CP² sample takes three decodes and four views.
#pragma once
#include <string>

namespace cp2::data {

struct ViewBenchOptions {
  std::string image;             // a JPEG/PNG to decode and crop; empty: random pixels
  int width = 500, height = 375;  // the random image's size (ImageNet's typical 500 x 375)
  int size = 224;                 // the view's side (view.size)
  int rounds = 200;               // calls per timing; the best of three timings is printed
  void validate() const;          // names the option and the value
};

void bench_view(const ViewBenchOptions& o);

}  // namespace cp2::data
