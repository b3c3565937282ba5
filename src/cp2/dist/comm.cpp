#include "cp2/dist/comm.h"

#include <torch/torch.h>

#include <algorithm>
#include <cstdlib>
#include <future>
#include <thread>

#include "cp2/common.h"

namespace cp2::dist {

namespace {

int env_int(const char* name, int fallback, int min) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end != 0 || x < min || x > 1 << 20)
    throw Error(std::string("environment variable ") + name + ": expected an integer >= " + std::to_string(min) +
                ", found '" + v + "'");
  return static_cast<int>(x);
}

class SingleProcess final : public Comm {
  struct Done final : Work {
    void wait() override {}
  };

 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::unique_ptr<Work> all_reduce_sum_async(at::Tensor) override { return std::make_unique<Done>(); }
  void broadcast(const at::Tensor&, int) override {}
  at::Tensor all_gather(const at::Tensor& t) override { return t; }
  std::vector<std::string> all_gather_strings(const std::string& s, const std::string&) override { return {s}; }
  void barrier() override {}
};

}  // namespace

std::string Layout::str() const {
  return "rank " + std::to_string(rank) + " of " + std::to_string(world) + " (node " + std::to_string(node()) + " of " +
         std::to_string(nodes()) + ", local rank " + std::to_string(local_rank) + " of " + std::to_string(local_world) +
         "), rendezvous " + master_addr + ":" + std::to_string(master_port);
}

void Layout::validate() const {
  if (world < 1) throw Error("WORLD_SIZE: expected >= 1, found " + std::to_string(world));
  if (rank < 0 || rank >= world)
    throw Error("RANK: expected 0.." + std::to_string(world - 1) + " (WORLD_SIZE " + std::to_string(world) + "), found " +
                std::to_string(rank));
  if (local_world < 1 || local_world > world)
    throw Error("LOCAL_WORLD_SIZE: expected 1.." + std::to_string(world) + ", found " + std::to_string(local_world));
  if (local_rank < 0 || local_rank >= local_world)
    throw Error("LOCAL_RANK: expected 0.." + std::to_string(local_world - 1) + ", found " + std::to_string(local_rank));
  if (master_port < 1 || master_port > 65535)
    throw Error("MASTER_PORT: expected 1..65535, found " + std::to_string(master_port));
}

Layout layout_from_env() {
  Layout l;
  l.world = env_int("WORLD_SIZE", 1, 1);
  if (l.world == 1) return l;
  if (!std::getenv("RANK")) throw Error("environment: WORLD_SIZE is " + std::to_string(l.world) + " but RANK is not set");
  l.rank = env_int("RANK", 0, 0);
  l.local_world = env_int("LOCAL_WORLD_SIZE", l.world, 1);
  l.local_rank = env_int("LOCAL_RANK", l.rank % l.local_world, 0);
  if (const char* a = std::getenv("MASTER_ADDR"); a && *a) l.master_addr = a;
  l.master_port = env_int("MASTER_PORT", 29500, 1);
  l.validate();
  return l;
}

std::string broadcast_string(Comm& comm, const std::string& s, const std::string& key, int root) {
  return comm.all_gather_strings(comm.rank() == root ? s : std::string(), key)[static_cast<size_t>(root)];
}

int64_t per_process_batch(int64_t batch, int world) {
  if (world < 1 || batch % world != 0)
    throw Error("train.batch " + std::to_string(batch) + ": the global batch must divide evenly over " +
                std::to_string(world) + " processes (per-process batch = batch / world size)");
  return batch / world;
}

bool finish_within(std::function<void()> fn, std::chrono::milliseconds limit) {
  // The task owns `fn` and its result: a thread left running keeps both alive.
  std::packaged_task<void()> task(std::move(fn));
  auto done = task.get_future();
  std::thread t(std::move(task));
  if (done.wait_for(limit) != std::future_status::ready) {
    t.detach();
    return false;
  }
  t.join();
  done.get();
  return true;
}

void run_on_all(Comm& comm, const std::string& what, const std::function<void()>& fn) {
  if (comm.size() == 1) return fn();
  std::string mine;
  std::exception_ptr failure;
  try {
    fn();
  } catch (const std::exception& e) {
    mine = e.what();
    if (mine.empty()) mine = "failed";
    failure = std::current_exception();
  }
  const auto all = comm.all_gather_strings(mine, what);
  if (failure) std::rethrow_exception(failure);
  for (size_t r = 0; r < all.size(); ++r)
    if (!all[r].empty()) throw Error(what + ": rank " + std::to_string(r) + " failed: " + all[r]);
}

bool any_rank(Comm& comm, bool flag) {
  if (comm.size() == 1) return flag;
  auto t = torch::full({1}, flag ? 1.0f : 0.0f);
  comm.all_reduce_sum(t);
  return t.item<float>() > 0;
}

std::vector<double> mean_over_ranks(Comm& comm, const std::vector<double>& values) {
  if (comm.size() == 1 || values.empty()) return values;
  auto t = torch::tensor(values, torch::kDouble);
  comm.all_reduce_sum(t);
  t.div_(comm.size());
  return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
}

int cuda_index(int asked, int local_rank, int local_world, int visible, const std::string& key) {
  if (visible < 1) throw Error(key + ": cuda asked, but this process sees no CUDA device");
  const std::string n = count_of(visible, "CUDA device");
  if (asked >= visible)
    throw Error(key + ": cuda:" + std::to_string(asked) + " asked, this process sees " + n + " (cuda:0.." +
                std::to_string(visible - 1) + ")");
  if (local_world <= 1 || visible == 1) return std::max(asked, 0);
  if (asked >= 0)
    throw Error(key + ": cuda:" + std::to_string(asked) + " names one device for all " + std::to_string(local_world) +
                " processes on this node (LOCAL_WORLD_SIZE), and NCCL refuses two ranks on one device: use 'cuda' "
                "(each process takes the device of its LOCAL_RANK)");
  if (local_world > visible)
    throw Error(key + ": cuda for " + std::to_string(local_world) + " processes on this node (LOCAL_WORLD_SIZE), "
                "which sees " + n + ": start one process per device (cp2 launch --nproc " + std::to_string(visible) +
                "), or give each process one device (CUDA_VISIBLE_DEVICES)");
  return local_rank;
}

c10::Device process_cuda_device(const c10::Device& asked, const Layout& layout, const std::string& key) {
  const int index = cuda_index(asked.has_index() ? asked.index() : -1, layout.local_rank, layout.local_world,
                               static_cast<int>(torch::cuda::device_count()), key);
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
}

std::shared_ptr<Comm> single_process() { return std::make_shared<SingleProcess>(); }

}  // namespace cp2::dist
