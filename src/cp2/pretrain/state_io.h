// Pretraining files: the batch format of `cp2 loss --batch` / `cp2 pretrain --dump-batch`
// and loading a CP² pretraining state (cp2's or the authors' key names).
#pragma once
#include <string>
#include <vector>

#include "cp2/data/batch.h"
#include "cp2/io/weights.h"
#include "cp2/pretrain/model.h"

namespace cp2::pretrain {

using Batch = data::Batch;

Batch load_batch(const std::string& path);  // validates keys and shapes, naming the file
void save_batch(const std::string& path, const Batch& b);

// The state dict of a pretraining checkpoint (under `state_dict`, `model` or the top
// level), `module.` prefixes stripped: encoder_q.*, encoder_k.*, queue, queue_ptr.
// The CP² authors' files also hold their ASPPHead's untrained 21-class classifier
// (encoder_q/encoder_k.decode_head.conv_seg.*): dropped, and named in `dropped`.
io::TensorList read_pretrain_state(const std::string& path, std::vector<std::string>* dropped = nullptr);
// `module.` prefixes (DataParallel) stripped.
io::TensorList strip_module(io::TensorList state);
// That filter alone, for a state dict already read.
io::TensorList drop_classifier(io::TensorList state, std::vector<std::string>* dropped = nullptr);

// Queue length K of such a state (its `queue` tensor), or 0 if none.
int64_t stored_queue_size(const io::TensorList& state);

// Loads a state from read_pretrain_state into `m`; `source` names it in the report.
io::LoadReport load_pretrain_state(CP2ModelImpl& m, const io::TensorList& state, const std::string& source,
                                   bool strict);
// Reads and loads in one go.
io::LoadReport load_pretrain_state(CP2ModelImpl& m, const std::string& path, bool strict);

}  // namespace cp2::pretrain
