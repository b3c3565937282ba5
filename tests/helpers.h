// Shared test helpers: fixture paths, reading PyTorch-written tensor files, error checks.
#pragma once
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "cp2/common.h"
#include "cp2/data/synth.h"
#include "cp2/io/checkpoint.h"

namespace cp2::test {

inline std::string fixture(const std::string& name) { return std::string(CP2_FIXTURES) + "/" + name; }

// Folders temp_dir made for the running test; main.cpp removes them when the test
// passes (the suite wrote 21 GB of checkpoints when they were kept, and CI's disk filled
// up), and keeps them when it fails, or when CP2_KEEP_TEST_TMP is set, for a look.
inline std::vector<std::filesystem::path>& temp_dirs_of_this_test() {
  static std::vector<std::filesystem::path> dirs;
  return dirs;
}

// A fresh, empty folder for one test (build/test_tmp/<name>); names are unique per test
// so parallel ctest processes never share one.
inline std::string temp_dir(const std::string& name) {
  auto p = std::filesystem::path(CP2_FIXTURES).parent_path() / "test_tmp" / name;
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  temp_dirs_of_this_test().push_back(p);
  return p.string();
}

// A fresh folder of `count` generated w x h images (data::write_synthetic_images).
inline std::string synth_images(const std::string& name, int count, int width, int height, uint64_t seed) {
  auto dir = temp_dir(name);
  data::SynthOptions o;
  o.count = count;
  o.width = width;
  o.height = height;
  o.seed = seed;
  data::write_synthetic_images(dir, o);
  return dir;
}

// Tensors of a flat dict file written by tools/make_parity_fixtures.py.
inline std::map<std::string, at::Tensor> load_tensors(const std::string& path) {
  std::map<std::string, at::Tensor> out;
  for (auto& [k, v] : io::flatten(io::load_checkpoint(path).root))
    if (v->kind == py::Kind::Tensor) out[k] = v->tensor;
  return out;
}

// max |a - b| / max |b|: error relative to the output's scale (element-wise relative
// error is meaningless where outputs cross zero).
inline double max_rel(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  if (a.sizes() != b.sizes()) return 1e9;
  return ((a.to(at::kDouble) - b.to(at::kDouble)).abs().max() / b.to(at::kDouble).abs().max().clamp_min(1e-30))
      .item<double>();
}

// Runs `fn`, expects a cp2::Error whose message contains every fragment.
template <class Fn>
void expect_error(Fn fn, std::initializer_list<std::string> fragments) {
  try {
    fn();
    ADD_FAILURE() << "expected cp2::Error";
  } catch (const Error& e) {
    std::string msg = e.what();
    for (const auto& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "'" << f << "' not in: " << msg;
  }
}

}  // namespace cp2::test

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <sstream>

namespace cp2::test {

// A program's exit status and output, as a user sees them.
struct CliRun {
  int rc;
  std::string out;
};
// Any command line through sh, stderr merged into out.
inline CliRun run_command(const std::string& command) {
  const std::string cmd = command + " 2>&1";
  CliRun r{-1, ""};
  FILE* p = popen(cmd.c_str(), "r");
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  int st = pclose(p);
  r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}
// The cp2 program as a user runs it: `args` through sh (stderr merged into out).
inline CliRun run_cli(const std::string& args, const std::string& prefix = "") {
  return run_command(prefix + std::string(CP2_BINARY) + " " + args);
}

// A shell script's stdout (stderr too where the script merges it).
inline std::string sh(const std::string& script) {
  FILE* p = popen(script.c_str(), "r");
  std::string out;
  std::array<char, 256> buf;
  for (size_t n; (n = fread(buf.data(), 1, buf.size(), p)) > 0;) out.append(buf.data(), n);
  pclose(p);
  return out;
}

inline std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace cp2::test
