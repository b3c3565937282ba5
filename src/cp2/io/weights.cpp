#include "cp2/io/weights.h"

#include <torch/torch.h>

#include <map>
#include <sstream>

#include "cp2/common.h"

namespace cp2::io {

namespace {
bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}
std::vector<long> dims(const at::Tensor& t) { return std::vector<long>(t.sizes().begin(), t.sizes().end()); }
}  // namespace

std::string LoadReport::str() const {
  std::ostringstream o;
  o << "load " << source << ": " << loaded.size() << " loaded, " << missing.size() << " missing, "
    << unexpected.size() << " unexpected, " << mismatched.size() << " shape-mismatched";
  for (const auto& k : missing) o << "\n  missing:    " << k;
  for (const auto& k : unexpected) o << "\n  unexpected: " << k;
  for (const auto& m : mismatched)
    o << "\n  mismatched: " << m.key << " expected " << shape_str(m.expected) << ", found " << shape_str(m.found);
  return o.str();
}

TensorList state_dict(const torch::nn::Module& m) {
  TensorList out;
  for (const auto& item : m.named_modules("", /*include_self=*/true)) {
    std::string prefix = item.key().empty() ? "" : item.key() + ".";
    for (const auto& p : item.value()->named_parameters(false)) out.emplace_back(prefix + p.key(), p.value().detach());
    for (const auto& b : item.value()->named_buffers(false)) out.emplace_back(prefix + b.key(), b.value().detach());
  }
  return out;
}

LoadReport load_state(torch::nn::Module& m, const TensorList& tensors, bool strict, const std::string& source) {
  LoadReport r;
  r.source = source;
  std::map<std::string, at::Tensor> given(tensors.begin(), tensors.end());
  std::map<std::string, bool> used;
  torch::NoGradGuard ng;
  std::vector<std::pair<at::Tensor, at::Tensor>> copies;
  for (auto& [name, dst] : state_dict(m)) {
    auto it = given.find(name);
    if (it == given.end()) {
      if (!ends_with(name, "num_batches_tracked")) r.missing.push_back(name);
      continue;
    }
    used[name] = true;
    if (it->second.sizes() != dst.sizes()) {
      r.mismatched.push_back({name, dims(dst), dims(it->second)});
      continue;
    }
    r.loaded.push_back(name);
    copies.emplace_back(dst, it->second);
  }
  for (const auto& [name, t] : tensors)
    if (!used.count(name)) r.unexpected.push_back(name);
  if (r.loaded.empty())
    throw Error(source + ": no tensor matched the model (" + std::to_string(tensors.size()) +
                " tensors in the file, " + std::to_string(r.missing.size()) +
                " expected by the model); wrong key-mapping preset?\n" + r.str());
  if (strict && !r.clean()) throw Error(source + ": strict load failed\n" + r.str());
  for (auto& [dst, src] : copies) dst.copy_(src);
  return r;
}

}  // namespace cp2::io
