// `cp2 launch`: torchrun's job for users without Python. Starts N processes of a program
// on this node with PyTorch's environment contract (RANK, WORLD_SIZE, LOCAL_RANK,
// LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), forwards their output line by line with a
// "[rank r]" prefix, forwards SIGINT/SIGTERM/SIGUSR1/SIGUSR2 to them, and when one fails stops the others
// (SIGTERM, then SIGKILL after a grace period) and exits with the failed rank's status.
#pragma once
#include <string>
#include <vector>

namespace cp2::dist {

struct LaunchOptions {
  int nproc = 1;      // processes on this node
  int nnodes = 1;     // nodes in the job (each runs the same launch command)
  int node_rank = 0;  // this node
  std::string master_addr = "127.0.0.1";  // node 0's address (it hosts the rendezvous store)
  int master_port = 0;  // 0: a free port (one node), 29500 (several nodes)
  double grace_s = 30;  // after a rank fails, how long the others get to exit after SIGTERM
  void validate() const;
};

// Runs `argv` (argv[0] = the program path) as the node's processes; returns the exit
// status to give: 0, the first failed rank's status (128 + signal for a signal), or the
// ranks' status after a forwarded signal.
int launch(const LaunchOptions& o, const std::vector<std::string>& argv);

// A TCP port that is free on this machine now (for the rendezvous of a one-node job).
int free_port();

}  // namespace cp2::dist
