#include "cp2/pretrain/trainer.h"

#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cp2/common.h"
#include "cp2/cpu_allocator.h"
#include "cp2/io/checkpoint.h"
#include "cp2/io/keymap.h"
#include "cp2/models/batchnorm.h"
#include "cp2/models/init.h"
#include "cp2/pretrain/graph_step.h"
#include "cp2/pretrain/state_io.h"
#include "cp2/data/image.h"
#include "cp2/dist/comm.h"
#include "cp2/dist/reducer.h"
#include "cp2/train/harness.h"

namespace fs = std::filesystem;

namespace cp2::pretrain {

namespace {

using train::get_int;
using train::Progress;

struct Position {
  int64_t epoch = 0, iter = 0, step = 0;  // next epoch / batch within it / global step
};

// Everything a resumed run needs, as a PyTorch-readable file: the authors' `state_dict`
// (encoder_q.*, encoder_k.*, queue, queue_ptr) plus optimizer, position, RNG and config.
py::ObjPtr make_checkpoint(CP2ModelImpl& m, const train::Optimizer& opt, const Position& pos,
                           const std::string& config_text, int arch, int64_t dataset_images) {
  auto root = py::dict();
  auto meta = py::dict();
  py::set(meta, "format", py::integer(1));
  py::set(meta, "kind", py::str("pretrain"));
  py::set(root, "cp2", meta);
  py::set(root, "arch", py::str("resnet" + std::to_string(arch)));
  py::set(root, "epoch", py::integer(pos.epoch));
  py::set(root, "iteration", py::integer(pos.iter));
  py::set(root, "step", py::integer(pos.step));
  py::set(root, "state_dict", train::state_entry(io::state_dict(m)));
  py::set(root, "optimizer", train::optimizer_entry(opt));
  py::set(root, "rng", train::rng_state());
  py::set(root, "config", py::str(config_text));
  py::set(root, "dataset_images", py::integer(dataset_images));  // resume warns when it changed
  return root;
}

// Steps in an epoch: the loader's batches, capped by train.iters_per_epoch.
int64_t steps_per_epoch(const TrainOptions& T, const data::PretrainLoader& loader) {
  const int64_t bpe = loader.batches_per_epoch();
  return T.iters_per_epoch > 0 ? std::min(T.iters_per_epoch, bpe) : bpe;
}

// Where a checkpoint continues; a checkpoint written at an epoch's last step continues
// at the next epoch's start.
Position read_position(const py::ObjPtr& root, const std::string& path, int64_t steps_per_epoch) {
  const auto& what = train::pretrain_kind().what;
  Position p{get_int(root, "epoch", path, what), get_int(root, "iteration", path, what), get_int(root, "step", path, what)};
  if (p.iter >= steps_per_epoch) p = {p.epoch + 1, 0, p.step};
  return p;
}

// Quick Tuning: the backbone (and, from CP² files, the ASPP head) of `path` into the
// query encoder; returns the load report. MoCo-mode encoders have the bare ResNet names.
std::string quick_tuning_init(CP2ModelImpl& model, const std::string& path, io::Preset preset, int arch) {
  auto ck = io::load_checkpoint(path);
  auto mapped = io::map_to_segmentor(ck, preset);
  io::TensorList tensors = mapped.tensors;
  if (mode_spec(model.options().mode).moco_encoder) {
    io::TensorList bare;
    for (auto& [k, t] : tensors)
      if (k.rfind("backbone.", 0) == 0) bare.emplace_back(k.substr(9), t);
    tensors = bare;
  }
  io::LoadReport rep;
  try {
    rep = io::load_state(model.q_module(), tensors, /*strict=*/false, path);
  } catch (const Error& e) {  // nothing matched: name the layout the keys do have
    std::string hint;
    try {
      const auto d = io::detect_preset(io::find_state_dict(ck), path);
      if (d != mapped.preset)
        hint = "; its keys are the " + io::preset_name(d) + " layout: use --init-preset " + io::preset_name(d) +
               " (or auto)";
    } catch (const Error&) {
    }
    throw Error(std::string(e.what()) + " (train.init_preset " + io::preset_name(mapped.preset) + ")" + hint);
  }
  if (!rep.mismatched.empty())
    throw Error(path + ": does not fit model.arch=" + std::to_string(arch) + " (" +
                std::to_string(rep.mismatched.size()) + " mis-shaped tensors, first: " + rep.mismatched[0].key +
                " expected " + shape_str(rep.mismatched[0].expected) + ", found " +
                shape_str(rep.mismatched[0].found) + ")");
  return "Quick Tuning init (" + io::preset_name(mapped.preset) + " layout, " + std::to_string(mapped.dropped.size()) +
         " keys dropped):\n" + rep.str();
}

}  // namespace

RunSummary run_pretrain(const PretrainConfig& cfg, const RunControl& rc) {
  cfg.validate();
  install_caching_cpu_allocator();
  const auto device = train::parse_device(cfg.train.device);
  const auto mopt = cfg.model_options();
  const auto& T = cfg.train;
  const std::string yaml = cfg.to_yaml();  // what runs is what the checkpoints store
  // Before the run folder opens: a precision or algorithm this device cannot run is a config error.
  const auto numerics = compute::resolve_numerics(T.numerics, T.device, cfg.model.arch);

  if (!rc.dump_batch.empty()) {  // no run folder: the batch the run would train on next
    auto ds = std::make_shared<data::PretrainDataset>(cfg.data.root, cfg.aug_options(), T.seed);
    data::PretrainLoader loader(ds, cfg.loader_options());
    Position at;
    if (!rc.resume.empty()) {
      const auto file = train::locate_resume(rc.resume, "").checkpoint;
      const auto root = io::load_checkpoint(file).root;
      train::expect_kind(root, train::pretrain_kind(), file);
      at = read_position(root, file, steps_per_epoch(T, loader));
    }
    loader.start(at.epoch, at.iter, at.iter + 1);
    save_batch(rc.dump_batch, *loader.next());
    if (rc.progress)
      std::fprintf(stderr, "wrote the batch of epoch %lld, iteration %lld to %s\n", static_cast<long long>(at.epoch + 1),
                   static_cast<long long>(at.iter + 1), rc.dump_batch.c_str());
    return {};
  }

  // Data parallel: rank 0 owns the run folder and resolves --resume; the other ranks load
  // the same checkpoint file and write nothing.
  const auto comm = rc.comm ? rc.comm : dist::single_process();
  const int world = comm->size();
  const int64_t local_batch = dist::per_process_batch(T.batch, world);
  if (world > 1) {
    if (cfg.model.key_bn_splits != 1 || cfg.model.query_bn_splits != 1)
      throw Error("model.key_bn_splits / model.query_bn_splits: single-process stand-ins for per-process BN; with " +
                  std::to_string(world) + " processes BN is per process and shuffle-BN runs across them: set both to 1");
  }
  // train.cuda_graph: on that cannot hold is a config error, before the run folder opens.
  std::string no_graph;
  const bool use_graphs = resolve_cuda_graph(
      T.cuda_graph, graph_facts(mopt, cfg.optim, device, world), no_graph);
  // The images are listed before the run folder opens: a wrong --data leaves no folder.
  auto ds = std::make_shared<data::PretrainDataset>(cfg.data.root, cfg.aug_options(), T.seed);
  train::HarnessOptions ho{train::pretrain_kind(), T.out, rc.resume, yaml, "step", rc.progress, T.log_every,
                           T.keep_last};
  ho.take_over = rc.take_over;
  auto hp = train::open_harness(*comm, std::move(ho));
  train::Harness& h = *hp;
  auto& progress = h.progress();
  if (cfg.model.queue % T.batch != 0)  // here, not in validate(): once per run, however often it is validated
    progress.message("warning: model.queue " + std::to_string(cfg.model.queue) + " is not a multiple of train.batch " +
                     std::to_string(T.batch) + " (MoCo asserts it; cp2 wraps)");

  RunSummary sum;
  Position pos;
  auto clock_out = [&] {
    sum.seconds = h.seconds();
    sum.images_per_s = train::Pace{sum.last_step - sum.first_step, 0, T.batch, sum.seconds}.img_per_s();
  };
  auto fields = [&] {
    return nlohmann::json{{"steps", sum.last_step},
                          {"steps_this_run", sum.last_step - sum.first_step},
                          {"seconds", sum.seconds},
                          {"images_per_s", sum.images_per_s},
                          {"final_loss", sum.losses.empty() ? nlohmann::json(nullptr) : nlohmann::json(sum.losses.back())},
                          {"skipped_image_reads", sum.skipped_images},
                          {"dataset_images", ds->size()}};
  };
  try {
    if (rc.check_data) {
      auto bad = train::check_items(
          ds->size(), [&](int64_t i) { data::read_image(ds->files()[static_cast<size_t>(i)]); },
          std::max(cfg.loader_options().workers, 1), [&](int64_t d, int64_t n) {
            progress.update("checking images " + train::bar(d, n) + " " + std::to_string(d) + "/" + std::to_string(n),
                            d, d == n);
          });
      progress.done();
      if (!bad.empty()) {
        std::string msg = "--check-data: " + std::to_string(bad.size()) + " of " + std::to_string(ds->size()) +
                          " images cannot be read:";
        for (const auto& b : bad) msg += "\n  " + b;
        throw Error(msg);
      }
      progress.message("--check-data: all " + std::to_string(ds->size()) + " images read");
    }

    // Model: seeded init (mmsegmentation's for the segmentor encoders), the queue from the
    // same seed, then Quick Tuning weights for the query backbone, then k <- q.
    CP2Model model = make_model(mopt, T.seed);
    if (!T.init.empty() && !h.resuming()) {
      progress.message(quick_tuning_init(*model, T.init, io::parse_preset(T.init_preset), cfg.model.arch));
      model->sync_key_encoder();
    }
    model->to(device);
    model->set_numerics(numerics);
    train::Optimizer opt(query_parameters(*model), cfg.optim);
    if (numerics.loss_scaling) opt.enable_loss_scaling(numerics.loss_scale_init);

    auto lopt = cfg.loader_options();
    lopt.shard = comm->rank();
    lopt.shards = world;
    lopt.pin_for = data::pin_target(device);
    data::PretrainLoader loader(ds, lopt);
    if (h.resuming()) {
      const auto& path = h.resumed_path();
      const auto& root = h.resumed();
      load_pretrain_state(*model, drop_classifier(io::find_state_dict(io::Checkpoint{root, io::Format::Zip, path})), path,
                          /*strict=*/true);
      train::load_optimizer_entry(opt, root, path);
      pos = read_position(root, path, steps_per_epoch(T, loader));
      train::set_rng_state(root->get("rng"));
      h.check_dataset("dataset_images", ds->size(), "images");
      h.release_resumed();
    }

    // Every rank starts from rank 0's weights, queue and pointer (after --init/--resume).
    std::unique_ptr<dist::GradientReducer> reducer;
    if (world > 1) {
      model->set_comm(comm);
      dist::broadcast_module(*comm, *model);
      reducer = std::make_unique<dist::GradientReducer>(comm, query_parameters(*model));
    }

    StepRunner runner(*model, opt, use_graphs, reducer.get());

    const int64_t iters = steps_per_epoch(T, loader);
    const int64_t total_steps = T.epochs * iters;
    sum.first_step = sum.last_step = pos.step;

    if (h.resuming() && pos.epoch >= T.epochs) {
      progress.message(h.resumed_path() + ": the run finished at step " + std::to_string(pos.step) + " of " +
                       std::to_string(total_steps) + "; nothing to do (raise train.epochs to train further)");
      sum.finished = sum.already_finished = true;
      sum.last_checkpoint = h.resumed_path();
      return sum;
    }
    if (h.resuming())
      progress.message("resumed from " + h.resumed_path() + " after step " + std::to_string(pos.step) + " (epoch " +
                       std::to_string(pos.epoch + 1) + ", iteration " + std::to_string(pos.iter) + ")");
    h.start(pos.step);

    train::DataWaitWatch wait_watch(cfg.data.priority, lopt.workers);
    int64_t saved_step = -1;
    auto save = [&](const Position& p) {
      if (p.step == saved_step) return;
      saved_step = p.step;
      const auto t = Clock::now();
      sum.last_checkpoint = h.save(p.step, make_checkpoint(*model, opt, p, yaml, cfg.model.arch, ds->size()));
      wait_watch.exclude(seconds_since(t));  // not training time: kept out of the data-wait windows
    };
    auto finish = [&](bool finished) {
      progress.done();
      sum.finished = finished;
      sum.signal = h.stop_signal();  // reported even when it came with the last step: the caller stops too
      clock_out();
      sum.last_checkpoint = h.last_checkpoint();
      sum.skipped_images += ds->take_skipped();
      h.summary(fields(), finished);
      return sum;
    };

    const double lr0 = cfg.lr();
    double data_wait = 0;
    progress.message("pretraining " + cfg.model.mode + ": resnet" + std::to_string(cfg.model.arch) + ", " +
                     std::to_string(ds->size()) + " images, " + std::to_string(iters) + " steps/epoch x " +
                     count_of(T.epochs, "epoch") + ", batch " + std::to_string(T.batch) +
                     (world > 1 ? " (" + std::to_string(local_batch) + " per process x " + std::to_string(world) +
                                      " processes, shuffle-BN across them)"
                                : std::string()) +
                     ", lr " + std::to_string(lr0) + ", " + numerics.describe() +
                     (runner.graphs() ? ", steps as CUDA graphs"
                      : no_graph.empty() ? std::string()
                                         : ", eager steps (train.cuda_graph auto: " + no_graph + ")") +
                     ", " + train::thread_counts(lopt.workers) + ", run folder " + h.path().string());
    model->train();
    for (int64_t epoch = pos.epoch; epoch < T.epochs; ++epoch) {
      loader.start(epoch, pos.iter, iters);
      int64_t it = pos.iter;
      while (true) {
        auto tw = Clock::now();
        auto batch = loader.next();
        data_wait += seconds_since(tw);
        if (!batch) break;
        const double lr = train::scheduled_lr(cfg.optim, lr0, epoch, it, iters, T.epochs);
        auto to = [&](const at::Tensor& t) { return t.to(device, /*non_blocking=*/true); };
        auto res = runner.step({to(batch->im_q), to(batch->im_k), to(batch->mask_q), to(batch->mask_k)}, lr);
        const auto& parts = res.parts;
        if (!res.finite)  // numbered as the progress line would have shown it
          h.non_finite_step(pos.step + 1,
                            "epoch " + std::to_string(epoch + 1) + ", iteration " + std::to_string(it + 1) +
                                "; loss_ins " + std::to_string(parts.ins_value) + ", loss_dense " +
                                std::to_string(parts.dense_value),
                            opt, models::buffers_finite(*model), res.stepped);
        ++it;
        ++pos.step;
        sum.losses.push_back(res.loss);
        sum.last_step = pos.step;
        const Position here = it >= iters ? Position{epoch + 1, 0, pos.step} : Position{epoch, it, pos.step};

        const train::Pace pace{pos.step - sum.first_step, total_steps - pos.step, T.batch, h.seconds()};
        const bool stop = (rc.max_steps > 0 && pos.step >= rc.max_steps) || h.stop_agreed();
        const bool last = pos.step == total_steps || stop;
        if (pos.step % T.log_every == 0 || last) {
          nlohmann::json rec{{"step", pos.step}, {"epoch", epoch + 1}, {"iter", it}, {"lr", lr}, {"loss", res.loss},
                             {"loss_ins", parts.ins_value}, {"loss_dense", parts.dense_value}, {"acc1", parts.acc1},
                             {"acc5", parts.acc5}, {"acc_dense", parts.acc_dense},
                             {"acc_dense_chance", parts.acc_dense_chance}, {"acc_dense_match", parts.acc_dense_match},
                             {"acc_dense_match_chance", parts.acc_dense_match_chance}};
          rec.update(train::pace_fields(pace, data_wait, reducer ? reducer->comm_wait_seconds() : 0.0, opt));
          h.log(rec);
        }
        char line[512];
        std::snprintf(line, sizeof line,
                      "epoch %lld/%lld %s %lld/%lld %.2f img/s ETA %s loss %.4f (ins %.4f dense %.4f) acc1 %.1f "
                      "acc5 %.1f dense %.1f match %.1f/%.1f lr %.5f",
                      static_cast<long long>(epoch + 1), static_cast<long long>(T.epochs),
                      train::bar(pos.step, total_steps).c_str(), static_cast<long long>(pos.step),
                      static_cast<long long>(total_steps), pace.img_per_s(), train::fmt_time(pace.eta_s()).c_str(), res.loss,
                      parts.ins_value, parts.dense_value, parts.acc1, parts.acc5, parts.acc_dense, parts.acc_dense_match,
                      parts.acc_dense_match_chance, lr);
        progress.update(line, pos.step, last);
        if (const auto v = wait_watch.update(data_wait, pace.elapsed_s); !v.message.empty()) {
          progress.message(v.message);
          if (v.raise_priority) loader.set_priority("normal");
        }

        if (T.checkpoint_every_iters > 0 && pos.step % T.checkpoint_every_iters == 0) save(here);
        if (stop) {
          save(here);
          return finish(pos.step >= total_steps);  // a signal during the last step: the run is complete
        }
      }
      pos.iter = 0;
      if (int64_t sk = ds->take_skipped(); sk > 0) {
        sum.skipped_images += sk;
        progress.message("epoch " + std::to_string(epoch + 1) + ": skipped " + std::to_string(sk) +
                         " unreadable image reads (" + std::to_string(ds->bad_files().size()) + " files so far)");
      }
      const Position end{epoch + 1, 0, pos.step};
      if ((T.checkpoint_every_epochs > 0 && (epoch + 1) % T.checkpoint_every_epochs == 0) || epoch + 1 == T.epochs)
        save(end);
    }
    return finish(true);
  } catch (const std::exception& e) {
    clock_out();  // a failed run's summary says how far and how fast it went too
    h.failed(error_message(e), fields());
    throw;
  }
}

}  // namespace cp2::pretrain
