// A run folder (OUT/config.yaml, log.jsonl, summary.json, checkpoints/checkpoint_*.pt,
// best.pt) that one run owns at a time: an exclusive lock for the run's lifetime, a fresh
// run refused where another run's files are, every file written atomically, the log
// continued from the resumed checkpoint.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "cp2/io/atomic_file.h"
#include "cp2/io/pickle.h"

namespace cp2::train {

namespace fs = std::filesystem;

// An absolute, normalised path without a trailing separator ("" stays "").
std::string absolute_path(const std::string& p);

// checkpoint_<step, 8 digits>.pt, so names sort in step order.
std::string checkpoint_name(int64_t step);
// The folder's checkpoint_*.pt files, oldest first (empty when the folder is missing).
std::vector<fs::path> list_checkpoints(const fs::path& dir);
// The newest checkpoint of a run folder (OUT/checkpoints/ or OUT itself), "" if none.
std::string latest_checkpoint(const fs::path& run);
// The files that show `dir` holds a run ("" when it holds none): best.pt, a non-empty
// log.jsonl, the newest checkpoint (config.yaml and summary.json alone are a run that
// failed before training, which a fresh run may take over).
std::string run_files(const fs::path& dir);
// Whether `dir` holds a run that stopped before its first checkpoint (a crash, a kill, a full
// disk): logged steps but no checkpoint and no best.pt. It cannot be resumed, only started
// again (`--auto-resume`).
bool stopped_before_first_checkpoint(const fs::path& dir);

// Where `--resume ARG` continues: the checkpoint file and the run folder to write into.
// ARG may be a run folder (its newest checkpoint), a checkpoint inside a run folder
// (RUN/checkpoints/x.pt or RUN/x.pt: that RUN), or "" (the newest checkpoint of
// `out`). `run` is "" for a checkpoint outside any run folder. Paths are absolute.
struct ResumeTarget {
  std::string checkpoint, run;
};
ResumeTarget locate_resume(const std::string& arg, const std::string& out);

// train.init resolved: the file as given, or, where it names a folder, the newest
// checkpoints/checkpoint_*.pt in it (a pretraining run handed to finetuning), so that the
// run's config records the file itself. A folder without one is an error naming it and `what`
// (the key or argument that gave it).
std::string init_checkpoint(const std::string& init, const std::string& what = "train.init");

class RunFolder {
 public:
  // Creates `out` and out/checkpoints, locks out/.lock (another cp2 run holding it is an
  // error naming its pid). A fresh run refuses a folder holding a run; with `take_over` it
  // starts over a run that stopped before its first checkpoint, its log kept aside.
  RunFolder(const fs::path& out, bool resuming, bool take_over = false);
  ~RunFolder();
  RunFolder(const RunFolder&) = delete;
  RunFolder& operator=(const RunFolder&) = delete;

  const fs::path& path() const { return out_; }
  // log.interrupted*.jsonl: where the log of a run taken over went ("" if none was).
  const std::string& set_aside_log() const { return set_aside_log_; }
  // Temp files of writes that a kill cut short (a second Ctrl-C, SIGKILL after a grace
  // period), removed on opening: a checkpoint's can be hundreds of MB. Paths relative to the folder.
  const io::RemovedTemps& removed_temps() const { return removed_; }
  fs::path checkpoints() const { return out_ / "checkpoints"; }

  // A run resumed from an older checkpoint than its newest: the later ones are renamed
  // superseded_checkpoint_*.pt (kept, but no longer what --resume picks). Returns them.
  std::vector<std::string> set_aside_after(int64_t step) const;
  // out/<name>, atomically.
  void write(const std::string& name, const std::string& text) const;
  // Opens log.jsonl for appending after rewriting it with only the lines `keep` accepts
  // (a resumed run continues the log from its checkpoint, never repeating steps).
  void open_log(const std::function<bool(const std::string& line)>& keep);
  void append_log(const std::string& line);  // one JSON record
  // checkpoints/checkpoint_<step>.pt, atomically, then all but the newest `keep_last`
  // deleted. Returns the path.
  std::string save_checkpoint(int64_t step, const py::ObjPtr& root, int keep_last) const;

 private:
  fs::path out_;
  std::string set_aside_log_;
  io::RemovedTemps removed_;
  int lock_fd_ = -1;
  std::FILE* log_ = nullptr;
};

}  // namespace cp2::train
