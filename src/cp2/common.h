// Shared basics: the one exception type thrown at boundaries, thread setup.
#pragma once
#include <chrono>
#include <csignal>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace cp2 {

// Every user-facing failure (bad file, bad key, bad value) is a cp2::Error whose
// message names the file/key/value, what was expected and what was found.
// `main` catches it once, prints it and exits non-zero.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

// An exception's message for a person: LibTorch's (c10::Error) without the C++ backtrace its
// what() carries, std::bad_alloc said as running out of memory, others' what().
std::string error_message(const std::exception& e);
// The first line of `s`, and of error_message(e): one line per fault where a message quotes a
// cause (LibTorch's checks can run over several lines).
std::string first_line(const std::string& s);
std::string error_line(const std::exception& e);

// Debian's LibTorch starts with one intra-op thread; cp2 defaults to every core it may use.
// n <= 0: all the cores this process may run on (usable_cores()), shared evenly among
// LOCAL_WORLD_SIZE processes on this machine. Returns the number set.
int set_threads(int n);
int get_threads();
// The threads of OpenBLAS's own pool (set_threads sets them too), or 0 where torch's BLAS is
// not OpenBLAS (MKL in PyTorch's official LibTorch).
int openblas_threads();
// The cores in this process's CPU affinity mask (taskset, SLURM's --cpus-per-task, a
// container's cpuset), as OpenMP counts them; std::thread::hardware_concurrency counts every
// core of the machine, and threads past the mask only wait on each other.
int usable_cores();
// The first processor's value of `key` in /proc/cpuinfo ("flags", "vendor_id", "model name"),
// "" where there is none: the one reader of that file (cp2 --version, precision auto).
std::string cpuinfo(const std::string& key);
// Whether a space-separated list (cpuinfo("flags")) holds `word` as a whole word: "avx512_bf16"
// is not "avx512_bf16x". The one test of a CPU flag (cp2 --version, precision auto, tests).
bool has_word(const std::string& words, const std::string& word);
// Whether a device name ("cpu", "cuda", "cuda:1") names a CUDA device.
inline bool is_cuda_name(const std::string& device) { return device.rfind("cuda", 0) == 0; }
// usable_cores() shared evenly among the LOCAL_WORLD_SIZE processes on this machine (torchrun,
// cp2 launch), at least 1: the default intra-op threads, and the loader threads on a GPU.
int cores_per_process();

// The signals a training run stops on, with a checkpoint (train/signals.h), and that cp2
// launch passes on to its ranks.
inline constexpr int stop_signals[] = {SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
// "SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2", else "signal N".
std::string signal_name(int sig);

// Timing and memory figures for progress lines and benchmarks.
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t);
double peak_rss_mib();                 // the process's peak resident set (getrusage)
double rss_mib();                      // its resident set now (/proc/self/statm; 0 where absent)
double median(std::vector<double> v);  // of a non-empty list; mean of the middle two for even sizes

// Calls fn(i) for i in [0, n) on `threads` threads (the caller's included), each index
// once; returns what each call threw ("" where it returned), in index order. For work
// whose result depends on the index only (files drawn from (seed, i), checks).
std::vector<std::string> for_each_index(int64_t n, int threads, const std::function<void(int64_t)>& fn);

// "a, b, c": the items with sep between them (lists of choices in error messages and help).
std::string join(const std::vector<std::string>& items, const std::string& sep = ", ");
// "1 epoch", "3 epochs", "2 batches": a count and its noun, the plural `one` + "s" unless given.
std::string count_of(int64_t n, const std::string& one, const std::string& many = "");

// A number in a message as a person writes it: 0.9, -3, 1e-05 (std::to_string gives
// 0.900000, -3.000000, 0.000010).
std::string num_str(double v);

// Human-readable shape such as [64, 3, 7, 7].
std::string shape_str(const std::vector<long>& sizes);

}  // namespace cp2
