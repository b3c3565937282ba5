#include "cp2/pretrain/bench.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>

#include "cp2/common.h"
#include "cp2/compute/flops.h"
#include "cp2/compute/op_profile.h"
#include "cp2/cpu_allocator.h"
#include "cp2/dist/comm.h"
#include "cp2/dist/reducer.h"
#include "cp2/pretrain/config.h"
#include "cp2/pretrain/graph_step.h"
#include "cp2/pretrain/trainer.h"
#include "cp2/train/state.h"

namespace cp2::pretrain {

BenchResult bench_pretrain(const BenchOptions& o, bool verbose) {
  PretrainConfig cfg;
  cfg.data.root = o.data;
  cfg.data.workers = o.workers;
  cfg.data.prefetch = o.prefetch;
  cfg.data.priority = o.priority;
  cfg.aug.view.size = o.size;
  cfg.model.arch = o.arch;
  cfg.model.queue = o.queue;
  cfg.model.mode = o.mode;
  cfg.train.batch = o.batch;
  cfg.train.device = o.device;
  cfg.train.numerics = o.numerics;
  cfg.train.cuda_graph = o.cuda_graph;
  cfg.validate();
  // Before any work, as the training loop's: a CUDA device where this build has none is named.
  const torch::Device device = train::parse_device(o.device, "--device");
  if (o.profile > 0 && o.cuda_graph == "on")
    throw Error("bench pretrain: --profile times eager steps op by op, and --cuda-graph on replays the step as a CUDA "
                "graph, whose ops no profiler callback sees: drop one of the two (with --cuda-graph auto the profile "
                "is of eager steps)");
  const auto numerics = compute::resolve_numerics(cfg.train.numerics, o.device, cfg.model.arch);
  if (o.cache_allocator) install_caching_cpu_allocator();
  if (o.steps < 1 || o.warmup < 0 || o.rounds < 1)
    throw Error("bench: expected --steps >= 1, --rounds >= 1 and --warmup >= 0");
  const auto alternate = compute::alternate_paths(o.alternate, o.rounds, o.device, numerics);
  // As the training loop decides it (on: refused here, naming why, before any work).
  std::string no_graph;
  const bool graphs =
      resolve_cuda_graph(o.cuda_graph, graph_facts(cfg.model_options(), cfg.optim, device, 1), no_graph);
  BenchResult r;

  auto ds = std::make_shared<data::PretrainDataset>(o.data, cfg.aug_options(), 0);
  const int64_t nb = o.data_batches > 0 ? o.data_batches : 4 * o.steps;
  const auto lo = cfg.loader_options();
  {
    data::PretrainLoader loader(ds, lo);
    const int64_t bpe = loader.batches_per_epoch();
    loader.start(0, 0, 1);  // warm the workers and the page cache a little
    loader.next();
    auto t = Clock::now();
    int64_t got = 0;
    for (int64_t e = 1; got < nb; ++e) {
      loader.start(e, 0, std::min(bpe, nb - got));
      while (loader.next()) ++got;
    }
    r.data_img_s = got * o.batch / seconds_since(t);
  }
  if (verbose)
    std::printf("%s\n", data::pipeline_rate_line(r.data_img_s, lo.workers, nb, o.batch).c_str());

  CP2Model model = make_model(cfg.model_options(), 0);
  model->to(device);
  model->set_numerics(numerics);
  model->train();
  train::Optimizer opt(query_parameters(*model), cfg.optim);
  if (numerics.loss_scaling) opt.enable_loss_scaling(numerics.loss_scale_init);
  const double lr = cfg.lr();
  StepRunner runner(*model, opt, graphs);
  if (verbose) {
    const std::string how = graphs             ? "as CUDA graphs (train.cuda_graph)"
                            : no_graph.empty() ? "eager"
                                               : "eager (train.cuda_graph auto: " + no_graph + ")";
    std::printf("steps          %s\n", how.c_str());
  }
  auto to_dev = [&](const data::Batch& b) -> data::Batch {
    auto to = [&](const at::Tensor& t) { return t.to(device, /*non_blocking=*/true); };
    return {to(b.im_q), to(b.im_k), to(b.mask_q), to(b.mask_k)};
  };

  // (b) and (c) alternate in rounds so that drifting machine speed (shared VMs vary by
  // 10-20 % over a minute) hits both alike; the medians are reported.
  data::LoaderOptions single = lo;
  single.workers = 0;
  data::PretrainLoader fixed_loader(ds, single);
  fixed_loader.start(0, 0, 1);
  const auto fixed = to_dev(*fixed_loader.next());
  auto lopt = lo;
  lopt.pin_for = data::pin_target(device);  // as the training loop's
  data::PretrainLoader loader(ds, lopt);
  const int64_t bpe = loader.batches_per_epoch();
  int64_t epoch = 0, left_in_epoch = 0;
  auto next = [&]() {
    if (left_in_epoch == 0) {
      loader.start(++epoch, 0, bpe);
      left_in_epoch = bpe;
    }
    --left_in_epoch;
    return *loader.next();
  };
  for (int i = 0; i < o.warmup; ++i) train_step(*model, opt, fixed, lr);
  // Counted and probed before the loader starts: its threads filling the prefetch queue took
  // CPU from the probe (a probe at half the step's own rate).
  const auto fl = compute::count_step([&] { train_step(*model, opt, fixed, lr); }, static_cast<double>(o.batch),
                                      o.device, numerics, verbose);
  if (o.profile > 0 && verbose) {
    if (graphs) std::printf("note: the profile below is of eager steps; the timed steps are graphs\n");
    std::printf("%s", compute::profile_table(compute::profile_steps([&] { train_step(*model, opt, fixed, lr); }, o.steps),
                                             o.profile).c_str());
  }
  // Untimed: the warm-up, then one step while the loader fills its prefetch queue; with graphs
  // these make the capture, and the timed steps replay it.
  for (int i = 0; i < o.warmup; ++i) runner.step(to_dev(next()), lr);
  runner.step(fixed, lr);
  runner.step(fixed, lr);
  r.flops_per_img = fl.per_img;
  r.peak_gflops = fl.peak.gflops;
  std::vector<double> step_rates, e2e_rates;
  for (int round = 0; round < o.rounds; ++round) {
    std::optional<compute::FastPathsOff> off;
    if (!alternate.empty() && round % 2 == 1) off.emplace(alternate);
    auto t = Clock::now();
    for (int i = 0; i < o.steps; ++i) runner.step(fixed, lr);
    step_rates.push_back(o.steps * o.batch / seconds_since(t));
    t = Clock::now();
    for (int i = 0; i < o.steps; ++i) {
      auto tw = Clock::now();
      auto b = next();
      r.data_wait_s += seconds_since(tw);
      runner.step(to_dev(b), lr);
    }
    e2e_rates.push_back(o.steps * o.batch / seconds_since(t));
    if (verbose)
      std::printf("  round %d%s: model step %.2f img/s, end to end %.2f img/s\n", round + 1,
                  compute::round_label(o.alternate, off.has_value()).c_str(), step_rates.back(), e2e_rates.back());
  }
  // With --alternate the figures are the on rounds'; the pairs' ratios follow.
  const auto sr = compute::round_rates(step_rates, !alternate.empty());
  const auto er = compute::round_rates(e2e_rates, !alternate.empty());
  r.step_img_s = sr.median, r.step_on_off = sr.on_off;
  r.e2e_img_s = er.median, r.e2e_on_off = er.on_off;
  if (verbose) {
    std::printf("model step     %8.2f img/s  (median of %d rounds of %d steps on a fixed batch; %s)\n", r.step_img_s,
                sr.rounds, o.steps, compute::rate_line(r.flops_per_img, r.step_img_s, r.peak_gflops).c_str());
    std::printf("end to end     %8.2f img/s  (median of %d rounds of %d steps, %.2f s waiting for data; %s)\n",
                r.e2e_img_s, er.rounds, o.steps, r.data_wait_s,
                compute::rate_line(r.flops_per_img, r.e2e_img_s, r.peak_gflops).c_str());
    if (!alternate.empty())
      std::printf("%s\n", compute::alternation_summary(o.alternate, "model step", sr, er).c_str());
  }
  r.peak_rss_mb = peak_rss_mib();
  if (verbose) {
    std::printf("peak RSS       %8.0f MiB\n", r.peak_rss_mb);
    auto cs = cpu_cache_stats();
    if (cs.hits + cs.misses > 0)
      std::printf("CPU block cache: %zu hits, %zu misses, %.0f MiB held\n", cs.hits, cs.misses, cs.cached_bytes / 1048576.0);
  }
  return r;
}

}  // namespace cp2::pretrain

