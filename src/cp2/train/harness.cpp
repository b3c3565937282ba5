#include "cp2/train/harness.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <exception>
#include <map>
#include <mutex>

#include "cp2/config/fields.h"
#include "cp2/dist/comm.h"
#include "cp2/io/checkpoint.h"
#include "cp2/train/optim.h"

namespace cp2::train {

double Pace::img_per_s() const { return static_cast<double>(done * batch) / std::max(elapsed_s, 1e-9); }

double Pace::eta_s() const { return static_cast<double>(left) * elapsed_s / static_cast<double>(std::max<int64_t>(done, 1)); }

nlohmann::json pace_fields(const Pace& pace, double data_wait_s, double allreduce_wait_s, const Optimizer& opt) {
  nlohmann::json j{{"img_per_s", pace.img_per_s()},
                   {"data_wait_s", data_wait_s},
                   {"elapsed_s", pace.elapsed_s},
                   {"grad_allreduce_wait_s", allreduce_wait_s},
                   {"rss_mib", rss_mib()}};
  if (opt.loss_scaling()) j.update({{"loss_scale", opt.loss_scale()}, {"skipped_steps", opt.skipped_steps()}});
  return j;
}

std::vector<std::string> model_key_changes(const std::string& stored_yaml, const std::string& yaml) {
  std::map<std::string, std::string> stored;
  for (auto& [k, v] : config::flatten_yaml(stored_yaml, "stored config")) stored[k] = v;
  std::vector<std::string> out;
  for (const auto& [k, v] : config::flatten_yaml(yaml, "config")) {
    if (k.rfind("model.", 0) != 0) continue;
    auto it = stored.find(k);
    if (it != stored.end() && it->second != v) out.push_back(k + ": the checkpoint has " + it->second + ", asked " + v);
  }
  return out;
}

Harness::Harness(HarnessOptions o) : o_(std::move(o)), progress_(o_.progress && o_.main, o_.log_every) {
  if (o_.main) {
    folder_ = std::make_unique<RunFolder>(o_.out, !o_.resume.empty(), o_.take_over);
    path_ = folder_->path();
    if (!folder_->set_aside_log().empty())  // shown with --quiet too: it changes the folder
      std::fprintf(stderr, "%s: its run stopped before the first checkpoint; starting it again (its log is now %s)\n",
                   path_.c_str(), folder_->set_aside_log().c_str());
    if (const auto line = io::describe(folder_->removed_temps(), path_); !line.empty())
      std::fprintf(stderr, "%s\n", line.c_str());
  } else {
    path_ = absolute_path(o_.out);
  }
  if (o_.resume.empty()) return;
  const auto target = locate_resume(o_.resume, "");  // a run folder: its newest checkpoint
  o_.resume = target.checkpoint;
  auto ck = io::load_checkpoint(o_.resume);
  resumed_ = ck.root;
  const std::string stored = stored_config(resumed_, o_.kind, o_.resume);
  auto changes = model_key_changes(stored, o_.config_yaml);
  if (!changes.empty()) {
    std::string msg = o_.resume + ": model settings cannot change on resume (";
    for (size_t i = 0; i < changes.size(); ++i) msg += (i ? "; " : "") + changes[i];
    throw Error(msg + "); drop those settings to continue this run, or start a new run from its weights with --init " +
                o_.resume);
  }
  // Continuing into another folder (a fork: --resume A --out B) needs B free of other runs.
  if (o_.main && target.run != path_.string()) {
    const std::string files = run_files(path_);
    if (!files.empty())
      throw Error(path_.string() + ": already holds another run (" + files + "); to continue " + o_.resume +
                  " there, choose an empty --out, or resume into its own run folder " +
                  (target.run.empty() ? std::string("(none)") : target.run));
  }
}

Harness::~Harness() = default;

std::unique_ptr<Harness> open_harness(dist::Comm& comm, HarnessOptions o) {
  if (comm.size() == 1) {
    auto h = std::make_unique<Harness>(std::move(o));
    h->comm_ = &comm;
    return h;
  }
  std::unique_ptr<Harness> h;
  dist::run_on_all(comm, "opening the run folder", [&] {
    if (comm.main()) h = std::make_unique<Harness>(o);
  });
  const std::string file = dist::broadcast_string(comm, comm.main() ? h->resumed_path() : "", "resume");
  dist::run_on_all(comm, "loading the checkpoint to resume", [&] {
    if (comm.main()) return;
    o.resume = file;
    o.main = false;
    h = std::make_unique<Harness>(o);
  });
  h->comm_ = &comm;
  return h;
}

void Harness::release_resumed() {
  resumed_.reset();
#if defined(__GLIBC__)
  // Its tensors were freed to glibc's heap, below blocks still in use: without a trim the
  // pages stayed (+113 MiB of RSS at cpu_tiny's R18 for the rest of the run).
  malloc_trim(0);
#endif
}

void Harness::check_dataset(const std::string& key, int64_t now, const std::string& what) {
  if (!resumed_) return;
  auto o = resumed_->get(key);
  if (o && o->kind == py::Kind::Int && o->i != now) {  // shown with --quiet too: it changes the run
    progress_.done();
    std::fprintf(stderr, "warning: the dataset changed since %s: %lld %s then, %lld now; the data order differs from "
                 "an uninterrupted run\n", o_.resume.c_str(), static_cast<long long>(o->i), what.c_str(),
                 static_cast<long long>(now));
  }
}

void Harness::start(int64_t position, const std::function<bool(const nlohmann::json&)>& keep) {
  signals_ = std::make_unique<StopSignals>();
  t0_ = Clock::now();
  if (!folder_) return;
  auto& folder = *folder_;
  if (resuming()) {
    auto moved = folder.set_aside_after(position);
    if (!moved.empty())
      progress_.message("resuming from an older checkpoint than the run's newest: " + std::to_string(moved.size()) +
                        " later checkpoints renamed superseded_* (first: " + moved.front() + ")");
  }
  std::error_code ec;
  if (!resuming()) fs::remove(folder.path() / "summary.json", ec);  // of a run that failed before training
  folder.write("config.yaml", o_.config_yaml);
  const std::string unit = o_.unit;
  folder.open_log([&](const std::string& line) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      return false;  // a line torn by a kill
    }
    if (!j.is_object() || !j.contains(unit) || !j[unit].is_number_integer()) return false;
    return j[unit].get<int64_t>() <= position && (!keep || keep(j));
  });
}

