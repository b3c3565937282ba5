// Config keys that `cp2 pretrain` and `cp2 finetune` share, bound in one place so that both
// commands name, document, dump and check them alike: the loader's (data.workers,
// data.prefetch, data.priority) and the numerics' (train.precision, train.channels_last,
// train.conv_algorithm, train.loss_scale, train.loss_scale_init).
#pragma once
#include <cstdint>
#include <string>

#include "cp2/compute/precision.h"
#include "cp2/config/fields.h"
#include "cp2/data/loader.h"

namespace cp2::train {

// The loader part of a command's `data` section (each config's data struct derives from it,
// so the keys stay `data.workers` and so on).
struct LoaderKeys {
  int workers = config::kAuto;  // loader threads: auto (auto_workers) or N (0 = on the training thread)
  int prefetch = 4;  // batches built ahead (at least one per loader thread: data::Prefetcher)
  std::string priority = "auto";  // loader threads' CPU priority: data::priority_choices()

  void bind(config::Fields& f);  // data.workers, data.prefetch, data.priority
  // data.workers for a run on `device` ("cpu", "cuda", "cuda:1"), auto resolved for this
  // process's cores (cores_per_process()), or for `cores` (tests name a machine's size).
  int workers_for(const std::string& device) const;
  int workers_for(const std::string& device, int cores) const;
  data::LoaderOptions loader_options(int64_t batch, const std::string& device) const;
  void validate() const;  // names the key and the value
};

// data.workers: auto. Beside a CPU step, 2: the loader threads share the step's cores, and 2
// keep ahead of every CPU step measured (docs/benchmarks.md: 113-576 img/s of data against
// 2-40 img/s of steps). Beside a GPU step, which leaves the cores free, every core of this
// process but one (the training thread's), at least 2: one GPU steps through ~1,600 img/s of
// R50-ASPP@224 (H200, AMP), a loader thread 55-90 (the authors load with 32 worker
// processes per 8-GPU node).
int auto_workers(bool cuda, int cores_per_process);

// "2 threads + 2 loader threads" (the intra-op threads set now): the start lines' account of
// where the cores go, so that auto's choice is seen.
std::string thread_counts(int loader_workers);

// train.precision, train.channels_last, train.conv_algorithm, train.loss_scale and
// train.loss_scale_init, bound to `n` (NumericsOptions::validate checks them).
void bind_numerics(config::Fields& f, compute::NumericsOptions& n);

}  // namespace cp2::train
