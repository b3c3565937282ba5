#include "cp2/train/keys.h"

#include <algorithm>

#include "cp2/common.h"
#include "cp2/data/prefetch.h"

namespace cp2::train {

void LoaderKeys::bind(config::Fields& f) {
  f.add_count_or_auto("data.workers", workers,
                      "loader threads: auto (2 for a CPU run; for a GPU run every core of the process but one) or N "
                      "(0 = load on the training thread)");
  f.add("data.prefetch", prefetch, "batches prepared ahead (at least one per loader thread)");
  f.add_choice("data.priority", priority, data::priority_choices(), data::priority_help());
}

int auto_workers(bool cuda, int cores_per_process) { return cuda ? std::max(2, cores_per_process - 1) : 2; }

std::string thread_counts(int loader_workers) {
  const int t = get_threads();
  return count_of(t, "thread") + " + " + count_of(loader_workers, "loader thread");
}

int LoaderKeys::workers_for(const std::string& device) const { return workers_for(device, cores_per_process()); }

int LoaderKeys::workers_for(const std::string& device, int cores) const {
  return workers == config::kAuto ? auto_workers(is_cuda_name(device), cores) : workers;
}

data::LoaderOptions LoaderKeys::loader_options(int64_t batch, const std::string& device) const {
  data::LoaderOptions l;
  l.batch = batch;
  l.workers = workers_for(device);
  l.prefetch = prefetch;
  l.priority = priority;
  return l;
}

void LoaderKeys::validate() const {
  if (workers != config::kAuto) config::require_at_least("data.workers", workers, 0);
  config::require_at_least("data.prefetch", prefetch, 1);
}

void bind_numerics(config::Fields& f, compute::NumericsOptions& n) {
  f.add_choice("train.precision", n.precision, compute::precision_choices(), compute::kPrecisionHelp);
  f.add_bool_or_auto("train.channels_last", n.channels_last, compute::kChannelsLastHelp);
  f.add_choice("train.conv_algorithm", n.conv_algorithm, compute::conv_algorithm_choices(),
               compute::conv_algorithm_help());
  f.add_choice("train.loss_scale", n.loss_scale, compute::loss_scale_choices(), compute::kLossScaleHelp);
  f.add("train.loss_scale_init", n.loss_scale_init, compute::kLossScaleInitHelp);
}

}  // namespace cp2::train
