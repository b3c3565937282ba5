// The fast algorithms' paths (train.conv_algorithm: winograd|auto) by name, each of which can
// be turned off on this thread: `cp2 bench pretrain|finetune --alternate` times steps with and
// without some in alternating rounds of one process, because a shared machine drifts ±10-20 %
// from one run to the next (docs/benchmarks.md), more than one path's gain. A path turned off
// leaves its work to PyTorch's ops (the convolution module's forward; batch_norm, `+=`, relu_;
// torch::mm; the max pool module's forward),
// except three that choose between fast paths: `cp2-tiles` off, oneDNN's Winograd runs;
// `subgrids` off, the tap GEMMs; `aspp-pool` off, ASPP's bottleneck over the concatenated
// input (cp2's tiles there too, through compute::conv2d).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "cp2/compute/precision.h"

namespace cp2::compute {

enum class FastPath : uint32_t {
  winograd,
  tap_gemms,
  gemm_1x1,
  bn_act,
  cp2_tiles,
  subgrids,
  onednn_mm,
  max_pool,
  aspp_pool
};

struct FastPathInfo {
  FastPath path;
  const char* name;  // as --alternate takes it
  std::string what;  // its --help text, thresholds from the rules' constants
};
// Every path, in the order --help lists them.
const std::vector<FastPathInfo>& fast_paths();
// "winograd, tap-gemms, 1x1-gemms, bn-act, …"
std::string fast_path_names();
// A comma-separated list of names ("bn-act,1x1-gemms"); throws naming `key`, the value and
// the names where one is unknown or the list is empty.
std::vector<FastPath> parse_fast_paths(const std::string& list, const std::string& key);

// --alternate's value (`list`, "" = none) checked against the bench's --rounds, device and
// resolved numerics (without Numerics::winograd no path runs and every ratio would read 1):
// the paths, or none.
std::vector<FastPath> alternate_paths(const std::string& list, int rounds, const std::string& device,
                                      const Numerics& numerics);

// False while a FastPathsOff scope on this thread names `p`.
bool fast_path_on(FastPath p);

class FastPathsOff {
 public:
  explicit FastPathsOff(const std::vector<FastPath>& paths);
  ~FastPathsOff();
  FastPathsOff(const FastPathsOff&) = delete;
  FastPathsOff& operator=(const FastPathsOff&) = delete;

 private:
  uint32_t prev_;
};

// Rates of rounds alternating on (even indices) and off (odd), as ratios on / off of the
// pairs (rounds 2k, 2k+1): their median and range.
struct Alternation {
  size_t pairs = 0;
  double median = 0, lo = 0, hi = 0;
  std::string line() const;  // "on / off 1.060x (median of 3 pairs, 0.980-1.120x)"
};
Alternation alternation(const std::vector<double>& rates);
// A bench's rates per round: with paths alternated, the median of the on rounds (even
// indices) and the pairs' ratios; otherwise the median of every round.
struct RoundRates {
  double median = 0;
  int rounds = 0;       // the rounds the median is of
  Alternation on_off;   // no pairs unless alternated
};
RoundRates round_rates(const std::vector<double>& rates, bool alternated);
// A bench's round label: " (<paths> off)" for a round with them off, else "".
std::string round_label(const std::string& paths, bool off);
// Its closing line with --alternate: "<paths> off        <step> on / off …; end to end on / off …".
std::string alternation_summary(const std::string& paths, const std::string& step, const RoundRates& step_rates,
                                const RoundRates& e2e_rates);

}  // namespace cp2::compute
