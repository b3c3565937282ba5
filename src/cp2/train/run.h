// What every training loop (pretraining, finetuning) shares: the device flag, the run
// folder's checkpoint naming and rotation, the torch RNG state, and the progress output.
#pragma once
#include <c10/core/Device.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "cp2/io/checkpoint.h"
#include "cp2/train/optim.h"

namespace cp2::train {

// "cpu", "cuda", "cuda:N"; throws naming `key` when malformed or when CUDA is unusable.
c10::Device parse_device(const std::string& s, const std::string& key = "train.device");

// Creates OUT/checkpoints and writes the resolved config to OUT/config.yaml; returns the
// checkpoints folder. Throws naming the path it cannot create or write.
std::filesystem::path prepare_run_folder(const std::filesystem::path& out, const std::string& config_text);

// Tensors as a checkpoint entry: an OrderedDict (what load_state_dict takes), on the CPU.
py::ObjPtr state_entry(io::TensorList tensors);

// checkpoint_<step, 8 digits>.pt, so names sort in step order.
std::string checkpoint_name(int64_t step);
// The folder's checkpoint_*.pt files, oldest first (empty when the folder is missing).
std::vector<std::filesystem::path> list_checkpoints(const std::filesystem::path& dir);
// Deletes all but the newest `keep` of them.
void rotate_checkpoints(const std::filesystem::path& dir, int keep);
// The newest checkpoint of a run folder (its checkpoints/ or itself), or the file itself.
std::string resolve_checkpoint(const std::string& file_or_run);

// The default CPU generator's state, as a checkpoint entry, and back.
py::ObjPtr rng_state();
void set_rng_state(const py::ObjPtr& rng);

// The optimizer as a checkpoint entry {name, state (buffers by parameter name, on the
// CPU)}; and back from root["optimizer"], strictly, refusing another optimizer's state.
py::ObjPtr optimizer_entry(const Optimizer& opt);
void load_optimizer_entry(Optimizer& opt, const py::ObjPtr& root, const std::string& path);

// Checks root["cp2"]["kind"] == kind; throws "<path>: not a <what> (...)" otherwise.
void expect_kind(const py::ObjPtr& root, const std::string& kind, const std::string& path, const std::string& what);

// An integer entry of a checkpoint's root, or an error naming the file and `what` it is not.
int64_t get_int(const py::ObjPtr& root, const std::string& key, const std::string& path, const std::string& what);

std::string fmt_time(double seconds);  // mm:ss or h:mm:ss

// A progress line redrawn in place on a terminal, printed every `log_every` steps otherwise.
class Progress {
 public:
  Progress(bool enabled, int64_t log_every);
  void update(const std::string& line, int64_t step, bool force);
  void message(const std::string& msg);  // on its own line
  void done();

 private:
  bool enabled_, tty_;
  int64_t every_;
  size_t width_ = 0;
};

// "[#####.....]" of `width` for done/total.
std::string bar(int64_t done, int64_t total, int width = 20);

}  // namespace cp2::train
