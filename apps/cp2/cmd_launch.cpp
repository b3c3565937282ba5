// cp2 launch: N data-parallel processes of a cp2 command on this node (torchrun's job,
// without Python). `cp2 launch --nproc 2 -- pretrain --data DIR ...`
#include <unistd.h>

#include <climits>
#include <string>
#include <vector>

#include "commands.h"
#include "cp2/common.h"
#include "cp2/dist/launch.h"

namespace cp2::app {

namespace {

struct LaunchArgs {
  dist::LaunchOptions o;
  std::vector<std::string> command;
};

std::string self_exe() {
  char buf[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) throw Error("launch: cannot find cp2's own executable (/proc/self/exe)");
  return std::string(buf, static_cast<size_t>(n));
}

int run_launch(LaunchArgs& a) {
  auto cmd = a.command;
  // `-- cp2 pretrain ...` and `-- pretrain ...` both run this same cp2 binary.
  if (!cmd.empty() && (cmd[0] == "cp2" || (cmd[0].size() > 4 && cmd[0].substr(cmd[0].size() - 4) == "/cp2")))
    cmd.erase(cmd.begin());
  if (cmd.empty()) throw Error("launch: no command given after -- (cp2 launch --nproc 2 -- pretrain --data DIR ...)");
  if (cmd[0] != "pretrain" && cmd[0] != "finetune" && cmd[0] != "bench")
    throw Error("launch: '" + cmd[0] + "' does not run data-parallel; expected pretrain, finetune or bench allreduce");
  cmd.insert(cmd.begin(), self_exe());
  return dist::launch(a.o, cmd);
}

}  // namespace

Command register_launch(CLI::App& app) {
  auto a = std::make_shared<LaunchArgs>();
  auto* c = app.add_subcommand(
      "launch",
      "Run a training command as N data-parallel processes (PyTorch's RANK/WORLD_SIZE/MASTER_* contract, as torchrun); "
      "output prefixed by rank; one failing rank stops all");
  c->add_option("--nproc", a->o.nproc, "processes on this node")->required()->check(positive);
  c->add_option("--nnodes", a->o.nnodes, "nodes in the job; run the same command on each (default 1)")
      ->check(positive);
  c->add_option("--node-rank", a->o.node_rank, "this node's index, 0..nnodes-1 (default 0)")
      ->check(non_negative);
  c->add_option("--master-addr", a->o.master_addr, "node 0's address, reachable from every node (default 127.0.0.1)");
  c->add_option("--master-port", a->o.master_port,
                "rendezvous port on node 0 (default: a free port on one node; required with --nnodes > 1)")
      ->check(CLI::Range(1, 65535));
  c->add_option("--grace", a->o.grace_s, "seconds the other ranks get to exit after one fails, before SIGKILL (default 30)")
      ->check(non_negative);
  c->add_option("command", a->command, "the cp2 command after --: pretrain ..., finetune ... or bench allreduce ...")->required();
  c->footer(
      "Examples:\n"
      "  cp2 launch --nproc 2 -- pretrain --config configs/cp2_r50_224.yaml --data DIR --out runs/p\n"
      "  two nodes (4 processes each), on node 0 and node 1 respectively:\n"
      "  cp2 launch --nproc 4 --nnodes 2 --node-rank 0 --master-addr 10.0.0.1 --master-port 29500 -- pretrain ...\n"
      "  cp2 launch --nproc 4 --nnodes 2 --node-rank 1 --master-addr 10.0.0.1 --master-port 29500 -- pretrain ...\n"
      "With torchrun instead: torchrun --no_python --nproc_per_node 2 cp2 pretrain ... (Debian's torchrun also needs "
      "-r 1 -t 1)");
  return {c, [a] { return run_launch(*a); }};
}

}  // namespace cp2::app
