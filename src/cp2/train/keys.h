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
  int workers = 2;   // loader threads (0 = build batches on the training thread)
  int prefetch = 4;  // batches built ahead
  std::string priority = "auto";  // loader threads' CPU priority: data::priority_choices()

  void bind(config::Fields& f);  // data.workers, data.prefetch, data.priority
  data::LoaderOptions loader_options(int64_t batch) const;
  void validate() const;  // names the key and the value
};

// train.precision, train.channels_last, train.conv_algorithm, train.loss_scale and
// train.loss_scale_init, bound to `n` (NumericsOptions::validate checks them).
void bind_numerics(config::Fields& f, compute::NumericsOptions& n);

}  // namespace cp2::train
