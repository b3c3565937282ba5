// Module <-> state dict, with a detectron2-style load report.
#pragma once
#include <torch/nn/module.h>

#include <string>
#include <vector>

#include "cp2/io/checkpoint.h"

namespace cp2::io {

struct LoadReport {
  struct Mismatch {
    std::string key;
    std::vector<long> expected, found;
  };
  std::string source;
  std::vector<std::string> loaded, missing, unexpected;
  std::vector<Mismatch> mismatched;
  bool clean() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  // Multi-line text: counts, then every missing / unexpected / mismatched key.
  std::string str() const;
};

// Parameters and buffers in PyTorch's state_dict order (per module: own parameters,
// own buffers, then children), detached.
TensorList state_dict(const torch::nn::Module& m);

// Copies matching tensors into `m` (converting dtype and device). Loading zero tensors
// is always an error; in strict mode so is any missing, unexpected or mis-shaped key.
// BN's num_batches_tracked may be absent (old torchvision files lack it), as in PyTorch.
LoadReport load_state(torch::nn::Module& m, const TensorList& tensors, bool strict, const std::string& source);

}  // namespace cp2::io
