// What the one-shape benches (cp2 bench conv, cp2 bench norm) share: the best of `rounds`
// timed calls after an untimed one, and their options' check.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>

#include "cp2/common.h"

namespace cp2::compute {

template <class F>
double best_of(int rounds, const F& f) {
  f();
  double best = 1e30;
  for (int i = 0; i < rounds; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

// Throws "--<option>: expected a positive value, found <v>" where v < 1.
inline void require_positive(const char* option, int64_t v) {
  if (v < 1) throw Error(std::string("--") + option + ": expected a positive value, found " + std::to_string(v));
}

}  // namespace cp2::compute
