// Multi-process communication for data-parallel training, on PyTorch's c10d (Gloo for CPU
// tensors, NCCL where the LibTorch build has CUDA). One interface with a single-process
// backend, so the training loops run unchanged, and are testable, at world size 1
// (flashlight's distributed layer has the same split).
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace cp2::dist {

// PyTorch's launch contract (torchrun, `cp2 launch`, cluster wrappers): RANK, WORLD_SIZE,
// LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT.
struct Layout {
  int rank = 0, world = 1, local_rank = 0, local_world = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  int node() const { return local_world > 0 ? rank / local_world : 0; }
  int nodes() const { return local_world > 0 ? (world + local_world - 1) / local_world : 1; }
  // "rank 1 of 4 (node 0 of 2, local rank 1 of 2), rendezvous 10.0.0.1:29500"
  std::string str() const;
  void validate() const;
};
// The layout from the environment: world size 1 when WORLD_SIZE is unset. Throws naming
// a malformed or inconsistent variable.
Layout layout_from_env();

// An asynchronous collective; wait() rethrows its failure with the rank diagnosis below.
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
};

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  bool main() const { return rank() == 0; }
  // In place: t <- sum over ranks (contiguous tensor).
  virtual std::unique_ptr<Work> all_reduce_sum_async(at::Tensor t) = 0;
  void all_reduce_sum(const at::Tensor& t) { all_reduce_sum_async(t)->wait(); }
  // In place: t <- rank `root`'s t.
  virtual void broadcast(const at::Tensor& t, int root = 0) = 0;
  // Every rank's t (same shape everywhere) concatenated along dim 0 in rank order.
  virtual at::Tensor all_gather(const at::Tensor& t) = 0;
  // Every rank's string, in rank order.
  virtual std::vector<std::string> all_gather_strings(const std::string& s, const std::string& key) = 0;
  virtual void barrier() = 0;
};

// The CUDA device index of process `local_rank` of the `local_world` on its node, which sees
// `visible` devices, for `asked` (cuda:N's N, or -1 for plain "cuda"). Plain "cuda" is the
// device of the process's local rank, as a PyTorch script's torch.cuda.set_device(local_rank)
// (the authors' main_moco.py: args.gpu), or the one device a process sees (CUDA_VISIBLE_DEVICES
// set per process, SLURM's --gpus-per-task=1). Throws naming `key` where that cannot hold:
// more processes than devices, a cuda:N past the devices, or one cuda:N for several processes
// (NCCL refuses two ranks on one device).
int cuda_index(int asked, int local_rank, int local_world, int visible, const std::string& key);
// cuda_index for this process: `asked` ("cuda" or "cuda:N") placed by `layout` among the
// devices this process sees.
c10::Device process_cuda_device(const c10::Device& asked, const Layout& layout, const std::string& key);

// Runs `fn` on a thread of its own and waits up to `limit`: true when it finished (its
// exception, if any, rethrown); false when it still runs, its thread then detached and left to
// the process's exit. For teardown that waits on peers (c10d's store and heartbeat), so that a
// rank that hangs cannot keep another from exiting.
bool finish_within(std::function<void()> fn, std::chrono::milliseconds limit);

// Rank `root`'s string on every rank (paths, decisions); `key` names the exchange.
std::string broadcast_string(Comm& comm, const std::string& s, const std::string& key, int root = 0);
// train.batch is the global batch: this process's share, or an error naming both numbers.
int64_t per_process_batch(int64_t batch, int world);

// Runs `fn` on every rank, then agrees: when it threw on any rank, every rank throws
// (its own error, or "<what>: rank R failed: ..."), so no rank walks on into a
// collective that a failed rank will never join. World size 1: just runs `fn`.
void run_on_all(Comm& comm, const std::string& what, const std::function<void()>& fn);

// Whether `flag` holds on any rank (one small all-reduce; none at world size 1). Ranks
// agree on stopping with it: a signal that reaches one rank a step before another must
// not leave the other waiting in the next step's collectives.
bool any_rank(Comm& comm, bool flag);
// The mean over ranks of each value (one all-reduce; identity at world size 1).
std::vector<double> mean_over_ranks(Comm& comm, const std::vector<double>& values);

// World size 1: every collective is the identity.
std::shared_ptr<Comm> single_process();

struct ConnectOptions {
  // A collective (or the rendezvous) that waits longer than this fails, naming the ranks
  // that did not arrive: a dead or hung rank never hangs the others.
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};
  std::string device = "cpu";  // "cuda..." uses NCCL where the build has it
};
// Rendezvous through c10d's TCPStore at MASTER_ADDR:MASTER_PORT (rank 0 hosts it), then a
// Gloo (or NCCL) process group. World size 1 gives single_process().
std::shared_ptr<Comm> connect(const Layout& layout, const ConnectOptions& o);

}  // namespace cp2::dist
