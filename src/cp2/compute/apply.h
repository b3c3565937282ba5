// Every cp2 autograd Function is applied through here. GCC 13 (-Wstringop-overflow) and GCC 14
// (-Warray-bounds) warn inside libstdc++'s std::vector<bool> as LibTorch's inlined
// Function::apply (torch/csrc/autograd/custom_function.h) fills its flags: a false positive,
// seen with LibTorch 2.11 (GCC 13) and Debian 13's 2.6 (GCC 14). The two warnings are off for
// this call only; GCC honours a diagnostic pragma at a site its code is inlined through.
#pragma once
#include <utility>

namespace cp2::compute {

template <class Fn, class... Args>
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((flatten))
#endif
auto apply_function(Args&&... args) {
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Warray-bounds"
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#endif
  return Fn::apply(std::forward<Args>(args)...);
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
}

}  // namespace cp2::compute
