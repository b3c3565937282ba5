// The c10d backend of dist::Comm: a TCPStore rendezvous and a Gloo (or NCCL) process group.
// Apart from comm.cpp so that a LibTorch-only build (CP2_CORE_ONLY) can leave it out.
#include "cp2/dist/comm.h"

// c10d's Gloo backend header is guarded by the macro PyTorch's own build defines.
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/torch.h>
#include <torch/version.h>
#ifdef CP2_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <thread>

#include "cp2/common.h"

namespace cp2::dist {

namespace {

// LibTorch 2.0 moved the Gloo and NCCL process groups under c10d::Backend (ProcessGroup now
// dispatches to backends); Backend has the same collectives, so cp2 holds whichever base the
// concrete groups derive from.
#if TORCH_VERSION_MAJOR >= 2
using GroupBase = c10d::Backend;
#else
using GroupBase = c10d::ProcessGroup;
#endif

// LibTorch 2.4 and later ask for the libuv store backend by default, and builds without libuv
// refuse it ("use_libuv was requested but PyTorch was build without libuv support": Debian
// 13's 2.6, measured): there the store falls back to the classic backend.
c10::intrusive_ptr<c10d::TCPStore> tcp_store(const std::string& host, c10d::TCPStoreOptions o) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 2)
  try {
    return c10::make_intrusive<c10d::TCPStore>(host, o);
  } catch (const std::exception& e) {
    if (!o.useLibUV || std::string(e.what()).find("libuv") == std::string::npos) throw;
    o.useLibUV = false;
  }
#endif
  return c10::make_intrusive<c10d::TCPStore>(host, o);
}

