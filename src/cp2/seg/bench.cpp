#include "cp2/seg/bench.h"

#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>

#include "cp2/common.h"
#include "cp2/compute/flops.h"
#include "cp2/compute/op_profile.h"
#include "cp2/cpu_allocator.h"
#include "cp2/seg/finetune.h"
#include "cp2/seg/inference.h"
#include "cp2/seg/loader.h"
#include "cp2/seg/model.h"
#include "cp2/seg/synth.h"
#include "cp2/train/state.h"

namespace fs = std::filesystem;

namespace cp2::seg {

namespace {

FinetuneConfig bench_config(const SegBenchOptions& o, std::string& root) {
  if (o.steps < 1 || o.rounds < 1 || o.warmup < 0 || o.batch < 1 || o.eval_images < 1 || o.data_batches < 0)
    throw Error("bench: expected --steps, --rounds, --batch, --eval-images >= 1 and --warmup, --data-batches >= 0");
  root = o.data;
  if (root.empty()) {
    root = (fs::temp_directory_path() / ("cp2_bench_seg_" + std::to_string(getpid()))).string();
    SynthSegOptions s;
    s.layout = "voc";
    s.width = o.image_w;
    s.height = o.image_h;
    s.train = static_cast<int>(std::max<int64_t>(o.batch * 4, 8));
    s.val = o.eval_images;
    s.classes = 20;
    s.shapes = 6;
    s.boundaries = true;
    write_synthetic_dataset(root, s);
  }
  FinetuneConfig cfg;
  cfg.data.root = root;
  cfg.data.workers = o.workers;
  cfg.pipeline.crop_h = cfg.pipeline.crop_w = o.crop;
  cfg.pipeline.scale_long = cfg.eval.scale_long = 4 * o.scale;
  cfg.pipeline.scale_short = cfg.eval.scale_short = o.scale;
  cfg.model.arch = o.arch;
  cfg.train.batch = o.batch;
  cfg.train.device = o.device;
  cfg.train.numerics = o.numerics;
  cfg.validate();
  install_caching_cpu_allocator();
  return cfg;
}

}  // namespace

SegBenchResult bench_finetune(const SegBenchOptions& o, bool verbose) {
  // Before any work, as the training loop's: a CUDA device where this build has none is named.
  const auto device = train::parse_device(o.device, "--device");
  const auto numerics = compute::resolve_numerics(o.numerics, o.device, o.arch);
  const auto alternate = compute::alternate_paths(o.alternate, o.rounds, o.device, numerics);
  std::string root;
  auto cfg = bench_config(o, root);
  auto ds = std::make_shared<SegDataset>(cfg.data.dataset(true));
  SegBenchResult r;
  // The loader alone first, as cp2 bench pretrain's data phase: what it can give the step, and
  // per thread, how many threads a faster (GPU) step would need.
  const auto lo = cfg.loader_options();
  const int64_t nb = o.data_batches > 0 ? o.data_batches : 4 * o.steps;
  {
    SegTrainLoader loader(ds, cfg.pipeline, lo, 0);
    // Timed from the start: timed from its first batch, the batches the other threads had
    // built meanwhile (up to one each) would count for nothing.
    const auto t = Clock::now();
    loader.start(0, nb);
    int64_t got = 0;
    while (loader.next()) ++got;
    r.data_img_s = static_cast<double>(got * o.batch) / seconds_since(t);
  }
  if (verbose)
    std::printf("%s\n", data::pipeline_rate_line(r.data_img_s, lo.workers, nb, o.batch).c_str());
  auto model = make_segmentor(cfg.model.segmentor(ds->num_classes()), 0);
  model->to(device);
  model->set_numerics(numerics);
  model->train();
  const auto params = model_parameters(*model);
  train::Optimizer opt(params, cfg.optim);
  if (numerics.loss_scaling) opt.enable_loss_scaling(numerics.loss_scale_init);
  // The loop's step; on a GPU the timing waits for its optimizer step to finish.
  auto step = [&](const SegBatch& b) {
    train_step(*model, opt, b.image.to(device, /*non_blocking=*/true), b.label.to(device, true), cfg.optim.lr,
               {cfg.train.avg_non_ignore, cfg.model.align_corners});
    if (device.is_cuda()) torch::cuda::synchronize();
  };
  SegTrainLoader fixed_loader(ds, cfg.pipeline, [&] { auto l = lo; l.workers = 0; return l; }(), 0);
  const auto fixed = fixed_loader.build(0);
  for (int i = 0; i < o.warmup; ++i) step(fixed);
  // Counted and probed before the loader starts: its threads filling the prefetch queue took
  // CPU from the probe (a probe at half the step's own rate).
  const auto fl = compute::count_step([&] { step(fixed); }, static_cast<double>(o.batch), o.device, numerics, verbose);
  if (o.profile > 0 && verbose)
    std::printf("%s", compute::profile_table(compute::profile_steps([&] { step(fixed); }, o.steps), o.profile).c_str());
  auto lopt = cfg.loader_options();
  lopt.pin_for = data::pin_target(device);  // as the training loop's
  SegTrainLoader loader(ds, cfg.pipeline, lopt, 0);
  loader.start(0, 1 << 30);
  for (int i = 0; i < o.warmup; ++i) step(*loader.next());
  step(fixed);  // untimed, while the loader fills its prefetch queue
  std::vector<double> s_rates, e_rates;
  double wait = 0;
  r.flops_per_img = fl.per_img;
  r.peak_gflops = fl.peak.gflops;
  for (int round = 0; round < o.rounds; ++round) {
    std::optional<compute::FastPathsOff> off;
    if (!alternate.empty() && round % 2 == 1) off.emplace(alternate);
    auto t = Clock::now();
    for (int i = 0; i < o.steps; ++i) step(fixed);
    s_rates.push_back(o.steps * o.batch / seconds_since(t));
    t = Clock::now();
    for (int i = 0; i < o.steps; ++i) {
      auto tw = Clock::now();
      auto b = loader.next();
      wait += seconds_since(tw);
      step(*b);
    }
    e_rates.push_back(o.steps * o.batch / seconds_since(t));
    if (verbose)
      std::printf("  round %d%s: train step %.3f img/s, end to end %.3f img/s\n", round + 1,
                  compute::round_label(o.alternate, off.has_value()).c_str(), s_rates.back(), e_rates.back());
  }
  // With --alternate the figures are the on rounds'; the pairs' ratios follow.
  const auto sr = compute::round_rates(s_rates, !alternate.empty());
  const auto er = compute::round_rates(e_rates, !alternate.empty());
  r.step_img_s = sr.median, r.step_on_off = sr.on_off;
  r.e2e_img_s = er.median, r.e2e_on_off = er.on_off;
  r.peak_rss_mb = peak_rss_mib();
  if (verbose) {
    std::printf("train step     %8.3f img/s  (median of %d rounds of %d steps on a fixed batch; %s)\n", r.step_img_s,
                sr.rounds, o.steps, compute::rate_line(r.flops_per_img, r.step_img_s, r.peak_gflops).c_str());
    std::printf("end to end     %8.3f img/s  (median of %d rounds, %.2f s waiting for data; %s)\n", r.e2e_img_s,
                er.rounds, wait, compute::rate_line(r.flops_per_img, r.e2e_img_s, r.peak_gflops).c_str());
    if (!alternate.empty())
      std::printf("%s\n", compute::alternation_summary(o.alternate, "train step", sr, er).c_str());
    std::printf("peak RSS       %8.0f MiB\n", r.peak_rss_mb);
  }
  if (o.data.empty()) fs::remove_all(root);
  return r;
}

SegBenchResult bench_evaluate(const SegBenchOptions& o, bool verbose) {
  const auto device = train::parse_device(o.device, "--device");
  std::string root;
  auto cfg = bench_config(o, root);
  SegDataset val(cfg.data.dataset(false));
  auto model = make_segmentor(cfg.model.segmentor(val.num_classes()), 0);
  model->to(device);
  const auto numerics = compute::resolve_numerics(cfg.train.numerics, o.device, cfg.model.arch);
  model->set_numerics(numerics);
  model->eval();
  EvalOptions eo = cfg.eval_options();
  eo.max_images = 1;
  SegBenchResult r;
  // The warm-up image, counted.
  const int workers = cfg.data.workers_for(o.device);
  const auto fl = compute::count_step([&] { evaluate(*model, val, eo, workers); }, 1, o.device, numerics, verbose);
  r.flops_per_img = fl.per_img;
  r.peak_gflops = fl.peak.gflops;
  eo.max_images = o.eval_images;
  std::vector<double> rates;
  for (int round = 0; round < o.rounds; ++round) {
    auto res = evaluate(*model, val, eo, workers);
    rates.push_back(res.images / res.seconds);
    if (verbose) std::printf("  round %d: %.3f img/s\n", round + 1, rates.back());
  }
  r.eval_img_s = median(rates);
  r.peak_rss_mb = peak_rss_mib();
  if (verbose) {
    std::printf("evaluation     %8.3f img/s  (whole-image, test scale %dx%d, median of %d rounds of %d images; %s; %s)\n",
                r.eval_img_s, cfg.eval.scale_long, cfg.eval.scale_short, o.rounds, o.eval_images,
                numerics.describe().c_str(),
                compute::rate_line(r.flops_per_img, r.eval_img_s, r.peak_gflops).c_str());
    std::printf("peak RSS       %8.0f MiB\n", r.peak_rss_mb);
  }
  if (o.data.empty()) fs::remove_all(root);
  return r;
}

}  // namespace cp2::seg
