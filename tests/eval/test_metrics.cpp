// Metrics against hand-computed confusion matrices, with ignore pixels and absent classes.
#include <torch/torch.h>

#include <cmath>

#include "../helpers.h"
#include "cp2/eval/metrics.h"

namespace cp2::test {
namespace {

using namespace cp2::eval;

TEST(Metrics, HandComputedConfusionMatrix) {
  // truth:      0 0 1 1 2 255 | prediction: 0 1 1 1 0 2
  ConfusionMatrix cm(3);
  cm.update(torch::tensor({0, 1, 1, 1, 0, 2}), torch::tensor({0, 0, 1, 1, 2, 255}));
  auto expected = torch::tensor({1, 1, 0, 0, 2, 0, 1, 0, 0}, torch::kLong).view({3, 3});
  EXPECT_TRUE(torch::equal(cm.matrix(), expected)) << cm.matrix();
  auto m = compute_metrics(cm.matrix());
  // IoU: class 0 = 1 / (1 + 1 FN + 1 FP), class 1 = 2 / (2 + 1 FP), class 2 = 0 / 1.
  EXPECT_NEAR(m.iou[0], 1.0 / 3, 1e-12);
  EXPECT_NEAR(m.iou[1], 2.0 / 3, 1e-12);
  EXPECT_NEAR(m.iou[2], 0.0, 1e-12);
  EXPECT_NEAR(m.miou, 1.0 / 3, 1e-12);
  EXPECT_NEAR(m.macc, (0.5 + 1.0 + 0.0) / 3, 1e-12);
  EXPECT_NEAR(m.aacc, 3.0 / 5, 1e-12);  // the ignored pixel is not counted
  EXPECT_EQ(m.pixels, 5);
}

TEST(Metrics, AbsentClassesAreExcludedAsMmseg) {
  // 4 classes: class 3 appears nowhere (excluded from mIoU and mAcc); class 2 is only
  // predicted (IoU 0 counts, accuracy undefined and excluded).
  ConfusionMatrix cm(4);
  cm.update(torch::tensor({{0, 0}, {1, 2}}), torch::tensor({{0, 0}, {1, 1}}));
  auto m = compute_metrics(cm.matrix());
  EXPECT_TRUE(std::isnan(m.iou[3]));
  EXPECT_TRUE(std::isnan(m.acc[3]));
  EXPECT_TRUE(std::isnan(m.acc[2]));
  EXPECT_DOUBLE_EQ(m.iou[2], 0.0);
  EXPECT_NEAR(m.miou, (1.0 + 0.5 + 0.0) / 3, 1e-12);
  EXPECT_NEAR(m.macc, (1.0 + 0.5) / 2, 1e-12);
  EXPECT_NEAR(m.aacc, 3.0 / 4, 1e-12);
  auto table = format_table(m, {"background", "cat", "dog", "bird"});
  EXPECT_NE(table.find("bird"), std::string::npos);
  EXPECT_NE(table.find("mIoU 50.00"), std::string::npos) << table;
}

TEST(Metrics, AccumulatesOverBatchesAndCountsBadLabels) {
  ConfusionMatrix a(3), b(3);
  auto pred = torch::randint(0, 3, {2, 5, 7}, torch::kLong);
  auto label = torch::randint(0, 3, {2, 5, 7}, torch::kLong);
  label[0][0][0] = 255;
  label[1][1][1] = 7;  // outside the class range: counted, skipped
  a.update(pred, label);
  b.update(pred[0], label[0]);
  b.update(pred[1], label[1]);
  EXPECT_TRUE(torch::equal(a.matrix(), b.matrix()));
  EXPECT_EQ(a.out_of_range_labels(), 1);
  EXPECT_EQ(a.matrix().sum().item<int64_t>(), 2 * 5 * 7 - 2);
  expect_error([&] { a.update(pred, label[0]); }, {"differ in shape"});
  expect_error([&] { a.update(torch::full({3}, 5, torch::kLong), torch::zeros({3}, torch::kLong)); },
               {"predictions outside [0, 3)"});
}

}  // namespace
}  // namespace cp2::test

namespace cp2::test {
namespace {

// predicted_class is torch.argmax (the first of equal maxima) over any dimension and
// layout, ties included, and leaves its input as it was.
TEST(Metrics, PredictedClassIsArgmaxTiesIncluded) {
  torch::manual_seed(5);
  auto s = torch::randn({2, 5, 7, 9});
  s.select(1, 3).slice(1, 0, 3).copy_(s.select(1, 1).slice(1, 0, 3));  // class 1 and 3 tie: argmax says 1
  s.select(1, 4).slice(1, 3, 5).copy_(s.amax(1).slice(1, 3, 5));        // class 4 ties the maximum
  s.select(0, 1).fill_(0.5);                                             // all equal: class 0
  const auto before = s.clone();
  for (const auto& x : {s, s.contiguous(at::MemoryFormat::ChannelsLast), s.to(torch::kBFloat16), s.transpose(2, 3)}) {
    const auto got = eval::predicted_class(x, 1);
    EXPECT_EQ(got.scalar_type(), torch::kLong);
    EXPECT_TRUE(torch::equal(got, x.argmax(1))) << x.scalar_type();
  }
  EXPECT_TRUE(torch::equal(s, before));
  const auto chw = s[0].contiguous();  // the evaluation's C x H x W probabilities
  EXPECT_TRUE(torch::equal(eval::predicted_class(chw, 0), chw.argmax(0)));
  EXPECT_TRUE(torch::equal(chw, before[0]));
  EXPECT_GT((eval::predicted_class(chw, 0) != 0).sum().item<int64_t>(), 0);  // not all one class
}

}  // namespace
}  // namespace cp2::test
