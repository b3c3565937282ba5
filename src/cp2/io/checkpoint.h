// PyTorch checkpoint files: read both containers torch.save writes (zip since 1.6,
// the legacy stream before), write the zip container that torch.load reads.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "cp2/io/pickle.h"

namespace cp2::io {

enum class Format { Zip, Legacy };

struct Checkpoint {
  py::ObjPtr root;
  Format format = Format::Zip;
  std::string path;
};

// Ordered (name, tensor) pairs: a state dict.
using TensorList = std::vector<std::pair<std::string, at::Tensor>>;

// Reads a checkpoint file with no Python. Throws cp2::Error naming the file and what is
// wrong (missing, truncated, not a checkpoint, unsupported dtype).
Checkpoint load_checkpoint(const std::string& path);

// A checkpoint's objects with its tensors on the meta device (shapes and dtypes, no data):
// what reading its stored config needs. From the pickle alone where it is the file's first
// entry with its sizes in its header (cp2's checkpoints), so that resuming from a 1 GB
// checkpoint does not read it once more for its config; otherwise (torch.save's files defer
// the sizes to a data descriptor) the whole file is loaded and its tensors hold data.
Checkpoint load_checkpoint_structure(const std::string& path);

// Every leaf of nested dicts/lists, keys joined with dots (`state_dict.conv1.weight`,
// `optimizer.state.0.momentum_buffer`); leaves may be tensors or plain values.
std::vector<std::pair<std::string, py::ObjPtr>> flatten(const py::ObjPtr& root);

// Writes `root` (dicts, lists, tuples, str, int, float, bool, None, tensors) as a zip
// checkpoint that Python's torch.load reads. Atomic: temp file, flush, fsync, rename.
void save_checkpoint(const std::string& path, const py::ObjPtr& root);

// An OrderedDict of tensors (what torch's load_state_dict takes).
py::ObjPtr to_state_dict(const TensorList& tensors);

// Reads raw bytes of a file, or throws naming it.
std::string read_file(const std::string& path);

}  // namespace cp2::io
