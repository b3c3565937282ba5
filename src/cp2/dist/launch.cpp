#include "cp2/dist/launch.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <string>
#include <vector>

#include "cp2/common.h"

namespace cp2::dist {

namespace {

volatile std::sig_atomic_t g_forward = 0;
void on_signal(int sig) { g_forward = sig; }

struct Stream {
  int fd = -1;
  FILE* to = nullptr;
  std::string pending;  // bytes after the last line end
};

struct Child {
  int rank = 0;
  pid_t pid = -1;
  bool running = true;
  int status = 0;  // exit status as a shell shows it
  Stream out, err;
};

std::string prefix(int rank) { return "[rank " + std::to_string(rank) + "] "; }

// Writes every complete segment (ending in \n or \r: progress bars redraw with \r) with
// the rank prefix; keeps the rest for later.
void forward(Stream& s, int rank, bool flush_all) {
  size_t start = 0;
  for (size_t i = 0; i < s.pending.size(); ++i)
    if (s.pending[i] == '\n' || s.pending[i] == '\r') {
      const std::string seg = s.pending.substr(start, i - start);
      const char end = s.pending[i];
      if (!(seg.empty() && end == '\r')) std::fprintf(s.to, "%s%s%c", prefix(rank).c_str(), seg.c_str(), end);
      start = i + 1;
    }
  s.pending.erase(0, start);
  if (flush_all && !s.pending.empty()) {
    std::fprintf(s.to, "%s%s\n", prefix(rank).c_str(), s.pending.c_str());
    s.pending.clear();
  }
  std::fflush(s.to);
}

std::string describe_status(int st) {
  if (WIFSIGNALED(st)) return "was killed by signal " + std::to_string(WTERMSIG(st)) + " (" + strsignal(WTERMSIG(st)) + ")";
  return "exited with status " + std::to_string(WEXITSTATUS(st));
}

int shell_status(int st) { return WIFSIGNALED(st) ? 128 + WTERMSIG(st) : WEXITSTATUS(st); }

}  // namespace

void LaunchOptions::validate() const {
  if (nproc < 1) throw Error("--nproc: expected >= 1, found " + std::to_string(nproc));
  if (nnodes < 1) throw Error("--nnodes: expected >= 1, found " + std::to_string(nnodes));
  if (node_rank < 0 || node_rank >= nnodes)
    throw Error("--node-rank: expected 0.." + std::to_string(nnodes - 1) + ", found " + std::to_string(node_rank));
  if (master_port < 0 || master_port > 65535) throw Error("--master-port: expected 1..65535, found " + std::to_string(master_port));
  if (nnodes > 1 && master_port == 0)
    throw Error("--master-port: a multi-node job needs the same explicit port on every node");
  if (master_addr.empty()) throw Error("--master-addr: expected node 0's address");
  if (!(grace_s >= 0)) throw Error("grace: expected >= 0 s");
}

int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw Error(std::string("socket: ") + std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    const std::string e = std::strerror(errno);
    close(fd);
    throw Error("finding a free port: " + e);
  }
  close(fd);
  return ntohs(a.sin_port);
}

