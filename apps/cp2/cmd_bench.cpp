// cp2 bench pretrain: throughput of the data pipeline, the model step and end to end.
#include <cstdint>
#include <cstdio>

#include "commands.h"
#include "cp2/common.h"
#include "cp2/compute/bn_bench.h"
#include "cp2/compute/conv_bench.h"
#include "cp2/compute/fast_paths.h"
#include "cp2/compute/precision.h"
#include "cp2/data/prefetch.h"
#include "cp2/data/view_bench.h"
#include "cp2/pretrain/bench.h"
#include "cp2/pretrain/modes.h"
#include "cp2/seg/bench.h"
#include "cp2/train/keys.h"

namespace cp2::app {

namespace {

// The numerics flags of the training benchmarks, each as its train.* key.
void add_numerics_flags(CLI::App* s, compute::NumericsOptions& n) {
  s->add_option("--precision", n.precision, std::string(compute::kPrecisionHelp) + " (as train.precision)")
      ->capture_default_str();
  s->add_option_function<std::string>(
       "--channels-last", [&n](const std::string& v) { n.channels_last = v.empty() ? "true" : v; },
       "channels-last memory: alone, true; =auto where measured faster (as train.channels_last)")
      ->expected(0, 1)
      ->type_name("[=true|false|auto]");
  s->add_option("--conv-algorithm", n.conv_algorithm,
                compute::conv_algorithm_help() + " (as train.conv_algorithm)")
      ->capture_default_str();
}

// --workers N|auto, as data.workers (auto: 2 beside a CPU step, the process's cores but one
// beside a GPU's; train::auto_workers).
void add_workers_flag(CLI::App* s, int& workers) {
  s->add_option_function<std::string>(
       "--workers",
       [&workers](const std::string& v) {
         if (v == "auto") return void(workers = config::kAuto);
         const long long n = std::stoll(v);  // checked below as an integer >= 0
         if (n > INT32_MAX) throw CLI::ValidationError("--workers", "expected auto or an integer >= 0, found '" + v + "'");
         workers = static_cast<int>(n);
       },
       "loader threads, or auto (as data.workers: 2 beside a CPU step, every core of the process but one beside a "
       "GPU's)")
      ->check(typed(Kind::NonNegIntOrAuto, "", "INT|auto"))
      ->default_str("auto");
}

// The loader threads a bench runs, auto resolved for its device as training resolves it.
int bench_workers(int workers, const std::string& device) {
  train::LoaderKeys k;
  k.workers = workers;
  return k.workers_for(device);
}

constexpr const char* kProfileHelp =
    "N > 0: time --steps model steps op by op and print the N ops with the most own time (ms per step, share "
    "of the step; on CUDA the CPU side of the calls)";

std::string alternate_help() {
  std::string h = "fast paths turned off in every other round (2, 4, ...), comma-separated, for their gain measured "
                  "in one process (the figures above it are the on rounds'; needs --rounds >= 2, the CPU and "
                  "--conv-algorithm winograd|auto, which alone turns them on): ";
  for (const auto& p : compute::fast_paths()) h += std::string(p.name) + " (" + p.what + "), ";
  return h.substr(0, h.size() - 2);
}

}  // namespace

Command register_bench(CLI::App& app) {
  auto o = std::make_shared<pretrain::BenchOptions>();
  auto* c = app.add_subcommand("bench", "Benchmarks (see docs/benchmarks.md)");
  c->require_subcommand(1);
  auto* p = c->add_subcommand("pretrain", "images/s of data pipeline, model step and end to end, and peak RSS");
  p->add_option("--data", o->data, "image folder (e.g. from cp2 synth)")->required();
  p->add_option("--arch", o->arch, "ResNet depth")->capture_default_str();
  p->add_option("--size", o->size, "view size")->capture_default_str();
  p->add_option("--batch", o->batch, "batch size")->capture_default_str();
  p->add_option("--queue", o->queue, "queue length K")->capture_default_str();
  add_workers_flag(p, o->workers);
  p->add_option("--prefetch", o->prefetch, "batches prepared ahead")->capture_default_str();
  p->add_option("--priority", o->priority, "loader thread priority: " + join(data::priority_choices()) +
                                              " (auto: as idle; the bench does not watch the data wait)")->capture_default_str();
  p->add_option("--mode", o->mode, join(pretrain::mode_names()))->capture_default_str();
  p->add_option("--steps", o->steps, "timed steps per phase")->capture_default_str();
  p->add_option("--warmup", o->warmup, "untimed steps first")->capture_default_str();
  p->add_option("--rounds", o->rounds, "alternating rounds of model-step and end-to-end timing")->capture_default_str();
  p->add_option("--data-batches", o->data_batches, "batches timed in the data phase (0 = 4 x steps)")->check(non_negative_int);
  p->add_flag("!--no-cache-allocator", o->cache_allocator, "use LibTorch's plain CPU allocator");
  p->add_option("--device", o->device, "cpu, cuda, cuda:N")->capture_default_str();
  add_numerics_flags(p, o->numerics);
  p->add_option("--cuda-graph", o->cuda_graph,
                "off, on or auto (as train.cuda_graph): the timed steps as CUDA graphs, CUDA only")
      ->capture_default_str();
  p->add_option("--profile", o->profile, kProfileHelp)->capture_default_str()->check(non_negative_int);
  p->add_option("--alternate", o->alternate, alternate_help());
  auto so = std::make_shared<seg::SegBenchOptions>();
  auto add_seg = [&](CLI::App* s) {
    s->add_option("--data", so->data, "VOC-layout folder (default: generate one in a temp folder)");
    s->add_option("--arch", so->arch, "ResNet depth")->capture_default_str();
    s->add_option("--crop", so->crop, "train crop size")->capture_default_str();
    s->add_option("--scale", so->scale, "resize scale short edge (long = 4x), train and test")->capture_default_str();
    s->add_option("--image-width", so->image_w, "generated image width")->capture_default_str();
    s->add_option("--image-height", so->image_h, "generated image height")->capture_default_str();
    s->add_option("--batch", so->batch, "batch size")->capture_default_str();
    add_workers_flag(s, so->workers);
    s->add_option("--steps", so->steps, "timed steps per round")->capture_default_str();
    s->add_option("--warmup", so->warmup, "untimed steps first")->capture_default_str();
    s->add_option("--rounds", so->rounds, "timing rounds (medians reported)")->capture_default_str();
    s->add_option("--eval-images", so->eval_images, "images per evaluation round")->capture_default_str();
    s->add_option("--device", so->device, "cpu, cuda, cuda:N")->capture_default_str();
    add_numerics_flags(s, so->numerics);
  };
  auto* ft = c->add_subcommand("finetune", "images/s of a DeepLabV3 training step (fixed batch and end to end), peak RSS");
  add_seg(ft);
  ft->add_option("--profile", so->profile, kProfileHelp)->capture_default_str()->check(non_negative_int);
  ft->add_option("--alternate", so->alternate, alternate_help());
  ft->add_option("--data-batches", so->data_batches,
                 "batches timed through the loader alone, before the steps (0 = 4 x steps)")
      ->capture_default_str()
      ->check(non_negative_int);
  auto* ev = c->add_subcommand("evaluate", "images/s of whole-image evaluation at the test scale, peak RSS");
  add_seg(ev);
  struct AllReduceArgs {
    int arch = 50, rounds = 20;
    int64_t bucket_bytes = 4 << 20;
  };
  auto ar = std::make_shared<AllReduceArgs>();
  auto* all = c->add_subcommand("allreduce",
                                "time the gradient all-reduce of the CP² query encoder across processes (run under "
                                "cp2 launch --nproc N or torchrun)");
  all->add_option("--arch", ar->arch, "ResNet depth")->capture_default_str();
  all->add_option("--rounds", ar->rounds, "timed all-reduces")->capture_default_str();
  all->add_option("--bucket-bytes", ar->bucket_bytes, "bucket size in bytes")->capture_default_str();
  auto co = std::make_shared<compute::ConvBenchOptions>();
  auto* cv = c->add_subcommand("conv",
                               "time one fp32 3x3 convolution (padding = dilation) or 1x1 alone, forward and with "
                               "both gradients: direct against what train.conv_algorithm: winograd runs for it");
  cv->add_option("--batch", co->batch, "batch size")->capture_default_str();
  cv->add_option("--in", co->in, "input channels")->capture_default_str();
  cv->add_option("--out", co->out, "output channels")->capture_default_str();
  cv->add_option("--size", co->size, "map height and width")->capture_default_str();
  cv->add_option("--dilation", co->dilation, "dilation (= padding) of the 3x3")->capture_default_str();
  cv->add_option("--kernel", co->kernel,
                 "kernel size: 3, or 1 (stride 1, no padding: ResNet-50's 1x1s, which run as GEMMs on "
                 "channels-last input where oneDNN has AVX-512 kernels)")
      ->capture_default_str();
  cv->add_flag("--channels-last", co->channels_last, "channels-last input and weight");
  cv->add_option("--kernels", co->kernels,
                 "Winograd kernels: best (as train.conv_algorithm picks), onednn, tiles (cp2's AVX2 kernels in the "
                 "tile size that fits the map better, also where their pay-off rule would run the convolution "
                 "direct), tiles-f4 or tiles-f3 (cp2's, in 4x4 or 3x3 output tiles)")
      ->capture_default_str();
  cv->add_option("--rounds", co->rounds, "timed calls (best of)")->capture_default_str();
  auto no = std::make_shared<compute::NormBenchOptions>();
  auto* nm = c->add_subcommand("norm",
                               "time one training-mode batch norm + ReLU (+ a residual sum) on an fp32 channels-last "
                               "(or NCHW) map, forward and with gradients: PyTorch's ops against cp2's one pass each "
                               "way (taken under train.conv_algorithm: winograd|auto)");
  nm->add_option("--batch", no->batch, "batch size")->capture_default_str();
  nm->add_option("--channels", no->channels, "channels")->capture_default_str();
  nm->add_option("--size", no->size, "map height and width")->capture_default_str();
  nm->add_flag("--residual", no->residual, "a residual map summed before the ReLU (a block's last batch norm)");
  nm->add_flag("--nchw", no->nchw, "NCHW memory (ResNet-18's layout under train.channels_last: auto) instead of "
                                   "channels-last");
  nm->add_option("--rounds", no->rounds, "timed calls (best of)")->capture_default_str();
  auto vo = std::make_shared<data::ViewBenchOptions>();
  auto* vw = c->add_subcommand("view",
                               "time a loader thread's work on one view op by op (ms per call; the AVX2 and the "
                               "plain loops where both exist), a whole view with drawn parameters, and a decode");
  vw->add_option("--image", vo->image, "a JPEG or PNG to decode and crop (default: random pixels)");
  vw->add_option("--width", vo->width, "the random image's width")->capture_default_str();
  vw->add_option("--height", vo->height, "the random image's height")->capture_default_str();
  vw->add_option("--size", vo->size, "the view's side (as view.size)")->capture_default_str();
  vw->add_option("--rounds", vo->rounds, "calls per timing (the best of three timings is printed)")
      ->capture_default_str();
  return {c, [o, p, so, ft, ev, all, ar, co, cv, no, nm, vo, vw] {
            if (nm->parsed()) {
              std::printf("cp2 bench norm: %d intra-op threads\n", get_threads());
              compute::bench_norm(*no, true);
              return 0;
            }
            if (vw->parsed()) {
              data::bench_view(*vo);
              return 0;
            }
            if (cv->parsed()) {
              std::printf("cp2 bench conv: %d intra-op threads\n", get_threads());
              compute::bench_conv(*co, true);
              return 0;
            }
            if (all->parsed()) {
              pretrain::bench_allreduce(ar->arch, ar->rounds, ar->bucket_bytes, true);
              return 0;
            }
            if (ft->parsed()) {
              std::printf("cp2 bench finetune: resnet%d DeepLabV3, crop %d, batch %lld, %d intra-op threads, %d workers\n",
                          so->arch, so->crop, static_cast<long long>(so->batch), get_threads(), bench_workers(so->workers, so->device));
              seg::bench_finetune(*so, true);
              return 0;
            }
            if (ev->parsed()) {
              std::printf("cp2 bench evaluate: resnet%d DeepLabV3, %dx%d images, %d intra-op threads\n", so->arch,
                          so->image_w, so->image_h, get_threads());
              seg::bench_evaluate(*so, true);
              return 0;
            }
            if (!p->parsed()) return 1;
            std::printf("cp2 bench pretrain: resnet%d-ASPP %s @%d, batch %lld, K %lld, %d intra-op threads, %d workers\n",
                        o->arch, o->mode.c_str(), o->size, static_cast<long long>(o->batch),
                        static_cast<long long>(o->queue), get_threads(), bench_workers(o->workers, o->device));
            pretrain::bench_pretrain(*o, true);
            return 0;
          }};
}

}  // namespace cp2::app