// A rank's pulse: a thread with its own store connection bumps `cp2/alive/<rank>` four times a
// second. A killed or stopped process stops pulsing, so a peer whose collective failed
// can name it even when it had already entered that collective (Gloo only reports a reset
// connection or a timeout, with an address).
class Heartbeat {
 public:
  Heartbeat(c10::intrusive_ptr<c10d::Store> store, int rank) : store_(std::move(store)) {
    const std::string key = "cp2/alive/" + std::to_string(rank);
    thread_ = std::thread([this, key] {
      while (true) {
        try {
          store_->add(key, 1);  // outside the lock, so stopping never waits for the mutex
        } catch (const std::exception&) {
          return;  // the store's host is gone: the main thread reports that
        }
        std::unique_lock<std::mutex> lk(mu_);
        if (cv_.wait_for(lk, std::chrono::milliseconds(250), [this] { return stop_; })) return;
      }
    });
  }
  ~Heartbeat() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  c10::intrusive_ptr<c10d::Store> store_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

// Every collective is numbered; before entering one a rank writes its number to the store
// (`cp2/seq/<rank>`), so a rank whose collective fails can name the ranks that never
// arrived, and (with the heartbeat) the ranks that died or hang inside it, instead of
// Gloo's peer address.
class C10dComm final : public Comm {
 public:
  C10dComm(const Layout& l, const ConnectOptions& o) : l_(l), o_(o) {
    // Under torchrun the agent already hosts the store at MASTER_ADDR:MASTER_PORT and says
    // so (TORCHELASTIC_USE_AGENT_STORE=True): every rank is then a client, as in PyTorch's
    // env:// initialisation; keys go under a per-restart prefix.
    const char* agent = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
    const bool agent_store = agent && std::string(agent) == "True";
    const char* restart = std::getenv("TORCHELASTIC_RESTART_COUNT");
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(l.master_port);
    agent_store_ = agent_store;
    so.isServer = hosts_store();
    so.numWorkers = static_cast<std::size_t>(l.world);
    so.waitWorkers = !agent_store;
    so.timeout = o.timeout;
    const std::string where = l.master_addr + ":" + std::to_string(l.master_port);
    const std::string prefix = std::string("cp2/attempt_") + (restart && *restart ? restart : "0");
    try {
      auto tcp = tcp_store(l.master_addr, so);
      store_ = c10::make_intrusive<c10d::PrefixStore>(prefix, tcp);
      // The heartbeat's own client connection (a TCPStore client is one socket).
      c10d::TCPStoreOptions co = so;
      co.isServer = false;
      co.waitWorkers = false;
      co.timeout = std::chrono::seconds(10);
      auto pulse = tcp_store(l.master_addr, co);
      heartbeat_ = std::make_unique<Heartbeat>(c10::make_intrusive<c10d::PrefixStore>(prefix, pulse), l.rank);
    } catch (const std::exception& e) {
      const std::string what = error_line(e);
      if (l.rank == 0 && what.find("ddress already in use") != std::string::npos)
        throw Error("rendezvous: MASTER_PORT " + std::to_string(l.master_port) + " is already in use on " +
                    l.master_addr + " (another run?): choose a free port");
      throw Error("rendezvous at " + where + " failed on rank " + std::to_string(l.rank) + " of " +
                  std::to_string(l.world) + " (not every rank arrived within " + std::to_string(o.timeout.count() / 1000) +
                  " s, or the address is unreachable): " + what);
    }
    const bool cuda = is_cuda_name(o.device);
    try {
      if (cuda) {
#ifdef CP2_WITH_NCCL
        // NCCL reduces CUDA tensors only: the loops' small CPU tensors (any_rank,
        // mean_over_ranks, shuffle-BN's permutation, the confusion matrix) go through the
        // device train::parse_device gives this process.
        stage_ = process_cuda_device(c10::Device(o.device), l, "train.device");
        auto no = c10d::ProcessGroupNCCL::Options::create();
        no->timeout = o.timeout;
        pg_ = c10::make_intrusive<c10d::ProcessGroupNCCL>(store_, l.rank, l.world, no);
#else
        throw Error("train.device " + o.device + ": this build has no NCCL (LibTorch without CUDA)");
#endif
      } else {
        auto go = c10d::ProcessGroupGloo::Options::create(o.timeout);
        if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname)
          go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
        else if (l.nodes() == 1)
          go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
        else
          go->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
        pg_ = c10::make_intrusive<c10d::ProcessGroupGloo>(store_, l.rank, l.world, go);
      }
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Error("process group (" + std::string(cuda ? "NCCL" : "Gloo") + ") on rank " + std::to_string(l.rank) +
                  ": " + error_line(e));
    }
  }

  // The heartbeat, the process group and the store go in that order (as members would), and
  // each may wait on peers: the heartbeat's thread on its store request, and on rank 0 the
  // store on its daemon thread, which in LibTorch 1.13 reads each request with blocking calls,
  // so that a rank stopped half-way through sending one (SIGSTOP, seen in CI) wedges it. Past
  // the dist timeout (at most 10 s) they are left to the process's exit: the rank still exits,
  // and cp2 launch / torchrun end the job.
  ~C10dComm() override {
    struct Parts {
      std::unique_ptr<Heartbeat> heartbeat;
      c10::intrusive_ptr<GroupBase> pg;
      c10::intrusive_ptr<c10d::Store> store;
    };
    auto parts = std::make_shared<Parts>(Parts{std::move(heartbeat_), std::move(pg_), std::move(store_)});
    const auto limit = std::min<std::chrono::milliseconds>(o_.timeout, std::chrono::seconds(10));
    try {
      const bool done = finish_within(
          [parts] {
            parts->heartbeat.reset();
            parts->pg.reset();
            parts->store.reset();
          },
          limit);
      if (!done)
        std::fprintf(stderr, "note: c10d's teardown did not finish within %lld ms (a peer hangs): left to the process's "
                     "exit\n", static_cast<long long>(limit.count()));
    } catch (const std::exception&) {  // a part's destructor threw: nothing is left to release
    }
  }

