#include "cp2/data/loader.h"

#include <torch/torch.h>

#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "cp2/common.h"
#include "cp2/dist/comm.h"
#include "cp2/data/image.h"

namespace cp2::data {

// Streams of the data RNG (Rng::derive keys): one per order, one for sample draws.
enum : uint64_t { kStreamFg = 1, kStreamBg0 = 2, kStreamBg1 = 3, kStreamSample = 4 };

std::string pipeline_rate_line(double img_s, int workers, int64_t batches, int64_t batch) {
  char who[96];
  if (workers > 0)
    std::snprintf(who, sizeof who, "%s, %.2f img/s each", count_of(workers, "loader thread").c_str(), img_s / workers);
  else  // data.workers 0: the Prefetcher builds each batch on the caller's thread
    std::snprintf(who, sizeof who, "no loader threads: built on the calling thread");
  char b[192];
  std::snprintf(b, sizeof b, "data pipeline  %8.2f img/s  (%s; %s of %lld)", img_s, who,
                count_of(batches, "batch", "batches").c_str(), static_cast<long long>(batch));
  return b;
}

PretrainDataset::PretrainDataset(const std::string& root, CopyPasteOptions opt, uint64_t seed)
    : PretrainDataset(list_images(root), std::move(opt), seed) {}

PretrainDataset::PretrainDataset(std::vector<std::string> files, CopyPasteOptions opt, uint64_t seed)
    : files_(std::move(files)), opt_(std::move(opt)), seed_(seed) {
  opt_.validate();
  if (files_.empty()) throw Error("dataset: no images");
  opencv_in_callers_thread_only();
}

std::shared_ptr<const PretrainDataset::Orders> PretrainDataset::orders(int64_t epoch) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = orders_.find(epoch);
  if (it != orders_.end()) return it->second;
  auto o = std::make_shared<Orders>();
  const auto e = static_cast<uint64_t>(epoch);
  const int64_t n = size();
  o->fg = Rng::derive(seed_, {kStreamFg, e}).permutation(n);
  if (opt_.copy_paste) {
    o->bg0 = Rng::derive(seed_, {kStreamBg0, e}).permutation(n);
    o->bg1 = Rng::derive(seed_, {kStreamBg1, e}).permutation(n);
  }
  while (orders_.size() >= 2) orders_.erase(orders_.begin());
  orders_[epoch] = o;
  return o;
}

at::Tensor PretrainDataset::read(const std::vector<int64_t>& order, int64_t pos) {
  const int64_t n = size();
  for (int64_t t = 0; t < n; ++t) {
    const auto& path = files_[order[(pos + t) % n]];
    try {
      return read_image(path);
    } catch (const Error& e) {
      skipped_.fetch_add(1);
      std::lock_guard<std::mutex> lk(mu_);
      if (bad_.insert(path).second) std::fprintf(stderr, "warning: skipping unreadable image: %s\n", e.what());
    }
  }
  throw Error("dataset: none of the " + std::to_string(n) + " images can be read");
}

std::vector<std::string> PretrainDataset::bad_files() const {
  std::lock_guard<std::mutex> lk(mu_);
  return {bad_.begin(), bad_.end()};
}

Sample PretrainDataset::get(int64_t epoch, int64_t index) {
  auto o = orders(epoch);
  const int64_t pos = index % size();
  auto fg = read(o->fg, pos);
  at::Tensor bg0, bg1;
  if (opt_.copy_paste) {
    bg0 = read(o->bg0, pos);
    bg1 = read(o->bg1, pos);
  }
  auto rng = Rng::derive(seed_, {kStreamSample, static_cast<uint64_t>(epoch), static_cast<uint64_t>(index)});
  return compose(fg, bg0, bg1, opt_, rng);
}

