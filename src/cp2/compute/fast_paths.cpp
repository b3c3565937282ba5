#include "cp2/compute/fast_paths.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "cp2/common.h"
#include "cp2/compute/conv.h"
#include "cp2/compute/winograd.h"

namespace cp2::compute {

namespace {
thread_local uint32_t t_off = 0;
uint32_t bit(FastPath p) { return 1u << static_cast<uint32_t>(p); }
}  // namespace

const std::vector<FastPathInfo>& fast_paths() {
  static const std::vector<FastPathInfo> t{
      {FastPath::winograd, "winograd", "3x3 convolutions as Winograd, also over dilated ones' sub-grids"},
      {FastPath::tap_gemms, "tap-gemms", "dilated 3x3s mostly over padding as one GEMM per tap"},
      {FastPath::gemm_1x1, "1x1-gemms", "ResNet-50's stride-1 1x1 convolutions as GEMMs"},
      {FastPath::bn_act, "bn-act", "batch norm + residual sum + ReLU in one pass each way"},
      {FastPath::cp2_tiles, "cp2-tiles",
       "undilated 3x3s with " + cp2_tiles_rule() +
           " on cp2's F(4x4) tiles rather than oneDNN's Winograd, where oneDNN runs AVX-512 (off: oneDNN's)"},
      {FastPath::subgrids, "subgrids",
       "dilated 3x3s on Winograd sub-grids rather than tap GEMMs where they multiply >= " + num_str(kSubgridsOverTaps) +
           "x less (off: the tap GEMMs)"},
      {FastPath::onednn_mm, "onednn-mm",
       "the loss's logits against the queue (a 2-D matmul) through oneDNN's sgemm rather than LibTorch's (OpenBLAS)"},
      {FastPath::max_pool, "max-pool", "ResNet's stem max pool (3x3, stride 2) on NCHW maps as one AVX2 pass"},
      {FastPath::aspp_pool, "aspp-pool",
       "ASPP's bottleneck on cp2's tiles: its image-pool channels, constant over the map, multiplied once per image "
       "rather than per tile"},
  };
  return t;
}

std::string fast_path_names() {
  std::vector<std::string> names;
  for (const auto& p : fast_paths()) names.push_back(p.name);
  return join(names);
}

std::vector<FastPath> parse_fast_paths(const std::string& list, const std::string& key) {
  std::vector<FastPath> out;
  std::stringstream in(list);
  std::string name;
  while (std::getline(in, name, ',')) {
    const auto& t = fast_paths();
    const auto it = std::find_if(t.begin(), t.end(), [&](const FastPathInfo& p) { return name == p.name; });
    if (it == t.end())
      throw Error(key + ": expected a comma-separated list of " + fast_path_names() + ", found '" + name + "' in '" +
                  list + "'");
    out.push_back(it->path);
  }
  if (out.empty()) throw Error(key + ": expected one or more of " + fast_path_names() + ", found ''");
  return out;
}

std::vector<FastPath> alternate_paths(const std::string& list, int rounds, const std::string& device,
                                      const Numerics& numerics) {
  if (list.empty()) return {};
  auto paths = parse_fast_paths(list, "--alternate");
  if (device.rfind("cpu", 0) != 0)
    throw Error("--alternate: the fast paths are the CPU's (fp32); found --device " + device);
  if (rounds < 2)
    throw Error("--alternate: expected --rounds >= 2 (rounds alternate with the paths on and off), found " +
                std::to_string(rounds));
  if (!numerics.winograd)
    throw Error("--alternate: the fast paths run only under --conv-algorithm winograd or auto in fp32 on a CPU with "
                "their kernels; this run's numerics are \"" + numerics.describe() +
                "\", so every round would be the same");
  return paths;
}

bool fast_path_on(FastPath p) { return (t_off & bit(p)) == 0; }

FastPathsOff::FastPathsOff(const std::vector<FastPath>& paths) : prev_(t_off) {
  for (auto p : paths) t_off |= bit(p);
}
FastPathsOff::~FastPathsOff() { t_off = prev_; }

Alternation alternation(const std::vector<double>& rates) {
  std::vector<double> ratios;
  for (size_t i = 0; i + 1 < rates.size(); i += 2) ratios.push_back(rates[i] / rates[i + 1]);
  Alternation a;
  if (ratios.empty()) return a;
  a.pairs = ratios.size();
  a.median = median(ratios);
  const auto [lo, hi] = std::minmax_element(ratios.begin(), ratios.end());
  a.lo = *lo;
  a.hi = *hi;
  return a;
}

RoundRates round_rates(const std::vector<double>& rates, bool alternated) {
  RoundRates r;
  std::vector<double> on;
  for (size_t i = 0; i < rates.size(); i += alternated ? 2 : 1) on.push_back(rates[i]);
  r.median = median(on);
  r.rounds = static_cast<int>(on.size());
  if (alternated) r.on_off = alternation(rates);
  return r;
}

std::string round_label(const std::string& paths, bool off) { return off ? " (" + paths + " off)" : ""; }

std::string alternation_summary(const std::string& paths, const std::string& step, const RoundRates& step_rates,
                                const RoundRates& e2e_rates) {
  return paths + " off        " + step + " " + step_rates.on_off.line() + "; end to end " + e2e_rates.on_off.line();
}

std::string Alternation::line() const {
  char buf[160];
  std::snprintf(buf, sizeof buf, "on / off %.3fx (median of %zu pairs, %.3f-%.3fx)", median, pairs, lo, hi);
  return buf;
}

}  // namespace cp2::compute
