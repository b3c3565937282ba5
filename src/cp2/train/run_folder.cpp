#include "cp2/train/run_folder.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "cp2/common.h"
#include "cp2/io/atomic_file.h"
#include "cp2/io/checkpoint.h"

namespace cp2::train {

std::string checkpoint_name(int64_t step) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "checkpoint_%08lld.pt", static_cast<long long>(step));
  return buf;
}

std::vector<fs::path> list_checkpoints(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (auto& e : fs::directory_iterator(dir, ec)) {
    auto n = e.path().filename().string();
    if (n.rfind("checkpoint_", 0) == 0 && e.path().extension() == ".pt") out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string latest_checkpoint(const fs::path& run) {
  auto list = list_checkpoints(run / "checkpoints");
  if (list.empty()) list = list_checkpoints(run);
  return list.empty() ? "" : list.back().string();
}

std::string run_files(const fs::path& dir) {
  // What a run leaves that is worth keeping: trained weights or logged steps. A run that
  // failed before its first step (only config.yaml / summary.json) is taken over.
  std::string found;
  std::error_code ec;
  if (fs::exists(dir / "best.pt", ec)) found = "best.pt";
  if (fs::file_size(dir / "log.jsonl", ec) > 0 && !ec) found += (found.empty() ? "" : ", ") + std::string("log.jsonl");
  auto last = latest_checkpoint(dir);
  if (!last.empty()) found += (found.empty() ? "" : ", ") + fs::relative(last, dir, ec).string();
  return found;
}

bool stopped_before_first_checkpoint(const fs::path& dir) {
  std::error_code ec;
  const auto log_size = fs::file_size(dir / "log.jsonl", ec);
  return !ec && log_size > 0 && !fs::exists(dir / "best.pt", ec) && latest_checkpoint(dir).empty();
}

namespace {

// A finetuning run's best.pt without a checkpoint (checkpoints/ deleted to save space): its
// weights are there, its optimizer state is not. What can be done with them.
bool best_only(const fs::path& dir) {
  std::error_code ec;
  return fs::is_regular_file(dir / "best.pt", ec) && latest_checkpoint(dir).empty();
}
std::string best_only_uses(const std::string& shown) {
  return "evaluate them with cp2 evaluate " + shown + ", or finetune from them into another folder with --init " +
         shown + "/best.pt";
}

// The refusal of --resume where there is no checkpoint: what to do depends on why.
Error no_checkpoint(const std::string& shown, const fs::path& dir) {
  if (stopped_before_first_checkpoint(dir))
    return Error(shown + ": no checkpoint to resume: its run stopped before the first checkpoint (log.jsonl only); "
                 "start it again with --auto-resume (its log is kept aside), or choose another --out");
  if (best_only(dir))
    return Error(shown + ": no checkpoint to resume: it holds best.pt (weights only, no optimizer state) and no " +
                 shown + "/checkpoints/checkpoint_*.pt; " + best_only_uses(shown));
  return Error(shown + ": no checkpoint to resume (expected " + shown + "/checkpoints/checkpoint_*.pt)");
}

}  // namespace

std::string absolute_path(const std::string& p) {
  if (p.empty()) return p;
  fs::path a = fs::absolute(p).lexically_normal();
  if (a.has_parent_path() && a.filename().empty()) a = a.parent_path();  // "run/" -> "run"
  return a.string();
}

ResumeTarget locate_resume(const std::string& arg, const std::string& out) {
  std::error_code ec;
  ResumeTarget t;
  if (arg.empty()) {
    if (out.empty()) throw Error("--resume: no checkpoint given and no run folder (--out) to resume");
    t.run = absolute_path(out);
    t.checkpoint = latest_checkpoint(t.run);
    if (t.checkpoint.empty()) throw no_checkpoint(out, t.run);
    return t;
  }
  const fs::path p = absolute_path(arg);
  if (fs::is_directory(p, ec)) {
    t.checkpoint = latest_checkpoint(p);
    if (t.checkpoint.empty()) throw no_checkpoint(arg, p);
    t.run = p.filename() == "checkpoints" ? p.parent_path().string() : p.string();
    return t;
  }
  if (!fs::is_regular_file(p, ec)) throw Error(arg + ": no such checkpoint or run folder");
  t.checkpoint = p.string();
  fs::path dir = p.parent_path();
  if (dir.filename() == "checkpoints") t.run = dir.parent_path().string();
  else if (fs::exists(dir / "config.yaml", ec) || fs::is_directory(dir / "checkpoints", ec)) t.run = dir.string();
  return t;
}

std::string init_checkpoint(const std::string& init, const std::string& what) {
  std::error_code ec;
  if (init.empty() || !fs::is_directory(init, ec)) return init;
  auto file = latest_checkpoint(init);
  if (file.empty())
    throw Error(what + ": " + init + " is a folder without checkpoints (expected a checkpoint file, or a run folder "
                "holding checkpoints/checkpoint_*.pt)");
  return file;
}

namespace {

// The pid written into a lock file by its holder (0 when unreadable).
long lock_holder(const fs::path& lock) {
  std::ifstream f(lock);
  long pid = 0;
  f >> pid;
  return pid;
}

}  // namespace

RunFolder::RunFolder(const fs::path& out, bool resuming, bool take_over) : out_(absolute_path(out.string())) {
  std::error_code ec;
  fs::create_directories(out_, ec);
  if (ec) throw Error(out_.string() + ": cannot create run folder (" + ec.message() + ")");
  const fs::path lock = out_ / ".lock";
  lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) throw Error(lock.string() + ": cannot open run-folder lock (" + std::strerror(errno) + ")");
  // A throwing constructor runs no destructor: every failure below releases the lock.
  auto fail = [&](const std::string& msg) {
    ::close(lock_fd_);
    lock_fd_ = -1;
    return Error(msg);
  };
  if (flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    const long pid = lock_holder(lock);
    throw fail(out_.string() + ": in use by another cp2 run (pid " + (pid ? std::to_string(pid) : "unknown") +
               "); wait for it to end, or choose another --out");
  }
  // The holder's pid, for a second run's message (the lock holds without it).
  const std::string pid = std::to_string(getpid()) + "\n";
  if (ftruncate(lock_fd_, 0) == 0) (void)!pwrite(lock_fd_, pid.data(), pid.size(), 0);
  if (!resuming) {
    const std::string files = run_files(out_);
    if (!files.empty() && stopped_before_first_checkpoint(out_)) {
      if (!take_over)
        throw fail(out_.string() + ": holds a run that stopped before its first checkpoint (log.jsonl only, nothing "
                   "to resume); start it again with --auto-resume (its log is kept aside), or choose another --out");
      // Its steps are redone from the start; their log stays readable beside the new one.
      fs::path aside = out_ / "log.interrupted.jsonl";
      for (int k = 2; fs::exists(aside, ec); ++k) aside = out_ / ("log.interrupted." + std::to_string(k) + ".jsonl");
      fs::rename(out_ / "log.jsonl", aside, ec);
      if (ec)
        throw fail((out_ / "log.jsonl").string() + ": cannot set aside the log of the run that stopped (" +
                   ec.message() + ")");
      set_aside_log_ = aside.filename().string();
    } else if (!files.empty() && best_only(out_)) {
      throw fail(out_.string() + ": already holds a run (" + files + ") with no checkpoint to continue from; " +
                 best_only_uses(out_.string()) + ", or choose another --out");
    } else if (!files.empty()) {
      throw fail(out_.string() + ": already holds a run (" + files + "); continue it with --resume " + out_.string() +
                 ", or choose another --out");
    }
  }
  fs::create_directories(checkpoints(), ec);
  if (ec) throw fail(checkpoints().string() + ": cannot create (" + ec.message() + ")");
  // Every write into the folder happens under the lock now held, so another run's temp files
  // are those of a write killed half way; a live process on this machine is left alone all
  // the same (a report written just after its run released the lock).
  for (const fs::path& dir : {out_, checkpoints()}) {
    const auto gone = io::remove_killed_writes(dir.string());
    for (const auto& p : gone.paths) removed_.paths.push_back(fs::relative(p, out_, ec).string());
    removed_.bytes += gone.bytes;
  }
  std::sort(removed_.paths.begin(), removed_.paths.end());  // one sorted list over both folders
}

RunFolder::~RunFolder() {
  if (log_) std::fclose(log_);
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

std::vector<std::string> RunFolder::set_aside_after(int64_t step) const {
  std::vector<std::string> moved;
  const std::string mine = checkpoint_name(step);
  for (auto& c : list_checkpoints(checkpoints()))
    if (c.filename().string() > mine) {
      std::error_code ec;
      fs::rename(c, c.parent_path() / ("superseded_" + c.filename().string()), ec);
      if (!ec) moved.push_back(c.filename().string());
    }
  return moved;
}

void RunFolder::write(const std::string& name, const std::string& text) const {
  io::write_file_atomic((out_ / name).string(), text);
}

void RunFolder::open_log(const std::function<bool(const std::string&)>& keep) {
  const fs::path path = out_ / "log.jsonl";
  std::error_code ec;
  if (fs::exists(path, ec)) {
    std::ifstream in(path);
    std::string kept, line;
    size_t dropped = 0;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      if (keep(line)) kept += line + "\n";
      else ++dropped;
    }
    if (dropped) io::write_file_atomic(path.string(), kept);
  }
  log_ = std::fopen(path.c_str(), "a");
  if (!log_) throw Error(path.string() + ": cannot write (" + std::strerror(errno) + ")");
}

void RunFolder::append_log(const std::string& line) {
  if (!log_) return;
  if (std::fprintf(log_, "%s\n", line.c_str()) < 0 || std::fflush(log_) != 0)
    throw Error((out_ / "log.jsonl").string() + ": cannot write (" + std::strerror(errno) + ")");
}

std::string RunFolder::save_checkpoint(int64_t step, const py::ObjPtr& root, int keep_last) const {
  const fs::path path = checkpoints() / checkpoint_name(step);
  io::save_checkpoint(path.string(), root);
  // Rotate among this step and older ones: the file just written is never the one deleted.
  std::vector<fs::path> older;
  for (auto& c : list_checkpoints(checkpoints()))
    if (c.filename().string() <= path.filename().string()) older.push_back(c);
  std::error_code ec;
  for (size_t i = 0; i + static_cast<size_t>(keep_last) < older.size(); ++i) fs::remove(older[i], ec);
  return path.string();
}

}  // namespace cp2::train