void LoaderOptions::validate() const {
  if (batch < 1) throw Error("batch: expected >= 1, found " + std::to_string(batch));
  if (workers < 0) throw Error("workers: expected >= 0, found " + std::to_string(workers));
  if (prefetch < 1) throw Error("prefetch: expected >= 1, found " + std::to_string(prefetch));
  const auto& p = priority_choices();
  if (std::find(p.begin(), p.end(), priority) == p.end())
    throw Error("data.priority: expected one of " + join(p) + ", found '" + priority + "'");
  if (shards < 1 || shard < 0 || shard >= shards)
    throw Error("loader shard: expected 0 <= shard < shards, found " + std::to_string(shard) + " of " +
                std::to_string(shards));
  dist::per_process_batch(batch, shards);
  if (pin_for && !pin_for->is_cuda())
    throw Error("loader pin_for: expected a CUDA device (batches pinned for it), found " + pin_for->str());
}

PretrainLoader::PretrainLoader(std::shared_ptr<PretrainDataset> ds, LoaderOptions opt)
    : ds_(std::move(ds)),
      opt_((opt.validate(), opt)),
      prefetch_([this](int64_t e, int64_t b) { return build(e, b); }, opt_.workers, opt_.prefetch, opt_.priority) {}

PretrainLoader::~PretrainLoader() = default;

int64_t PretrainLoader::batches_per_epoch() const {
  const int64_t n = ds_->size() / opt_.batch;
  if (n == 0)
    throw Error("dataset: " + std::to_string(ds_->size()) + " images, fewer than one batch of " +
                std::to_string(opt_.batch) + " (batches drop the last incomplete one)");
  return n;
}

Batch PretrainLoader::build(int64_t epoch, int64_t b) {
  const int64_t B = opt_.local_batch(), S = ds_->options().view.size;
  const int64_t first = b * opt_.batch + opt_.shard * B;
  Batch out;
  out.im_q = batch_tensor({B, 3, S, S}, at::kFloat, opt_.pin_for);
  out.im_k = batch_tensor({B, 3, S, S}, at::kFloat, opt_.pin_for);
  out.mask_q = batch_tensor({B, S, S}, at::kFloat, opt_.pin_for);
  out.mask_k = batch_tensor({B, S, S}, at::kFloat, opt_.pin_for);
  auto put = [](at::Tensor& dst, int64_t i, const at::Tensor& src) {  // memcpy: no ATen kernel in workers
    const auto n = src.numel();
    std::memcpy(dst.data_ptr<float>() + i * n, src.data_ptr<float>(), n * sizeof(float));
  };
  for (int64_t i = 0; i < B; ++i) {
    auto s = ds_->get(epoch, first + i);
    put(out.im_q, i, s.im_q);
    put(out.im_k, i, s.im_k);
    put(out.mask_q, i, s.mask_q);
    put(out.mask_k, i, s.mask_k);
  }
  return out;
}

void PretrainLoader::start(int64_t epoch, int64_t first, int64_t end) { prefetch_.start(epoch, first, end); }

std::optional<Batch> PretrainLoader::next() { return prefetch_.next(); }
void PretrainLoader::set_priority(const std::string& priority) { prefetch_.set_priority(priority); }

const std::vector<std::string>& priority_choices() {
  static const std::vector<std::string> c{"auto", "idle", "low", "normal"};
  return c;
}

const char* priority_help() {
  return "loader thread priority: auto (SCHED_IDLE, raised to normal for good once the step waits for data "
         "25 % of a minute: another process is starving the loader), idle (SCHED_IDLE: only CPU the step leaves "
         "unused), low (nice 19), normal";
}

void set_loader_thread_priority(const std::string& priority) {
  // The training step's intra-op threads meet at a barrier after every parallel region,
  // so a loader thread pre-empting one of them stalls them all (measured: end to end
  // 10-25 % below the model step on 2 cores). At SCHED_IDLE the loader only takes CPU the
  // step leaves idle, and all of it whenever the step waits for a batch. Linux-specific;
  // elsewhere, or if refused, the threads keep the normal priority.
  if (priority == "idle" || priority == "auto") {
    sched_param sp{};
    sp.sched_priority = 0;
    pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp);
  } else if (priority == "low") {
    setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), 19);
  }
}

}  // namespace cp2::data
