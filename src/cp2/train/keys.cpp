#include "cp2/train/keys.h"

#include "cp2/data/prefetch.h"

namespace cp2::train {

void LoaderKeys::bind(config::Fields& f) {
  f.add("data.workers", workers, "loader threads (0 = load on the training thread)");
  f.add("data.prefetch", prefetch, "batches prepared ahead");
  f.add_choice("data.priority", priority, data::priority_choices(), data::priority_help());
}

data::LoaderOptions LoaderKeys::loader_options(int64_t batch) const {
  data::LoaderOptions l;
  l.batch = batch;
  l.workers = workers;
  l.prefetch = prefetch;
  l.priority = priority;
  return l;
}

void LoaderKeys::validate() const {
  config::require_at_least("data.workers", workers, 0);
  config::require_at_least("data.prefetch", prefetch, 1);
}

void bind_numerics(config::Fields& f, compute::NumericsOptions& n) {
  f.add_choice("train.precision", n.precision, compute::precision_choices(), compute::kPrecisionHelp);
  f.add("train.channels_last", n.channels_last, compute::kChannelsLastHelp);
  f.add_choice("train.conv_algorithm", n.conv_algorithm, compute::conv_algorithm_choices(),
               compute::kConvAlgorithmHelp);
  f.add_choice("train.loss_scale", n.loss_scale, compute::loss_scale_choices(), compute::kLossScaleHelp);
  f.add("train.loss_scale_init", n.loss_scale_init, compute::kLossScaleInitHelp);
}

}  // namespace cp2::train
