// `cp2 bench pretrain`: images/s of the data pipeline alone, the model step alone on a
// fixed batch, and end to end, plus peak RSS. One image = one training sample (a
// foreground image and two backgrounds: four crops, two composites).
#pragma once
#include <string>

#include "cp2/compute/fast_paths.h"
#include "cp2/compute/precision.h"
#include "cp2/config/fields.h"

namespace cp2::pretrain {

struct BenchOptions {
  std::string data;
  int arch = 50, size = 224, prefetch = 4;
  int workers = config::kAuto;  // loader threads, or auto: as data.workers (train::auto_workers)
  int64_t batch = 8, queue = 65536;
  std::string mode = "cp2";
  std::string priority = "idle";  // loader threads
  int steps = 5, warmup = 1;  // timed steps per phase and round; untimed steps first
  int rounds = 3;             // model-step and end-to-end phases alternate this many times
  int data_batches = 0;       // batches for the data phase (0 = 4 x steps)
  std::string device = "cpu";
  bool cache_allocator = true;  // cp2's caching CPU allocator, as in training
  compute::NumericsOptions numerics;  // train.precision, train.channels_last, train.conv_algorithm, ...
  // train.cuda_graph: off | on | auto; the timed steps go through the training loop's
  // StepRunner (a capture at the first timed shape, replays after it).
  std::string cuda_graph = "off";
  // > 0: after the count, --steps model steps under compute::OpProfiler, its top ops printed.
  // Eager steps: refused with cuda_graph "on" (a replayed graph shows the profiler no ops).
  int profile = 0;
  // Fast paths (compute/fast_paths.h: "bn-act,1x1-gemms") turned off in every other round (2, 4,
  // ...), for their gain measured in one process; "" = none.
  std::string alternate;
};

struct BenchResult {
  double data_img_s = 0, step_img_s = 0, e2e_img_s = 0;
  double data_wait_s = 0;  // end to end: time the step waited for the loader
  double peak_rss_mb = 0;
  double flops_per_img = 0;  // convolutions + matmuls of one training step, per image
  double peak_gflops = 0;    // the probe: the step's heaviest shapes alone
  // With --alternate: the pairs' ratios on / off (the rates above are of the on rounds).
  compute::Alternation step_on_off, e2e_on_off;
};

BenchResult bench_pretrain(const BenchOptions& o, bool verbose);

// `cp2 launch --nproc N -- bench allreduce`: the gradient all-reduce of a CP² query
// encoder (R`arch`-ASPP with projection), bucketed as the trainer's reducer does, timed
// over `rounds` after one warm-up. Bandwidth: algorithmic = bytes / time, bus = that
// x 2 (W - 1) / W (the data a ring all-reduce moves per rank).
struct AllReduceResult {
  int64_t parameters = 0, buckets = 0;
  double megabytes = 0, ms = 0, algo_gb_s = 0, bus_gb_s = 0;
};
AllReduceResult bench_allreduce(int arch, int rounds, int64_t bucket_bytes, bool verbose);

}  // namespace cp2::pretrain
