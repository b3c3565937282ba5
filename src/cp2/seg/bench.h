// `cp2 bench finetune` / `cp2 bench evaluate`: images/s of a DeepLabV3 training step (on a
// fixed batch and end to end with the mmseg pipeline) and of whole-image evaluation, with
// peak RSS, on a generated VOC-layout dataset.
#pragma once
#include <string>

#include "cp2/compute/fast_paths.h"
#include "cp2/compute/precision.h"
#include "cp2/config/fields.h"

namespace cp2::seg {

struct SegBenchOptions {
  std::string data;  // a VOC-layout folder (e.g. cp2 synth --seg voc); "" = generate one in a temp folder
  int arch = 50, crop = 512, image_w = 500, image_h = 375;
  int scale = 512;  // train/test resize scale (4·scale, scale), as (2048, 512)
  int64_t batch = 4;
  int workers = config::kAuto;  // loader threads, or auto: as data.workers (train::auto_workers)
  int steps = 3, warmup = 1, rounds = 3, eval_images = 8;
  int data_batches = 0;  // finetune: batches timed through the loader alone first (0 = 4 x steps)
  std::string device = "cpu";
  compute::NumericsOptions numerics;  // train.precision, train.channels_last, train.conv_algorithm, ...
  int profile = 0;  // finetune: > 0 = --steps steps under compute::OpProfiler, its top ops printed
  // finetune: fast paths (compute/fast_paths.h) turned off in every other round; "" = none.
  std::string alternate;
};

struct SegBenchResult {
  double data_img_s = 0;  // finetune: the loader alone, all its threads
  double step_img_s = 0, e2e_img_s = 0, eval_img_s = 0, peak_rss_mb = 0;
  double flops_per_img = 0, peak_gflops = 0;  // training step (or one evaluated image); probe
  // finetune with --alternate: the pairs' ratios on / off (the rates above are of the on rounds).
  compute::Alternation step_on_off, e2e_on_off;
};

SegBenchResult bench_finetune(const SegBenchOptions& o, bool verbose);
SegBenchResult bench_evaluate(const SegBenchOptions& o, bool verbose);

}  // namespace cp2::seg
