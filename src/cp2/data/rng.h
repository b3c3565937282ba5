// A small, portable random source for the data pipeline. Every draw for sample i of
// epoch e comes from Rng::derive(seed, {stream, e, i}), so batches depend only on
// (seed, epoch, index), never on thread count or timing; the algorithms (mt19937_64 +
// our own uniform/integer mapping) give the same numbers on every platform.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <random>
#include <vector>

namespace cp2::data {

class Rng {
 public:
  explicit Rng(uint64_t seed) : g_(seed) {}
  // A generator keyed by (seed, keys...) through splitmix64 mixing.
  static Rng derive(uint64_t seed, std::initializer_list<uint64_t> keys) {
    uint64_t h = mix(seed ^ 0x9E3779B97F4A7C15ull);
    for (uint64_t k : keys) h = mix(h ^ mix(k + 0x632BE59BD9B4E019ull));
    return Rng(h);
  }
  double uniform01() { return static_cast<double>(g_() >> 11) * 0x1.0p-53; }       // [0, 1)
  double uniform(double a, double b) { return a + (b - a) * uniform01(); }         // [a, b)
  int64_t randint(int64_t lo, int64_t hi) {                                         // [lo, hi)
    if (hi <= lo) return lo;
    auto n = static_cast<uint64_t>(hi - lo);
    return lo + static_cast<int64_t>(static_cast<unsigned __int128>(g_()) * n >> 64);
  }
  bool bernoulli(double p) { return uniform01() < p; }
  std::vector<int64_t> permutation(int64_t n) {  // Fisher-Yates
    std::vector<int64_t> p(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) p[i] = i;
    for (int64_t i = n - 1; i > 0; --i) std::swap(p[i], p[randint(0, i + 1)]);
    return p;
  }

 private:
  static uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  std::mt19937_64 g_;
};

}  // namespace cp2::data
