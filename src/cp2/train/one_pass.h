// The tensor side of train/sgd_fma.h's loops, shared by the optimizer's update (train/optim.cpp)
// and MoCo's momentum update of the key encoder (pretrain/model.cpp): when a parameter may take
// one pass, and that pass over ATen's threads.
#pragma once
#include <cstdint>
#include <functional>
#include <initializer_list>

namespace at {
class Tensor;
}

namespace cp2::train {

// Whether sgd_fma's loops may run over `t` and each of `with`: this CPU and build have them
// (AVX2 + FMA), and each tensor is a strided, dense fp32 CPU tensor with t's sizes and strides,
// so that one index addresses the same element in all of them.
bool one_pass_fits(const at::Tensor& t, std::initializer_list<const at::Tensor*> with);

// Runs body(begin, end) over t's elements [0, numel) on ATen's intra-op threads, then bumps t's
// version as an in-place op would: a graph that saved t before refuses to use it after.
void one_pass(at::Tensor& t, const std::function<void(int64_t, int64_t)>& body);

}  // namespace cp2::train
