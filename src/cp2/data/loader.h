// Pretraining data: the image folder, per-epoch orders for the foreground and the two
// background streams, and a multi-threaded loader with prefetch. Sample i of epoch e
// depends only on (seed, e, i): batches are identical for any worker count or timing,
// and a run resumed at batch b sees exactly the batches it would have seen.
#pragma once
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cp2/data/batch.h"
#include "cp2/data/copypaste.h"
#include "cp2/data/prefetch.h"

namespace cp2::data {

class PretrainDataset {
 public:
  // Lists `root` (throws when missing or empty).
  PretrainDataset(const std::string& root, CopyPasteOptions opt, uint64_t seed);
  PretrainDataset(std::vector<std::string> files, CopyPasteOptions opt, uint64_t seed);

  int64_t size() const { return static_cast<int64_t>(files_.size()); }
  const std::vector<std::string>& files() const { return files_; }
  const CopyPasteOptions& options() const { return opt_; }

  // Sample `index` of `epoch` (thread-safe). The foreground and the two backgrounds
  // come from three independent shuffles of the dataset (the authors' three samplers).
  // An unreadable image is skipped: the next image of the same stream's order is used,
  // a warning is printed once per file, and the skip is counted.
  Sample get(int64_t epoch, int64_t index);

  // Skipped reads since the last call (the epoch summary), and the files seen bad so far.
  int64_t take_skipped() { return skipped_.exchange(0); }
  std::vector<std::string> bad_files() const;

 private:
  struct Orders {
    std::vector<int64_t> fg, bg0, bg1;
  };
  std::shared_ptr<const Orders> orders(int64_t epoch);
  at::Tensor read(const std::vector<int64_t>& order, int64_t pos);

  std::vector<std::string> files_;
  CopyPasteOptions opt_;
  uint64_t seed_;
  mutable std::mutex mu_;
  std::map<int64_t, std::shared_ptr<const Orders>> orders_;  // last two epochs cached
  std::set<std::string> bad_;
  std::atomic<int64_t> skipped_{0};
};

struct LoaderOptions {
  int64_t batch = 32;
  int workers = 2;   // 0 = build batches on the calling thread
  int prefetch = 2;  // batches built ahead of the consumer
  // CPU priority of the loader threads (priority_choices(), prefetch.h).
  std::string priority = "auto";
  // Data parallel: `batch` is the global batch; this process builds rows
  // [shard * batch / shards, (shard + 1) * batch / shards) of every batch, so the ranks'
  // rows together are exactly the single-process batch (each sample is keyed by its
  // global position).
  int shard = 0, shards = 1;
  // A CUDA device: batches pinned for it (batch_tensor); the loops set pin_target(device).
  std::optional<c10::Device> pin_for;
  int64_t local_batch() const { return batch / shards; }
  void validate() const;
};

// The benches' line for a loader timed alone: images/s in all and per loader thread (what a
// faster step, a GPU's, would need of them; with no loader threads, that the caller's thread
// built them), over how many batches of how many images.
std::string pipeline_rate_line(double img_s, int workers, int64_t batches, int64_t batch);

class PretrainLoader {
 public:
  PretrainLoader(std::shared_ptr<PretrainDataset> ds, LoaderOptions opt);
  ~PretrainLoader();
  PretrainLoader(const PretrainLoader&) = delete;
  PretrainLoader& operator=(const PretrainLoader&) = delete;

  // Full batches per epoch (drop_last). Throws if the dataset holds fewer images than a batch.
  int64_t batches_per_epoch() const;
  // Starts epoch `epoch` at batch `first`, ending before batch `end` (<= batches_per_epoch).
  void start(int64_t epoch, int64_t first, int64_t end);
  // The next batch of the started range, or nullopt at its end. Rethrows a worker's error.
  std::optional<Batch> next();
  // The loader threads' priority from now on (data.priority: auto raises it to normal).
  void set_priority(const std::string& priority);
  // Builds one batch directly (what the workers do).
  Batch build(int64_t epoch, int64_t b);

 private:
  std::shared_ptr<PretrainDataset> ds_;
  LoaderOptions opt_;
  Prefetcher<Batch> prefetch_;
};

}  // namespace cp2::data
