#include "cp2/compute/op_profile.h"

#include <ATen/record_function.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <string_view>
#include <mutex>
#include <thread>

#include "cp2/common.h"

namespace cp2::compute {

namespace {

// One open op: when it began and how long the ops it called took.
struct OpenOp : at::ObserverContext {
  Clock::time_point start;
  double child_s = 0;
  OpenOp* parent = nullptr;
};

std::mutex g_prof_mu;
// By name, found without building a string per op (std::less<>); while an OpProfiler lives.
using OpTimes = std::map<std::string, OpTime, std::less<>>;
OpTimes* g_prof_ops = nullptr;
double g_prof_top_level_s = 0;
std::thread::id g_prof_owner;
std::atomic<uint64_t> g_prof_generation{0};

// The innermost open op of this thread, valid for profiler generation t_generation (an op left
// open when a profiler ended must not become the parent of the next profiler's ops).
thread_local OpenOp* t_innermost = nullptr;
thread_local uint64_t t_generation = 0;

std::unique_ptr<at::ObserverContext> on_op_start(const at::RecordFunction&) {
  const uint64_t gen = g_prof_generation.load(std::memory_order_relaxed);
  if (t_generation != gen) {
    t_innermost = nullptr;
    t_generation = gen;
  }
  auto o = std::make_unique<OpenOp>();
  o->parent = t_innermost;
  t_innermost = o.get();
  o->start = Clock::now();
  return o;
}

void on_op_end(const at::RecordFunction& fn, at::ObserverContext* ctx) {
  auto* o = static_cast<OpenOp*>(ctx);
  if (!o) return;
  const double total = seconds_since(o->start);
  if (t_innermost == o) t_innermost = o->parent;
  if (o->parent) o->parent->child_s += total;
  const std::string_view name = fn.name() ? fn.name() : "?";
  std::lock_guard<std::mutex> lk(g_prof_mu);
  if (!g_prof_ops) return;
  auto it = g_prof_ops->find(name);
  if (it == g_prof_ops->end()) it = g_prof_ops->emplace(std::string(name), OpTime{}).first;
  auto& t = it->second;
  t.calls += 1;
  t.self_s += std::max(0.0, total - o->child_s);
  t.total_s += total;
  if (!o->parent && std::this_thread::get_id() == g_prof_owner) g_prof_top_level_s += total;
}

// "autograd::engine::evaluate_function: torch::autograd::CppNode<cp2::compute::(anonymous
// namespace)::TapConvFn>" -> "backward: TapConvFn".
std::string short_op_name(std::string n) {
  const std::string bw = "autograd::engine::evaluate_function: ";
  if (n.rfind(bw, 0) == 0) n = "backward: " + n.substr(bw.size());
  const auto node = n.find("CppNode<");
  if (node != std::string::npos && n.back() == '>') {
    std::string inner = n.substr(node + 8, n.size() - node - 9);
    const auto colon = inner.rfind("::");
    if (colon != std::string::npos) inner = inner.substr(colon + 2);
    n = n.substr(0, node) + inner;
    const auto ta = n.find("torch::autograd::");
    if (ta != std::string::npos) n.erase(ta, 17);
  }
  return n.size() > 58 ? n.substr(0, 55) + "..." : n;
}

}  // namespace

OpProfiler::OpProfiler() {
  {
    std::lock_guard<std::mutex> lk(g_prof_mu);
    if (g_prof_ops) throw Error("op profiler: another profile is running");
    g_prof_ops = new OpTimes();
    g_prof_top_level_s = 0;
    g_prof_owner = std::this_thread::get_id();
    g_prof_generation.fetch_add(1);
  }
  handle_ = at::addGlobalCallback(
      at::RecordFunctionCallback(&on_op_start, &on_op_end)
          .scopes({at::RecordScope::FUNCTION, at::RecordScope::BACKWARD_FUNCTION, at::RecordScope::USER_SCOPE}));
}

OpProfiler::~OpProfiler() {
  at::removeCallback(handle_);
  std::lock_guard<std::mutex> lk(g_prof_mu);
  delete g_prof_ops;
  g_prof_ops = nullptr;
}

std::vector<OpTime> OpProfiler::result() const {
  std::lock_guard<std::mutex> lk(g_prof_mu);
  std::vector<OpTime> v;
  for (const auto& [name, t] : *g_prof_ops) {
    v.push_back(t);
    v.back().name = name;
  }
  std::sort(v.begin(), v.end(), [](const OpTime& a, const OpTime& b) { return a.self_s > b.self_s; });
  return v;
}

OpProfile profile_steps(const std::function<void()>& step, int steps) {
  OpProfile p;
  p.steps = steps;
  OpProfiler prof;
  const auto t = Clock::now();
  for (int i = 0; i < steps; ++i) step();
  p.wall_s = seconds_since(t);
  p.ops = prof.result();
  std::lock_guard<std::mutex> lk(g_prof_mu);
  p.top_level_s = g_prof_top_level_s;
  return p;
}

std::string profile_table(const OpProfile& p, int top) {
  const double per = p.steps > 0 ? 1000.0 / p.steps : 0, wall = p.wall_s > 0 ? p.wall_s : 1;
  std::string s;
  char line[256];
  std::snprintf(line, sizeof line, "profile of %s, %.1f ms per step; ops by their own time (children excluded):\n",
                count_of(p.steps, "step").c_str(), p.wall_s * per);
  s += line;
  std::snprintf(line, sizeof line, "  %-58s %8s %11s %7s %11s\n", "op", "calls", "self ms", "share", "total ms");
  s += line;
  const int n = std::min<int>(top, static_cast<int>(p.ops.size()));
  for (int i = 0; i < n; ++i) {
    const auto& o = p.ops[i];
    std::snprintf(line, sizeof line, "  %-58s %8.1f %11.1f %6.1f%% %11.1f\n", short_op_name(o.name).c_str(),
                  static_cast<double>(o.calls) / std::max(1, p.steps), o.self_s * per, 100 * o.self_s / wall,
                  o.total_s * per);
    s += line;
  }
  double rest = 0;
  for (size_t i = n; i < p.ops.size(); ++i) rest += p.ops[i].self_s;
  std::snprintf(line, sizeof line, "  %-58s %8s %11.1f %6.1f%%\n",
                ("the other " + std::to_string(p.ops.size() - n) + " ops").c_str(), "", rest * per, 100 * rest / wall);
  s += line;
  const double outside = std::max(0.0, p.wall_s - p.top_level_s);
  std::snprintf(line, sizeof line, "  %-58s %8s %11.1f %6.1f%%\n", "outside any op (cp2's code between ops)", "",
                outside * per, 100 * outside / wall);
  s += line;
  return s;
}

}  // namespace cp2::compute