namespace cp2::pretrain {

AllReduceResult bench_allreduce(int arch, int rounds, int64_t bucket_bytes, bool verbose) {
  if (rounds < 1) throw Error("bench allreduce: expected --rounds >= 1, found " + std::to_string(rounds));
  auto comm = dist::connect(dist::layout_from_env(), {});
  if (comm->size() == 1) throw Error("bench allreduce: world size 1; run it under cp2 launch --nproc 2 (or torchrun)");
  CP2Options o;
  o.encoder.backbone.depth = arch;
  o.queue_size = 16;
  CP2Model m(o);
  auto params = query_parameters(*m);
  AllReduceResult r;
  for (auto& [k, p] : params) r.parameters += p.numel();
  dist::GradientReducer red(comm, params, bucket_bytes);
  r.buckets = red.buckets();
  r.megabytes = static_cast<double>(r.parameters) * 4 / 1e6;
  // The training path: a backward (of a sum over the parameters, so it costs next to
  // nothing) whose gradient hooks fill and launch the buckets, then the wait in finish().
  auto one = [&] {
    red.prepare();
    auto total = torch::zeros({});
    for (auto& [k, p] : params) total = total + p.sum();
    total.backward();
    red.finish();
  };
  one();
  comm->barrier();
  const auto t0 = Clock::now();
  for (int i = 0; i < rounds; ++i) one();
  comm->barrier();
  r.ms = seconds_since(t0) * 1000 / rounds;
  const double W = comm->size();
  r.algo_gb_s = r.megabytes / r.ms;  // MB/ms = GB/s
  r.bus_gb_s = r.algo_gb_s * 2 * (W - 1) / W;
  if (verbose && comm->main())
    std::printf("all-reduce of the R%d-ASPP query encoder's gradients: %lld parameters (%.1f MB fp32) in %lld buckets, "
                "%d ranks: %.2f ms per step (mean of %d), algorithmic %.2f GB/s, bus %.2f GB/s\n",
                arch, static_cast<long long>(r.parameters), r.megabytes, static_cast<long long>(r.buckets),
                comm->size(), r.ms, rounds, r.algo_gb_s, r.bus_gb_s);
  return r;
}

}  // namespace cp2::pretrain
