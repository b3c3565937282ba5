// Copy-paste composer properties, the image folder and the loader's determinism.
#include <torch/torch.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <fstream>
#include <iterator>
#include <sstream>

#include "cp2/data/image.h"
#include "cp2/data/loader.h"
#include "cp2/data/prefetch.h"
#include "cp2/data/synth.h"
#include "../helpers.h"

namespace fs = std::filesystem;

namespace cp2::test {
namespace {

using namespace cp2::data;

std::string synth_dir(const std::string& name, int count, int classes = 3, const std::string& ext = "jpg") {
  auto dir = temp_dir(name);
  SynthOptions o;
  o.count = count;
  o.classes = classes;
  o.ext = ext;
  o.seed = 42;
  write_synthetic_images(dir, o);
  return dir;
}

// Threads of this process whose scheduling policy is SCHED_IDLE (5; field 41 of
// /proc/self/task/<tid>/stat).
int threads_at_sched_idle() {
  int n = 0;
  for (const auto& t : fs::directory_iterator("/proc/self/task")) {
    std::ifstream in(t.path() / "stat");
    std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::istringstream rest(s.substr(s.rfind(')') + 2));  // fields 3.. (the name may hold spaces)
    std::string f;
    for (int field = 3; rest >> f; ++field)
      if (field == 41) n += f == "5";
  }
  return n;
}

CopyPasteOptions small_opts(int size = 64) {
  CopyPasteOptions o;
  o.view.size = size;
  return o;
}

TEST(ImageFolder, ListsNestedAndFlatSorted) {
  auto nested = synth_dir("folder_nested", 7, 3, "png");
  auto files = list_images(nested);
  ASSERT_EQ(files.size(), 7u);
  EXPECT_TRUE(std::is_sorted(files.begin(), files.end()));
  auto flat = synth_dir("folder_flat", 4, 0);
  EXPECT_EQ(list_images(flat).size(), 4u);
  auto img = read_image(files[0]);
  EXPECT_EQ(img.sizes(), (std::vector<int64_t>{3, 120, 160}));
  EXPECT_EQ(img.scalar_type(), torch::kUInt8);
}

TEST(ImageFolder, MissingEmptyAndCorruptAreClearErrors) {
  expect_error([] { list_images("/nonexistent/cp2_images"); }, {"/nonexistent/cp2_images", "not found"});
  auto empty = temp_dir("folder_empty");
  std::ofstream(empty + "/notes.txt") << "no images here";
  expect_error([&] { list_images(empty); }, {empty, "no images found", "root/<class>/<image>"});
  auto bad = empty + "/broken.jpg";
  std::ofstream(bad) << "this is not a jpeg";
  expect_error([&] { read_image(bad); }, {bad, "cannot decode"});
}

TEST(CopyPaste, MaskAreaPlacementAndPaste) {
  auto dir = synth_dir("cp_props", 3);
  auto files = list_images(dir);
  auto fg = read_image(files[0]), bg0 = read_image(files[1]), bg1 = read_image(files[2]);
  auto o = small_opts(64);
  double lo = 1, hi = 0;
  int differ = 0;
  for (uint64_t t = 0; t < 300; ++t) {
    Rng rng = Rng::derive(9, {t});
    auto s = compose(fg, bg0, bg1, o, rng);
    ASSERT_EQ(s.im_q.sizes(), (std::vector<int64_t>{3, 64, 64}));
    ASSERT_EQ(s.mask_q.sizes(), (std::vector<int64_t>{64, 64}));
    for (auto* m : {&s.mask_q, &s.mask_k}) {
      double a = m->mean().item<double>();
      ASSERT_GT(a, 0) << "empty mask";
      lo = std::min(lo, a), hi = std::max(hi, a);
      // exactly one filled rectangle of 0/1 values
      ASSERT_TRUE(((*m == 0) | (*m == 1)).all().item<bool>());
      auto rows = m->sum(1).nonzero().squeeze(1), cols = m->sum(0).nonzero().squeeze(1);
      int64_t h = rows.size(0), w = cols.size(0);
      ASSERT_EQ(m->sum().item<double>(), double(h * w));
    }
    differ += !torch::equal(s.mask_q, s.mask_k);
  }
  EXPECT_GE(lo, 0.48);
  EXPECT_LE(hi, 0.82);
  EXPECT_GT(differ, 290);  // the foreground sits at a different place in q and k

  // Inside the mask the composite is the foreground view, outside the background view:
  // redraw with the same RNG and rebuild by hand.
  Rng r1 = Rng::derive(9, {1}), r2 = Rng::derive(9, {1});
  auto s = compose(fg, bg0, bg1, o, r1);
  auto view = [&](const at::Tensor& img) { return apply_view(img, draw_view(img.size(1), img.size(2), o.view, r2), o.view); };
  auto fq = view(fg);
  view(fg);  // k
  auto b0 = view(bg0);
  auto box = sample_erasing(64, 64, 0.5, 0.8, 0.8, 1.25, r2);
  auto m = s.mask_q.unsqueeze(0);
  EXPECT_TRUE(torch::equal(s.im_q * m, fq * m));
  EXPECT_TRUE(torch::equal(s.im_q * (1 - m), b0 * (1 - m)));
  EXPECT_EQ(s.mask_q.sum().item<double>(), double(box.height * box.width));
  EXPECT_EQ(s.mask_q[box.top][box.left].item<float>(), 1.f);
}

TEST(CopyPaste, NoCopyPasteGivesPlainViewsAndFullMasks) {
  auto dir = synth_dir("cp_plain", 2);
  auto files = list_images(dir);
  auto fg = read_image(files[0]);
  auto o = small_opts(48);
  o.copy_paste = false;
  Rng rng(1);
  auto s = compose(fg, at::Tensor(), at::Tensor(), o, rng);
  EXPECT_EQ(s.mask_q.sum().item<double>(), 48.0 * 48);
  EXPECT_EQ(s.mask_k.sum().item<double>(), 48.0 * 48);
  EXPECT_FALSE(torch::equal(s.im_q, s.im_k));
}

TEST(Loader, BatchesDependOnlyOnSeedEpochIndex) {
  auto dir = synth_dir("loader_det", 20);
  auto ds = std::make_shared<PretrainDataset>(dir, small_opts(48), 123);
  LoaderOptions single{4, 0, 1}, multi{4, 3, 3};
  PretrainLoader a(ds, single), b(ds, multi);
  EXPECT_EQ(a.batches_per_epoch(), 5);  // 20 / 4, drop_last
  a.start(1, 0, 5);
  b.start(1, 0, 5);
  std::vector<Batch> first;
  for (int i = 0; i < 5; ++i) {
    auto x = a.next(), y = b.next();
    ASSERT_TRUE(x && y);
    EXPECT_TRUE(torch::equal(x->im_q, y->im_q)) << "batch " << i;
    EXPECT_TRUE(torch::equal(x->mask_k, y->mask_k)) << "batch " << i;
    EXPECT_EQ(x->im_q.sizes(), (std::vector<int64_t>{4, 3, 48, 48}));
    EXPECT_EQ(x->mask_q.sizes(), (std::vector<int64_t>{4, 48, 48}));
    first.push_back(*x);
  }
  EXPECT_FALSE(a.next().has_value());
  EXPECT_FALSE(b.next().has_value());
  // data.priority auto (the default) starts the workers at SCHED_IDLE; raising them to
  // normal mid-epoch (new threads) leaves the sequence of batches unchanged.
  b.start(1, 0, 5);
  EXPECT_TRUE(torch::equal(b.next()->im_q, first[0].im_q));
  EXPECT_EQ(threads_at_sched_idle(), 3);
  b.set_priority("normal");
  EXPECT_EQ(threads_at_sched_idle(), 0);
  for (int i = 1; i < 5; ++i) EXPECT_TRUE(torch::equal(b.next()->im_q, first[i].im_q)) << "batch " << i;
  EXPECT_FALSE(b.next().has_value());
  // Resuming mid-epoch gives the same batches; another epoch gives other ones.
  b.start(1, 3, 5);
  EXPECT_TRUE(torch::equal(b.next()->im_k, first[3].im_k));
  b.start(2, 0, 5);
  EXPECT_FALSE(torch::equal(b.next()->im_q, first[0].im_q));
  // A fresh dataset object with the same seed agrees (nothing depends on history).
  auto ds2 = std::make_shared<PretrainDataset>(dir, small_opts(48), 123);
  PretrainLoader c(ds2, multi);
  c.start(1, 4, 5);
  EXPECT_TRUE(torch::equal(c.next()->mask_q, first[4].mask_q));
}

// Every loader thread gets a batch to build, however small data.prefetch is: with 6 workers and
// prefetch 2, six batches are built at once (the window was the prefetch alone, so a run with
// data.workers 8 and the recipe's prefetch 4 built 4 at a time, and the data-wait advice to raise
// data.workers changed nothing). Each of the first six builds waits, up to 10 s, until all six are
// inside; the batches still come out in order.
TEST(Loader, EveryWorkerBuildsABatchWhateverThePrefetch) {
  constexpr int kWorkers = 6;
  std::mutex mu;
  std::condition_variable cv;
  int inside = 0, most = 0;
  Prefetcher<int64_t> p(
      [&](int64_t, int64_t b) {
        std::unique_lock<std::mutex> lk(mu);
        most = std::max(most, ++inside);
        cv.notify_all();
        if (b < kWorkers) cv.wait_for(lk, std::chrono::seconds(10), [&] { return most >= kWorkers; });
        --inside;
        return b;
      },
      kWorkers, /*prefetch=*/2, "normal");
  p.start(0, 0, 3 * kWorkers);
  for (int64_t b = 0; b < 3 * kWorkers; ++b) {
    const auto got = p.next();
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ(*got, b);
  }
  EXPECT_FALSE(p.next().has_value());
  EXPECT_EQ(most, kWorkers);
}

// The benches' loader line: per thread where there are loader threads, and with data.workers 0
// (batches built on the caller's thread) no "0 loader threads" nor a rate per thread.
TEST(Loader, PipelineRateLineNamesWhoBuiltTheBatches) {
  EXPECT_EQ(pipeline_rate_line(100.0, 2, 8, 4),
            "data pipeline    100.00 img/s  (2 loader threads, 50.00 img/s each; 8 batches of 4)");
  EXPECT_EQ(pipeline_rate_line(12.5, 1, 1, 2),
            "data pipeline     12.50 img/s  (1 loader thread, 12.50 img/s each; 1 batch of 2)");
  EXPECT_EQ(pipeline_rate_line(30.0, 0, 4, 8),
            "data pipeline     30.00 img/s  (no loader threads: built on the calling thread; 4 batches of 8)");
}

TEST(Loader, BatchTensorsArePinnedOnlyForACudaDevice) {
  // CPU runs (every test here): pageable tensors of the asked shape and type.
  const auto t = batch_tensor({2, 3, 4}, at::kLong, std::nullopt);
  EXPECT_EQ(t.sizes(), (std::vector<int64_t>{2, 3, 4}));
  EXPECT_EQ(t.scalar_type(), at::kLong);
  EXPECT_TRUE(t.device().is_cpu() && t.is_contiguous());
  EXPECT_FALSE(t.is_pinned());
  // For a CUDA device: page-locked where there is one; elsewhere LibTorch refuses (the loops
  // ask only on CUDA runs).
  const torch::Device cuda(torch::kCUDA, 0);
  if (torch::cuda::is_available())
    EXPECT_TRUE(batch_tensor({2, 3, 4}, at::kFloat, cuda).is_pinned());
  else
    EXPECT_THROW(batch_tensor({2, 3, 4}, at::kFloat, cuda), c10::Error);
  // The loader passes pin_for to every batch tensor (its refusal above shows it was asked).
  auto ds = std::make_shared<PretrainDataset>(synth_dir("loader_pin", 4), small_opts(32), 1);
  LoaderOptions pinned{4, 0, 1};
  pinned.pin_for = pin_target(cuda);
  PretrainLoader l(ds, pinned);
  l.start(0, 0, 1);
  if (torch::cuda::is_available())
    EXPECT_TRUE(l.next()->im_q.is_pinned());
  else
    EXPECT_THROW(l.next(), c10::Error);
  EXPECT_FALSE(pin_target(torch::Device(torch::kCPU)).has_value());
  LoaderOptions o;
  o.pin_for = torch::Device(torch::kCPU);
  expect_error([&] { o.validate(); }, {"loader pin_for: expected a CUDA device (batches pinned for it), found cpu"});
}

TEST(Loader, CorruptImagesAreSkippedAndCounted) {
  auto dir = synth_dir("loader_corrupt", 12, 2);
  std::ofstream(dir + "/class_0/zz_broken.jpg") << "garbage";
  std::ofstream(dir + "/class_1/zz_truncated.png") << "\x89PNG\r\n";
  auto ds = std::make_shared<PretrainDataset>(dir, small_opts(32), 7);
  ASSERT_EQ(ds->size(), 14);
  PretrainLoader l(ds, {7, 2, 2});
  l.start(0, 0, l.batches_per_epoch());
  int n = 0;
  while (auto b = l.next()) {
    EXPECT_TRUE(torch::isfinite(b->im_q).all().item<bool>());
    ++n;
  }
  EXPECT_EQ(n, 2);
  // Each bad file is read by up to three streams (foreground, two backgrounds).
  int64_t skipped = ds->take_skipped();
  EXPECT_GE(skipped, 2);
  EXPECT_LE(skipped, 6);
  EXPECT_EQ(ds->bad_files().size(), 2u);
}

TEST(Loader, TooFewImagesForABatch) {
  auto dir = synth_dir("loader_small", 3);
  auto ds = std::make_shared<PretrainDataset>(dir, small_opts(32), 1);
  PretrainLoader l(ds, {8, 0, 1});
  expect_error([&] { l.batches_per_epoch(); }, {"3 images", "batch of 8"});
  expect_error([&] { LoaderOptions{0, 1, 1}.validate(); }, {"batch", ">= 1", "0"});
}

}  // namespace
}  // namespace cp2::test
