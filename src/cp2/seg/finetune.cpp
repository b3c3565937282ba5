#include "cp2/seg/finetune.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cp2/common.h"
#include "cp2/cpu_allocator.h"
#include "cp2/dist/comm.h"
#include "cp2/dist/reducer.h"
#include "cp2/io/checkpoint.h"
#include "cp2/models/batchnorm.h"
#include "cp2/seg/inference.h"
#include "cp2/seg/loader.h"
#include "cp2/seg/model.h"
#include "cp2/train/harness.h"
#include "cp2/train/optim.h"

namespace fs = std::filesystem;

namespace cp2::seg {

namespace {

// mmseg-compatible: `state_dict` (backbone.*, decode_head.*) and `meta` (CLASSES,
// PALETTE), so mmsegmentation loads it as is; plus cp2's optimizer, position, RNG, config.
struct EvalState {
  double best_miou = -1, last_miou = -1;  // percent
  int64_t best_iter = 0, evaluated_iter = -1;  // the last iteration evaluated
};

py::ObjPtr make_checkpoint(models::SegmentorImpl& m, const train::Optimizer* opt, int64_t iteration,
                           const SegDataset& ds, const std::string& config, const EvalState& ev) {
  auto root = py::dict();
  auto cp2 = py::dict();
  py::set(cp2, "format", py::integer(2));  // 2: mIoU in percent (1 stored fractions)
  py::set(cp2, "kind", py::str("finetune"));
  py::set(root, "cp2", cp2);
  auto meta = py::dict();
  auto classes = py::list();
  for (const auto& c : ds.classes()) classes->items.push_back(py::str(c));
  auto palette = py::list();
  for (int c = 0; c < ds.num_classes(); ++c) {
    const auto& col = ds.palette()[c];
    palette->items.push_back(py::list({py::integer(col[0]), py::integer(col[1]), py::integer(col[2])}));
  }
  py::set(meta, "CLASSES", classes);
  py::set(meta, "PALETTE", palette);
  py::set(meta, "iter", py::integer(iteration));
  py::set(root, "meta", meta);
  py::set(root, "state_dict", train::state_entry(io::state_dict(m)));
  if (opt) py::set(root, "optimizer", train::optimizer_entry(*opt));
  py::set(root, "iteration", py::integer(iteration));
  auto best = py::dict();
  py::set(best, "miou", py::real(ev.best_miou));
  py::set(best, "iteration", py::integer(ev.best_iter));
  py::set(root, "best", best);
  py::set(root, "miou", py::real(ev.last_miou));
  py::set(root, "evaluated_iteration", py::integer(ev.evaluated_iter));
  py::set(root, "rng", train::rng_state());
  py::set(root, "config", py::str(config));
  py::set(root, "dataset_images", py::integer(ds.size()));
  return root;
}

}  // namespace

FinetuneSummary run_finetune(const FinetuneConfig& cfg, const FinetuneControl& fc) {
  cfg.validate();
  install_caching_cpu_allocator();
  torch::AutoGradMode grad_on(true);  // callers may hold a NoGradGuard (inference code)
  const auto device = train::parse_device(cfg.train.device);
  const auto& T = cfg.train;
  const std::string yaml = cfg.to_yaml();  // what runs is what the checkpoints store
  // Before the run folder opens: a precision or algorithm this device cannot run is a config error.
  const auto numerics = compute::resolve_numerics(T.numerics, T.device, cfg.model.arch);

  // The datasets are listed before the run folder opens: a wrong --data or layout leaves no folder.
  auto train_ds = std::make_shared<SegDataset>(cfg.data.dataset(true));
  SegDataset val_ds(cfg.data.dataset(false));
  const int classes = cfg.model.num_classes > 0 ? cfg.model.num_classes : train_ds->num_classes();
  if (classes != train_ds->num_classes())
    throw Error("model.num_classes: " + std::to_string(classes) + " set, the " + cfg.data.type + " dataset has " +
                std::to_string(train_ds->num_classes()) + " classes");

  const auto comm = fc.comm ? fc.comm : dist::single_process();
  const int world = comm->size();
  const int64_t local_batch = dist::per_process_batch(T.batch, world);
  train::HarnessOptions ho{train::finetune_kind(), T.out, fc.resume, yaml, "iteration", fc.progress, T.log_every,
                           T.keep_last};
  ho.take_over = fc.take_over;
  auto hp = train::open_harness(*comm, std::move(ho));
  train::Harness& h = *hp;
  auto& progress = h.progress();

  FinetuneSummary sum;
  EvalState ev;
  int64_t iter = 0;
  auto clock_out = [&] {
    sum.seconds = h.seconds();
    sum.images_per_s = train::Pace{sum.last_iter - sum.first_iter, 0, T.batch, sum.seconds}.img_per_s();
  };
  auto fields = [&] {
    auto pct = [](double v) { return v < 0 ? nlohmann::json(nullptr) : nlohmann::json(v); };
    return nlohmann::json{{"iterations", sum.last_iter},
                          {"iterations_this_run", sum.last_iter - sum.first_iter},
                          {"seconds", sum.seconds},
                          {"images_per_s", sum.images_per_s},
                          {"final_loss", sum.losses.empty() ? nlohmann::json(nullptr) : nlohmann::json(sum.losses.back())},
                          {"best_miou", pct(ev.best_miou)},
                          {"best_iteration", ev.best_iter},
                          {"last_miou", pct(ev.last_miou)},
                          {"best_checkpoint", sum.best_checkpoint},
                          {"units", "mIoU, mAcc, aAcc and acc in percent; iterations 1-based"}};
  };
  try {
    if (fc.check_data) {
      const int64_t nt = train_ds->size(), n = nt + val_ds.size();
      auto bad = train::check_items(
          n,
          [&](int64_t i) {
            SegDataset& d = i < nt ? *train_ds : val_ds;
            const int64_t k = i < nt ? i : i - nt;
            auto img = d.image(k);
            d.label(k, img.size(0), img.size(1));
          },
          std::max(cfg.loader_options().workers, 1), [&](int64_t d, int64_t total) {
            progress.update("checking images and labels " + train::bar(d, total) + " " + std::to_string(d) + "/" +
                                std::to_string(total), d, d == total);
          });
      progress.done();
      train_ds->take_label_stats();
      val_ds.take_label_stats();
      if (!bad.empty()) {
        std::string msg = "--check-data: " + std::to_string(bad.size()) + " of " + std::to_string(n) +
                          " train/val samples cannot be read:";
        for (const auto& b : bad) msg += "\n  " + b;
        throw Error(msg);
      }
      progress.message("--check-data: all " + std::to_string(n) + " train/val images and labels read");
    }

    auto model = make_segmentor(cfg.model.segmentor(classes), T.seed);
    if (!T.init.empty() && !h.resuming()) {
      auto r = init_from_pretrained(*model, T.init, io::parse_preset(T.init_preset));
      progress.message(r.str());
    } else if (!h.resuming()) {
      progress.message("no train.init: finetuning from scratch (mmsegmentation init)");
    }
    model->to(device);
    model->set_numerics(numerics);
    const auto params = model_parameters(*model);
    train::Optimizer opt(params, cfg.optim);
    if (numerics.loss_scaling) opt.enable_loss_scaling(numerics.loss_scale_init);

    if (h.resuming()) {
      const auto& path = h.resumed_path();
      const auto& root = h.resumed();
      io::load_state(*model, io::find_state_dict(io::Checkpoint{root, io::Format::Zip, path}), /*strict=*/true, path);
      train::load_optimizer_entry(opt, root, path);
      iter = train::get_int(root, "iteration", path, train::finetune_kind().what);
      if (auto b = root->get("best")) {
        if (auto m = b->get("miou"); m && m->kind == py::Kind::Float) ev.best_miou = m->f;
        if (auto i = b->get("iteration"); i && i->kind == py::Kind::Int) ev.best_iter = i->i;
      }
      if (auto m = root->get("miou"); m && m->kind == py::Kind::Float) ev.last_miou = m->f;
      if (auto e = root->get("evaluated_iteration"); e && e->kind == py::Kind::Int) ev.evaluated_iter = e->i;
      const auto meta = root->get("cp2");
      const auto format = meta ? meta->get("format") : nullptr;
      if (format && format->kind == py::Kind::Int && format->i < 2) {  // older cp2: fractions
        if (ev.best_miou > 0) ev.best_miou *= 100;
        if (ev.last_miou > 0) ev.last_miou *= 100;
        ev.evaluated_iter = iter;  // its evaluation ran before its checkpoint
      }
      train::set_rng_state(root->get("rng"));
      h.check_dataset("dataset_images", train_ds->size(), "training images");
      h.release_resumed();
    }
    // Every rank starts from rank 0's weights; BN statistics over the global batch.
    std::unique_ptr<dist::GradientReducer> reducer;
    if (world > 1) {
      models::set_sync_bn(*model, comm);
      dist::broadcast_module(*comm, *model);
      reducer = std::make_unique<dist::GradientReducer>(comm, params);
    }
    const auto eval_due = [&](int64_t i) { return i > 0 && ((T.eval_every > 0 && i % T.eval_every == 0) || i == T.iters); };
    const bool eval_pending = h.resuming() && eval_due(iter) && ev.evaluated_iter != iter;
    sum.first_iter = sum.last_iter = iter;

    const std::string best_path = (h.path() / "best.pt").string();
    auto best_file = [&] {
      std::error_code e2;
      return fs::exists(best_path, e2) ? best_path : std::string();
    };
    if (h.resuming() && iter >= T.iters && !eval_pending) {
      progress.message(h.resumed_path() + ": the run finished at iteration " + std::to_string(iter) + " of " +
                       std::to_string(T.iters) + "; nothing to do (raise train.iters to train further)");
      sum.finished = sum.already_finished = true;
      sum.best_miou = ev.best_miou;
      sum.best_iter = ev.best_iter;
      sum.last_miou = ev.last_miou;
      sum.last_checkpoint = h.resumed_path();
      sum.best_checkpoint = best_file();
      return sum;
    }
    if (h.resuming())
      progress.message("resumed from " + h.resumed_path() + " after iteration " + std::to_string(iter));
    // An evaluation record at the resumed iteration stays only if its checkpoint has it.
    h.start(iter, [&](const nlohmann::json& j) {
      return !(eval_pending && j.contains("miou") && j["iteration"].get<int64_t>() == iter);
    });

    auto lopt = cfg.loader_options();
    lopt.shard = comm->rank();
    lopt.shards = world;
    lopt.pin_for = data::pin_target(device);
    SegTrainLoader loader(train_ds, cfg.pipeline, lopt, T.seed);
    loader.batches_per_epoch();  // fails early on a split smaller than a batch
    const int64_t stop = fc.max_iters > 0 ? std::min(fc.max_iters, T.iters) : T.iters;

    int64_t saved_iter = -1;
    auto checkpoint = [&] {
      return make_checkpoint(*model, &opt, iter, *train_ds, yaml, ev);
    };
    auto save = [&] {
      if (iter == saved_iter) return;
      saved_iter = iter;
      sum.last_checkpoint = h.save(iter, checkpoint());
    };
    struct Interrupted {};
    auto run_eval = [&] {
      progress.done();
      // Multi-process: each rank evaluates every world-th image and the confusion matrices
      // are summed; a signal then waits for the evaluation's end (the ranks stop together).
      auto r = evaluate(*model, val_ds, cfg.eval_options(), lopt.workers, [&](int64_t d, int64_t n) {
        if (world == 1 && h.stop_signal()) throw Interrupted{};  // the iteration's checkpoint is already written
        progress.update("evaluating " + train::bar(d, n) + " " + std::to_string(d) + "/" + std::to_string(n), d, d == n);
      }, comm.get());
      progress.done();
      ev.last_miou = 100 * r.metrics.miou;
      ev.evaluated_iter = iter;
      const bool better = ev.last_miou > ev.best_miou;
      if (better) {
        ev.best_miou = ev.last_miou;
        ev.best_iter = iter;
        // Weights only (no optimizer): the model to evaluate, predict or export.
        if (h.main()) io::save_checkpoint(best_path, make_checkpoint(*model, nullptr, iter, *train_ds, yaml, ev));
      }
      // The iteration's checkpoint was written before this evaluation: bring it up to date.
      if (saved_iter == iter) sum.last_checkpoint = h.save(iter, checkpoint());
      char line[256];
      std::snprintf(line, sizeof line, "iteration %lld: mIoU %.2f mAcc %.2f aAcc %.2f (%%) on %lld images (%.1f s)%s",
                    static_cast<long long>(iter), ev.last_miou, 100 * r.metrics.macc, 100 * r.metrics.aacc,
                    static_cast<long long>(r.images), r.seconds, better ? ", best so far -> best.pt" : "");
      progress.message(line);
      if (r.label_stats.pixels)
        progress.message("warning: " + std::to_string(r.label_stats.pixels) + " validation label pixels in " +
                         std::to_string(r.label_stats.files) + " files are outside 0.." + std::to_string(classes - 1) +
                         " and not 255 (ignored); first: " + r.label_stats.first_file);
      // Per-class IoU (%; null where the class is in neither truth nor prediction): the report's bars.
      nlohmann::json iou = nlohmann::json::array();
      for (double v : r.metrics.iou) iou.push_back(std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(100 * v));
      h.log({{"iteration", iter}, {"miou", ev.last_miou}, {"macc", 100 * r.metrics.macc},
             {"aacc", 100 * r.metrics.aacc}, {"eval_seconds", r.seconds}, {"iou", iou}});
    };
    auto finish = [&](bool finished) {
      progress.done();
      if (auto st = train_ds->take_label_stats(); st.pixels)
        progress.message("warning: " + std::to_string(st.pixels) + " training label pixels in " +
                         std::to_string(st.files) + " file reads are outside 0.." + std::to_string(classes - 1) +
                         " and not 255 (ignored); first: " + st.first_file);
      sum.finished = finished;
      sum.signal = finished ? 0 : h.stop_signal();
      clock_out();
      sum.best_miou = ev.best_miou;
      sum.best_iter = ev.best_iter;
      sum.last_miou = ev.last_miou;
      sum.last_checkpoint = h.last_checkpoint().empty() && h.resuming() ? h.resumed_path() : h.last_checkpoint();
      sum.best_checkpoint = best_file();
      h.summary(fields(), finished);
      return sum;
    };

    const double lr0 = cfg.optim.lr;
    progress.message("finetuning DeepLabV3 resnet" + std::to_string(cfg.model.arch) + " on " + cfg.data.type + " (" +
                     std::to_string(train_ds->size()) + " train / " + std::to_string(val_ds.size()) + " val images, " +
                     std::to_string(classes) + " classes): " + std::to_string(T.iters) + " iterations, batch " +
                     std::to_string(T.batch) +
                     (world > 1 ? " (" + std::to_string(local_batch) + " per process x " + std::to_string(world) +
                                      " processes, SyncBN)"
                                : std::string()) +
                     ", crop " + std::to_string(cfg.pipeline.crop_h) + "x" +
                     std::to_string(cfg.pipeline.crop_w) + ", lr " + std::to_string(lr0) + ", " + numerics.describe() + ", " +
                     train::thread_counts(lopt.workers) + ", run folder " +
                     h.path().string());
    try {
      if (eval_pending) {
        saved_iter = iter;  // the resumed checkpoint is this iteration's
        progress.message("making up the evaluation of iteration " + std::to_string(iter) + " that the checkpoint missed");
        run_eval();
        if (h.stop_agreed()) return finish(false);
        if (iter >= T.iters) return finish(true);
      }
      double data_wait = 0;
      train::DataWaitWatch wait_watch(cfg.data.priority, lopt.workers);
      loader.start(iter, stop);
      model->train();
      while (iter < stop) {
        auto tw = Clock::now();
        auto batch = loader.next();
        data_wait += seconds_since(tw);
        const double lr = train::scheduled_lr(cfg.optim, lr0, 0, iter, T.iters, 1);
        const auto res = train_step(*model, opt, batch->image.to(device, true), batch->label.to(device, true), lr,
                                    {T.avg_non_ignore, cfg.model.align_corners}, comm.get(), reducer.get());
        const double loss = res.loss;  // a mean over ranks: every rank agrees on finiteness
        if (!res.finite)
          h.non_finite_step(iter + 1, "loss " + std::to_string(loss), opt, models::buffers_finite(*model));
        ++iter;
        sum.losses.push_back(loss);
        sum.last_iter = iter;

        const train::Pace pace{iter - sum.first_iter, T.iters - iter, T.batch, h.seconds()};
        const bool signalled = h.stop_agreed();
        const bool last = iter == stop || signalled;
        if (iter % T.log_every == 0 || last) {
          nlohmann::json rec{{"iteration", iter}, {"lr", lr}, {"loss", loss}, {"acc", res.acc}};
          rec.update(train::pace_fields(pace, data_wait, reducer ? reducer->comm_wait_seconds() : 0.0, opt));
          h.log(rec);
        }
        char line[256];
        std::snprintf(line, sizeof line, "%s %lld/%lld %.2f img/s ETA %s loss %.4f acc %.1f%% lr %.6f",
                      train::bar(iter, T.iters).c_str(), static_cast<long long>(iter), static_cast<long long>(T.iters),
                      pace.img_per_s(), train::fmt_time(pace.eta_s()).c_str(), loss, res.acc, lr);
        progress.update(line, iter, last);
        if (const auto v = wait_watch.update(data_wait, pace.elapsed_s); !v.message.empty()) {
          progress.message(v.message);
          if (v.raise_priority) loader.set_priority("normal");
        }

        // Checkpoint first: an evaluation that fails (an unreadable val image) loses no training.
        const auto tp = Clock::now();
        if ((T.checkpoint_every > 0 && iter % T.checkpoint_every == 0) || iter == T.iters || last) save();
        if (signalled) return finish(false);
        if (eval_due(iter)) run_eval();
        wait_watch.exclude(seconds_since(tp));
        if (h.stop_agreed()) return finish(false);
      }
    } catch (const Interrupted&) {
      return finish(false);
    }
    return finish(iter == T.iters);
  } catch (const std::exception& e) {
    clock_out();  // a failed run's summary says how far and how fast it went too
    h.failed(error_message(e), fields());
    throw;
  }
}

}  // namespace cp2::seg
