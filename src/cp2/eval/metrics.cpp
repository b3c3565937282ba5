#include "cp2/eval/metrics.h"

#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

#include "cp2/common.h"

namespace cp2::eval {

ConfusionMatrix::ConfusionMatrix(int64_t num_classes, int64_t ignore_index)
    : c_(num_classes), ignore_(ignore_index), m_(torch::zeros({num_classes, num_classes}, torch::kLong)) {
  if (num_classes < 1) throw Error("metrics: expected at least one class, found " + std::to_string(num_classes));
}

void ConfusionMatrix::update(const at::Tensor& pred, const at::Tensor& label) {
  if (pred.sizes() != label.sizes())
    throw Error("metrics: prediction " + shape_str(pred.sizes().vec()) + " and label " +
                shape_str(label.sizes().vec()) + " differ in shape");
  auto p = pred.flatten().to(torch::kLong), l = label.flatten().to(torch::kLong);
  auto valid = l != ignore_;
  auto in_range = (l >= 0) & (l < c_);
  out_of_range_ += (valid & ~in_range).sum().item<int64_t>();
  auto keep = valid & in_range;
  p = p.masked_select(keep);
  l = l.masked_select(keep);
  if (p.numel() && (p.min().item<int64_t>() < 0 || p.max().item<int64_t>() >= c_))
    throw Error("metrics: predictions outside [0, " + std::to_string(c_) + ")");
  // bincount of truth * C + prediction on the tensors' device, then onto the CPU matrix.
  m_ += torch::bincount(l * c_ + p, {}, c_ * c_).view({c_, c_}).to(torch::kCPU, torch::kLong);
}

Metrics compute_metrics(const at::Tensor& confusion) {
  auto cm = confusion.to(torch::kCPU, torch::kDouble);
  const int64_t c = cm.size(0);
  auto tp = cm.diag(), truth = cm.sum(1), predicted = cm.sum(0);
  auto uni = truth + predicted - tp;
  Metrics m;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  double iou_sum = 0, acc_sum = 0;
  int64_t iou_n = 0, acc_n = 0;
  auto U = uni.accessor<double, 1>(), Tr = truth.accessor<double, 1>();
  auto tpc = tp.contiguous();
  auto I = tpc.accessor<double, 1>();
  for (int64_t k = 0; k < c; ++k) {
    const double u = U[k], t = Tr[k], i = I[k];
    m.iou.push_back(u > 0 ? i / u : nan);  // absent from truth and prediction: excluded
    m.acc.push_back(t > 0 ? i / t : nan);  // absent from truth: excluded
    if (u > 0) iou_sum += m.iou.back(), ++iou_n;
    if (t > 0) acc_sum += m.acc.back(), ++acc_n;
  }
  const double total = truth.sum().item<double>();
  m.pixels = static_cast<int64_t>(total);
  m.miou = iou_n ? iou_sum / iou_n : nan;
  m.macc = acc_n ? acc_sum / acc_n : nan;
  m.aacc = total > 0 ? tp.sum().item<double>() / total : nan;
  return m;
}

std::string format_table(const Metrics& m, const std::vector<std::string>& names) {
  std::ostringstream o;
  size_t w = 5;
  for (const auto& n : names) w = std::max(w, n.size());
  auto pct = [](double v) {
    char b[32];
    if (std::isnan(v)) return std::string("-");
    std::snprintf(b, sizeof b, "%.2f", 100 * v);
    return std::string(b);
  };
  char line[256];
  std::snprintf(line, sizeof line, "%-*s %8s %8s\n", static_cast<int>(w), "class", "IoU", "Acc");
  o << line;
  for (size_t k = 0; k < m.iou.size(); ++k) {
    std::string n = k < names.size() ? names[k] : std::to_string(k);
    std::snprintf(line, sizeof line, "%-*s %8s %8s\n", static_cast<int>(w), n.c_str(), pct(m.iou[k]).c_str(),
                  pct(m.acc[k]).c_str());
    o << line;
  }
  o << "mIoU " << pct(m.miou) << "  mAcc " << pct(m.macc) << "  aAcc " << pct(m.aacc) << "  (" << m.pixels
    << " pixels)\n";
  return o.str();
}

at::Tensor predicted_class(const at::Tensor& scores, int64_t dim) {
  if (!scores.device().is_cpu() || !scores.is_floating_point() || scores.size(dim) < 2 || scores.stride(dim) == 1)
    return scores.argmax(dim);  // fast where the classes are innermost (channels-last)
  torch::NoGradGuard ng;
  auto best = scores.select(dim, 0).clone(at::MemoryFormat::Contiguous);  // written below: never a view
  auto cls = torch::zeros(best.sizes(), best.options().dtype(torch::kLong));
  auto better = torch::empty(best.sizes(), best.options().dtype(torch::kBool));
  for (int64_t k = 1; k < scores.size(dim); ++k) {
    const auto x = scores.select(dim, k);
    at::gt_out(better, x, best);  // strictly greater: the first maximum wins
    at::maximum_out(best, best, x);
    cls.masked_fill_(better, k);
  }
  return cls;
}

}  // namespace cp2::eval