void Harness::log(const nlohmann::json& record) {
  if (folder_) folder_->append_log(record.dump());
}

std::string Harness::save(int64_t position, const py::ObjPtr& root) {
  if (folder_) last_ = folder_->save_checkpoint(position, root, o_.keep_last);
  return last_;
}

void Harness::write(const std::string& name, const std::string& text) const {
  if (folder_) folder_->write(name, text);
}

int Harness::stop_signal() const { return signals_ ? StopSignals::received() : 0; }

bool Harness::stop_agreed() const {
  const bool mine = stop_signal() != 0;
  return comm_ ? dist::any_rank(*comm_, mine) : mine;
}

void Harness::non_finite(int64_t position, const std::string& detail, bool updated) const {
  throw Error(o_.unit + " " + std::to_string(position) + ": loss is not finite (" + detail + "); stopped " +
              (updated ? "after its update, which a CUDA graph's replay applies whatever the loss (in memory only: "
                         "nothing of it is saved). "
                       : "without updating. ") +
              (last_.empty() ? std::string("No checkpoint was written by this run.")
                             : "Last good checkpoint: " + last_));
}

void Harness::non_finite_step(int64_t position, const std::string& detail, const Optimizer& opt,
                              bool buffers_finite, bool updated) {
  if (!opt.loss_scaling()) non_finite(position, detail, updated);
  if (comm_ ? dist::any_rank(*comm_, !buffers_finite) : !buffers_finite)
    non_finite(position, detail + "; the forward pass overflowed and BatchNorm's running statistics took non-finite "
                                  "values, which no skipped step undoes: resume from the last checkpoint in bf16 or fp32");
  char scale[32];
  std::snprintf(scale, sizeof scale, "%g", opt.loss_scale());
  progress().message(o_.unit + " " + std::to_string(position) + ": loss is not finite (" + detail +
                     "): skipped by loss scaling, the scale halved to " + scale);
}

void Harness::summary(nlohmann::json fields, bool finished) const {
  fields["finished"] = finished;
  const int sig = stop_signal();
  fields["stopped_by"] = finished ? "" : sig ? signal_name(sig) : "max";
  fields["checkpoint"] = last_;
  fields["error"] = nullptr;
  write("summary.json", fields.dump(2) + "\n");
}

void Harness::failed(const std::string& error, nlohmann::json fields) const {
  fields["finished"] = false;
  fields["stopped_by"] = "error";
  fields["error"] = error;
  fields["checkpoint"] = last_;
  try {
    write("summary.json", fields.dump(2) + "\n");
  } catch (const Error&) {
    // The disk may be what failed; the error itself still reaches the user.
  }
}

std::vector<std::string> check_items(int64_t n, const std::function<void(int64_t)>& read, int threads,
                                     const std::function<void(int64_t, int64_t)>& progress) {
  std::atomic<int64_t> done{0};
  std::mutex mu;
  auto errors = for_each_index(n, threads, [&](int64_t i) {
    std::exception_ptr failure;
    try {
      read(i);
    } catch (...) {
      failure = std::current_exception();
    }
    const int64_t d = ++done;  // counted either way
    if (progress) {
      std::lock_guard<std::mutex> lk(mu);
      progress(d, n);
    }
    if (failure) std::rethrow_exception(failure);
  });
  std::vector<std::string> out;
  for (auto& e : errors)
    if (!e.empty()) out.push_back(e);
  return out;
}

}  // namespace cp2::train
