// `cp2 bench pretrain`: images/s of the data pipeline alone, the model step alone on a
// fixed batch, and end to end, plus peak RSS. One image = one training sample (a
// foreground image and two backgrounds: four crops, two composites).
#pragma once
#include <string>

namespace cp2::pretrain {

struct BenchOptions {
  std::string data;
  int arch = 50, size = 224, workers = 2, prefetch = 4;
  int64_t batch = 8, queue = 65536;
  std::string mode = "cp2";
  std::string priority = "idle";  // loader threads
  int steps = 5, warmup = 1;  // timed steps per phase and round; untimed steps first
  int rounds = 3;             // model-step and end-to-end phases alternate this many times
  int data_batches = 0;       // batches for the data phase (0 = 4 x steps)
  std::string device = "cpu";
  bool cache_allocator = true;  // cp2's caching CPU allocator, as in training
};

struct BenchResult {
  double data_img_s = 0, step_img_s = 0, e2e_img_s = 0;
  double data_wait_s = 0;  // end to end: time the step waited for the loader
  double peak_rss_mb = 0;
};

BenchResult bench_pretrain(const BenchOptions& o, bool verbose);

}  // namespace cp2::pretrain
