#include "cp2/common.h"

#include <ATen/Parallel.h>

#include <thread>
#include <vector>

namespace cp2 {

int set_threads(int n) {
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(n);
  return n;
}

int get_threads() { return at::get_num_threads(); }

std::string shape_str(const std::vector<long>& sizes) {
  std::string s = "[";
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(sizes[i]);
  }
  return s + "]";
}

}  // namespace cp2