  int rank() const override { return l_.rank; }
  int size() const override { return l_.world; }

  std::unique_ptr<Work> all_reduce_sum_async(at::Tensor t) override {
    if (staged(t)) {  // a CPU tensor under NCCL: through the device, waited here
      std::vector<at::Tensor> ts{t.to(*stage_)};
      start("all-reduce", [&] { return pg_->allreduce(ts); }).wait();
      t.copy_(ts[0]);
      return std::make_unique<PendingWork>(this, "all-reduce", 0, c10::intrusive_ptr<c10d::Work>());  // done
    }
    std::vector<at::Tensor> ts{t};
    return std::make_unique<PendingWork>(start("all-reduce", [&] { return pg_->allreduce(ts); }));
  }

  void broadcast(const at::Tensor& t, int root) override {
    std::vector<at::Tensor> ts{staged(t) ? t.to(*stage_) : t};
    c10d::BroadcastOptions bo;
    bo.rootRank = root;
    start("broadcast", [&] { return pg_->broadcast(ts, bo); }).wait();
    if (staged(t)) t.copy_(ts[0]);
  }

  at::Tensor all_gather(const at::Tensor& t) override {
    std::vector<at::Tensor> in{(staged(t) ? t.to(*stage_) : t).contiguous()};
    std::vector<std::vector<at::Tensor>> out(1);
    for (int r = 0; r < l_.world; ++r) out[0].push_back(torch::empty_like(in[0]));
    start("all-gather", [&] { return pg_->allgather(out, in); }).wait();
    return torch::cat(out[0], 0).to(t.device());
  }

  std::vector<std::string> all_gather_strings(const std::string& s, const std::string& key) override {
    const auto n = enter();
    const std::string base = "cp2/all/" + key + "/" + std::to_string(n) + "/";
    std::vector<std::string> out(static_cast<size_t>(l_.world));
    try {
      store_->set(base + std::to_string(l_.rank), std::vector<uint8_t>(s.begin(), s.end()));
      for (int r = 0; r < l_.world; ++r) {
        const auto v = r == l_.rank ? std::vector<uint8_t>(s.begin(), s.end()) : store_->get(base + std::to_string(r));
        out[static_cast<size_t>(r)] = std::string(v.begin(), v.end());
      }
    } catch (const std::exception& e) {
      throw Error(describe("exchange of " + key, n, e.what()));
    }
    return out;
  }

  void barrier() override {
    start("barrier", [&] { return pg_->barrier(); }).wait();
  }

