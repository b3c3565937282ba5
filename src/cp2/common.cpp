#include "cp2/common.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <dlfcn.h>
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <new>
#include <thread>
#include <vector>

namespace cp2 {

std::string error_message(const std::exception& e) {
  if (const auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
  if (dynamic_cast<const std::bad_alloc*>(&e))
    return "out of memory (std::bad_alloc): an allocation larger than this machine could give; smaller sizes "
           "(batch, view or crop size, queue) need less";
  return e.what();
}

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

std::string error_line(const std::exception& e) { return first_line(error_message(e)); }

int usable_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));  // a mask past 1024 CPUs
}

std::string signal_name(int sig) {
  switch (sig) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGUSR1: return "SIGUSR1";
    case SIGUSR2: return "SIGUSR2";
    default: return "signal " + std::to_string(sig);
  }
}

std::string cpuinfo(const std::string& key) {
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);  // "flags\t\t"
    name.erase(name.find_last_not_of(" \t") + 1);
    if (name != key) continue;
    const size_t v = line.find_first_not_of(" \t", colon + 1);
    return v == std::string::npos ? "" : line.substr(v);
  }
  return "";
}

bool has_word(const std::string& words, const std::string& word) {
  if (word.empty()) return false;
  for (size_t at = words.find(word); at != std::string::npos; at = words.find(word, at + 1)) {
    const size_t end = at + word.size();
    const bool starts = at == 0 || words[at - 1] == ' ' || words[at - 1] == '\t';
    const bool ends = end == words.size() || words[end] == ' ' || words[end] == '\t';
    if (starts && ends) return true;
  }
  return false;
}

int cores_per_process() {
  int n = usable_cores();
  // Several processes on one machine (torchrun, cp2 launch) share its cores.
  if (const char* lw = std::getenv("LOCAL_WORLD_SIZE"); lw && std::atoi(lw) > 1) n = std::max(1, n / std::atoi(lw));
  return n;
}

int set_threads(int n) {
  if (n <= 0) n = cores_per_process();
  at::set_num_threads(n);
  // Debian's LibTorch does its matmuls (the queue logits, the dense loss's bmm, the linear
  // layers) in OpenBLAS, whose pthread build keeps its own pool, sized at load from
  // OPENBLAS_NUM_THREADS / OMP_NUM_THREADS or else every core; at::set_num_threads reaches
  // OpenMP and MKL only. Unset, `--threads 1` still ran OpenBLAS on every core, each of N
  // launched processes did, and a run's numbers hung on that pool's size (torchrun, which sets
  // OMP_NUM_THREADS=1, and cp2 launch gave different losses on an Intel Xeon). Looked up at run
  // time: a LibTorch on MKL (PyTorch's official builds) has no such symbol.
  using SetThreads = void (*)(int);
  if (auto* f = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) f(n);
  return n;
}

int openblas_threads() {
  using GetThreads = int (*)();
  auto* f = reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  return f ? f() : 0;
}

int get_threads() { return at::get_num_threads(); }

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // KiB on Linux
}

double rss_mib() {
  std::ifstream f("/proc/self/statm");
  long long pages = 0, resident = 0;
  if (!(f >> pages >> resident)) return 0;
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / (1024.0 * 1024.0);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::vector<std::string> for_each_index(int64_t n, int threads, const std::function<void(int64_t)>& fn) {
  std::vector<std::string> errors(static_cast<size_t>(std::max<int64_t>(n, 0)));
  std::atomic<int64_t> next{0};
  auto work = [&] {
    for (int64_t i; (i = next++) < n;) {
      try {
        fn(i);
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(i)] = e.what();
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < std::max(threads, 1); ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  return errors;
}

std::string join(const std::vector<std::string>& items, const std::string& sep) {
  std::string s;
  for (size_t i = 0; i < items.size(); ++i) s += (i ? sep : "") + items[i];
  return s;
}

std::string count_of(int64_t n, const std::string& one, const std::string& many) {
  return std::to_string(n) + " " + (n == 1 ? one : many.empty() ? one + "s" : many);
}

std::string num_str(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

std::string shape_str(const std::vector<long>& sizes) {
  std::vector<std::string> parts;
  for (long v : sizes) parts.push_back(std::to_string(v));
  std::string s = "[";  // not "[" + ...: GCC 12 warns falsely on it in C++20 (-Wstringop-overflow)
  s += join(parts);
  return s + "]";
}

}  // namespace cp2
