// Checkpoint entries every training loop stores beside its model: tensors as an
// OrderedDict on the CPU, the torch RNG state, the optimizer state, and the checks that
// a file is the kind of cp2 checkpoint a command expects.
#pragma once
#include <c10/core/Device.h>

#include <cstdint>
#include <string>

#include "cp2/io/checkpoint.h"
#include "cp2/train/optim.h"

namespace cp2::train {

// "cpu", "cuda", "cuda:N"; throws naming `key` when malformed or when CUDA is unusable. A CUDA
// device comes back with its index (dist::process_cuda_device, from LOCAL_RANK and LOCAL_WORLD_SIZE) and
// becomes the process's current device; it also turns on cuDNN autotuning for the process
// (the authors' cudnn.benchmark = True).
c10::Device parse_device(const std::string& s, const std::string& key = "train.device");
// The name alone ("gpu" refused), for a config's validate(): whether CUDA is there is
// parse_device's question, asked where the run starts.
void check_device_name(const std::string& s, const std::string& key = "train.device");

// Tensors as a checkpoint entry: an OrderedDict (what load_state_dict takes), on the CPU.
py::ObjPtr state_entry(io::TensorList tensors);

// The default CPU generator's state, as a checkpoint entry, and back.
py::ObjPtr rng_state();
void set_rng_state(const py::ObjPtr& rng);

// The optimizer as a checkpoint entry {name, state (buffers by parameter name, on the
// CPU)}; and back from root["optimizer"], strictly, refusing another optimizer's state.
py::ObjPtr optimizer_entry(const Optimizer& opt);
void load_optimizer_entry(Optimizer& opt, const py::ObjPtr& root, const std::string& path);

// What a command expects of a cp2 checkpoint: cp2.kind, the words for it, the command
// that writes and resumes it.
struct CheckpointKind {
  std::string kind;     // "pretrain" | "finetune"
  std::string what;     // "cp2 pretraining checkpoint"
  std::string command;  // "cp2 pretrain"
};
const CheckpointKind& pretrain_kind();
const CheckpointKind& finetune_kind();

// root["cp2"]["kind"] or "" when the file is not a cp2 training checkpoint.
std::string kind_of(const py::ObjPtr& root);
// Throws one line that says what the file is and what to do with it, unless it is `k`.
void expect_kind(const py::ObjPtr& root, const CheckpointKind& k, const std::string& path);

// An integer entry of a checkpoint's root, or an error naming the file and `what` it is not.
int64_t get_int(const py::ObjPtr& root, const std::string& key, const std::string& path, const std::string& what);
// The resolved config a cp2 training checkpoint stores (kind checked).
std::string stored_config(const py::ObjPtr& root, const CheckpointKind& k, const std::string& path);

}  // namespace cp2::train