int launch(const LaunchOptions& opt, const std::vector<std::string>& argv) {
  LaunchOptions o = opt;
  o.validate();
  if (argv.empty()) throw Error("launch: no command given (cp2 launch --nproc N -- pretrain ...)");
  if (o.master_port == 0) o.master_port = free_port();
  const int world = o.nproc * o.nnodes, first = o.node_rank * o.nproc;
  std::fprintf(stderr, "cp2 launch: %s on node %d of %d (ranks %d..%d of world size %d), rendezvous %s:%d\n",
               count_of(o.nproc, "process", "processes").c_str(), o.node_rank, o.nnodes, first, first + o.nproc - 1,
               world, o.master_addr.c_str(), o.master_port);

  std::vector<Child> kids(static_cast<size_t>(o.nproc));
  struct sigaction sa {}, old[std::size(stop_signals)];
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  g_forward = 0;
  for (size_t i = 0; i < std::size(stop_signals); ++i) sigaction(stop_signals[i], &sa, &old[i]);
  const pid_t parent = getpid();
  std::fflush(stdout);
  std::fflush(stderr);
  for (int i = 0; i < o.nproc; ++i) {
    auto& c = kids[static_cast<size_t>(i)];
    c.rank = first + i;
    int po[2], pe[2];
    if (pipe(po) != 0 || pipe(pe) != 0) throw Error(std::string("launch: pipe: ") + std::strerror(errno));
    const pid_t pid = fork();
    if (pid < 0) throw Error(std::string("launch: fork: ") + std::strerror(errno));
    if (pid == 0) {
      // Own process group: a terminal's Ctrl-C reaches the launcher once, which forwards
      // it once (a second signal would mean "exit now" to cp2). Dies with the launcher.
      setpgid(0, 0);
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != parent) _exit(143);
      for (int sig : stop_signals) signal(sig, SIG_DFL);
      dup2(po[1], STDOUT_FILENO);
      dup2(pe[1], STDERR_FILENO);
      close(po[0]), close(po[1]), close(pe[0]), close(pe[1]);
      setenv("RANK", std::to_string(c.rank).c_str(), 1);
      setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
      setenv("LOCAL_RANK", std::to_string(i).c_str(), 1);
      setenv("LOCAL_WORLD_SIZE", std::to_string(o.nproc).c_str(), 1);
      setenv("GROUP_RANK", std::to_string(o.node_rank).c_str(), 1);
      setenv("MASTER_ADDR", o.master_addr.c_str(), 1);
      setenv("MASTER_PORT", std::to_string(o.master_port).c_str(), 1);
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execv(args[0], args.data());
      std::fprintf(stderr, "cp2 launch: cannot run %s: %s\n", argv[0].c_str(), std::strerror(errno));
      _exit(127);
    }
    close(po[1]), close(pe[1]);
    c.pid = pid;
    c.out = {po[0], stdout, ""};
    c.err = {pe[0], stderr, ""};
  }

  using Clock = std::chrono::steady_clock;
  int failed_rank = -1, failed_status = 0, forwarded = 0;
  bool killed = false;
  Clock::time_point deadline{};
  auto signal_all = [&](int sig) {
    for (auto& c : kids)
      if (c.running) kill(c.pid, sig);
  };
  auto open_streams = [&] {
    int n = 0;
    for (auto& c : kids) n += (c.out.fd >= 0) + (c.err.fd >= 0);
    return n;
  };
  auto running = [&] {
    int n = 0;
    for (auto& c : kids) n += c.running;
    return n;
  };
  while (running() > 0 || open_streams() > 0) {
    if (g_forward && !forwarded) {
      forwarded = g_forward;
      std::fprintf(stderr, "cp2 launch: %s received: passing it to every rank\n", signal_name(forwarded).c_str());
      signal_all(forwarded);
    }
    std::vector<pollfd> fds;
    std::vector<std::pair<Child*, Stream*>> who;
    for (auto& c : kids)
      for (Stream* s : {&c.out, &c.err})
        if (s->fd >= 0) {
          fds.push_back({s->fd, POLLIN, 0});
          who.emplace_back(&c, s);
        }
    if (!fds.empty()) poll(fds.data(), fds.size(), 100);
    else usleep(100 * 1000);
    for (size_t i = 0; i < fds.size(); ++i) {
      if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[65536];
      const ssize_t n = read(fds[i].fd, buf, sizeof buf);
      auto& [c, s] = who[i];
      if (n > 0) {
        s->pending.append(buf, static_cast<size_t>(n));
        forward(*s, c->rank, false);
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        forward(*s, c->rank, true);
        close(s->fd);
        s->fd = -1;
      }
    }
    int st = 0;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
      for (auto& c : kids) {
        if (c.pid != pid) continue;
        c.running = false;
        c.status = shell_status(st);
        const bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
        if (ok) continue;
        const bool first_failure = failed_rank < 0 && !forwarded;
        std::fprintf(stderr, "cp2 launch: rank %d %s%s\n", c.rank, describe_status(st).c_str(),
                     first_failure && running() > 0 ? "; stopping the other ranks" : "");
        if (first_failure) {
          failed_rank = c.rank;
          failed_status = c.status;
          signal_all(SIGTERM);
          deadline = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(o.grace_s * 1000));
        }
      }
    }
    if (failed_rank >= 0 && !killed && running() > 0 && Clock::now() > deadline) {
      std::fprintf(stderr, "cp2 launch: ranks still running %.0f s after SIGTERM: SIGKILL\n", o.grace_s);
      signal_all(SIGKILL);
      killed = true;
    }
  }
  for (size_t i = 0; i < std::size(stop_signals); ++i) sigaction(stop_signals[i], &old[i], nullptr);
  if (failed_rank >= 0) {
    std::fprintf(stderr, "cp2 launch: failed: rank %d (exit status %d)\n", failed_rank, failed_status);
    return failed_status ? failed_status : 1;
  }
  int worst = 0;
  for (auto& c : kids) worst = std::max(worst, c.status);
  return worst;
}

}  // namespace cp2::dist
