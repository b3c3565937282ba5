#include "cp2/data/batch.h"

#include <ATen/ops/empty.h>
#include <c10/core/DeviceGuard.h>

namespace cp2::data {

at::Tensor batch_tensor(at::IntArrayRef shape, at::ScalarType dtype, const std::optional<c10::Device>& pin_for) {
  c10::OptionalDeviceGuard on_device;
  if (pin_for) on_device.reset_device(*pin_for);
  return at::empty(shape, at::TensorOptions(dtype).pinned_memory(pin_for.has_value()));
}

std::optional<c10::Device> pin_target(const c10::Device& device) {
  if (device.is_cuda()) return device;
  return std::nullopt;
}

}  // namespace cp2::data