  // "distributed all-reduce #17 failed on rank 1 of 2: rank 0 is still at collective #16
  // (it died or hangs)". Ranks whose heartbeat stopped are named first; otherwise the ranks
  // that had not reached this collective.
  std::string describe(const std::string& op, int64_t n, const std::string& cause) {
    std::string who;
    try {
      store_->setTimeout(std::chrono::seconds(5));
      auto read = [&](const std::string& k) -> int64_t {
        if (!store_->check({k})) return -1;
        const auto v = store_->get(k);
        return std::stoll(std::string(v.begin(), v.end()));
      };
      std::vector<int64_t> before(static_cast<size_t>(l_.world), -1);
      for (int r = 0; r < l_.world; ++r)
        if (r != l_.rank) before[static_cast<size_t>(r)] = read("cp2/alive/" + std::to_string(r));
      std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // six pulses of a live rank
      std::string silent, behind;
      auto append = [](std::string& list, const std::string& item) { list += (list.empty() ? "" : "; ") + item; };
      for (int r = 0; r < l_.world; ++r) {
        if (r == l_.rank) continue;
        const int64_t at = read("cp2/seq/" + std::to_string(r));
        const std::string rank = "rank " + std::to_string(r),
                          where = at < 0 ? "before its first collective" : "at collective #" + std::to_string(at);
        if (read("cp2/alive/" + std::to_string(r)) == before[static_cast<size_t>(r)])
          append(silent, rank + " stopped responding " + where);
        else if (at < n)
          append(behind, rank + " is still " + where);
      }
      if (!silent.empty())
        who = silent + " (it died or hangs)";
      else if (!behind.empty())
        who = behind + " (it hangs or is slow)";
    } catch (const std::exception&) {
      const std::string at = l_.master_addr + ":" + std::to_string(l_.master_port);
      // This rank's own store cannot have died: its daemon is wedged reading a request that a
      // rank stopped sending half-way (LibTorch 1.13 reads requests with blocking calls).
      who = hosts_store() ? "the rendezvous store this rank hosts at " + at +
                               " stopped answering (a rank stopped half-way through a request to it: it hangs)"
                         : std::string(agent_store_ ? "torchrun's agent" : "rank 0") +
                               ", which hosts the rendezvous store at " + at +
                               ", did not answer (it died or hangs, or a rank stopped half-way through a request to "
                               "its store)";
    }
    if (who.empty()) {
      const bool timed_out = cause.find("imed out") != std::string::npos || cause.find("imeout") != std::string::npos;
      who = timed_out ? "every rank entered it, but it did not complete within " +
                            std::to_string(o_.timeout.count() / 1000) + " s (a rank hangs inside it)"
                      : "a peer closed its connection during it (that rank died)";
    }
    return "distributed " + op + " #" + std::to_string(n) + " failed on rank " + std::to_string(l_.rank) + " of " +
           std::to_string(l_.world) + ": " + who + " [c10d: " + first_line(cause) + "]";
  }

 private:
  bool staged(const at::Tensor& t) const { return stage_ && t.device() != *stage_; }
  bool hosts_store() const { return l_.rank == 0 && !agent_store_; }  // else torchrun's agent or rank 0 does

  struct PendingWork final : Work {
    PendingWork(C10dComm* c, std::string op, int64_t n, c10::intrusive_ptr<c10d::Work> w)
        : c_(c), op_(std::move(op)), n_(n), w_(std::move(w)) {}
    void wait() override {
      if (!w_) return;
      try {
        w_->wait();
      } catch (const std::exception& e) {
        w_.reset();
        throw Error(c_->describe(op_, n_, e.what()));
      }
      w_.reset();
    }
    C10dComm* c_;
    std::string op_;
    int64_t n_;
    c10::intrusive_ptr<c10d::Work> w_;
  };

  int64_t enter() {
    std::lock_guard<std::mutex> lk(mu_);
    const int64_t n = ++seq_;
    try {
      const auto s = std::to_string(n);
      store_->set("cp2/seq/" + std::to_string(l_.rank), std::vector<uint8_t>(s.begin(), s.end()));
    } catch (const std::exception& e) {
      throw Error(describe("collective", n, e.what()));
    }
    return n;
  }

  // Numbers the collective, records the number, starts it; failures name missing ranks.
  template <class F>
  PendingWork start(const char* op, F&& f) {
    const int64_t n = enter();
    try {
      return PendingWork(this, op, n, f());
    } catch (const std::exception& e) {
      throw Error(describe(op, n, e.what()));
    }
  }

  Layout l_;
  ConnectOptions o_;
  std::optional<c10::Device> stage_;  // NCCL: where CPU tensors are reduced
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<GroupBase> pg_;
  std::unique_ptr<Heartbeat> heartbeat_;
  bool agent_store_ = false;  // torchrun's agent hosts the store (TORCHELASTIC_USE_AGENT_STORE)
  std::mutex mu_;
  int64_t seq_ = 0;
};

}  // namespace

std::shared_ptr<Comm> connect(const Layout& layout, const ConnectOptions& o) {
  layout.validate();
  if (layout.world == 1) return single_process();
  if (o.timeout.count() <= 0) throw Error("dist timeout: expected > 0 s");
  return std::make_shared<C10dComm>(layout, o);
}

}  // namespace cp2::dist
