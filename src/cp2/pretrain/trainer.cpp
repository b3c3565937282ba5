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
#include "cp2/models/init.h"
#include "cp2/pretrain/state_io.h"
#include "cp2/train/run.h"

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
                           const std::string& config_text, int arch) {
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
  return root;
}

}  // namespace

CP2Model make_model(const CP2Options& o, uint64_t seed) {
  torch::manual_seed(seed);
  CP2Model m(o);
  models::init_weights(m->q_module(), seed);
  m->sync_key_encoder();
  return m;
}

train::NamedTensors query_parameters(CP2ModelImpl& m) {
  train::NamedTensors params;
  for (auto& p : m.q_module().named_parameters()) params.emplace_back("encoder_q." + p.key(), p.value());
  return params;
}

StepResult train_step(CP2ModelImpl& model, train::Optimizer& opt, const data::Batch& b, double lr) {
  StepResult r;
  r.parts = model.forward_step(b.im_q, b.im_k, b.mask_q, b.mask_k);
  r.loss = r.parts.total.item<double>();
  r.finite = std::isfinite(r.loss);
  if (!r.finite) return r;
  opt.zero_grad();
  r.parts.total.backward();
  opt.step(lr);
  model.enqueue(r.parts.k_ins);
  return r;
}

std::string checkpoint_config(const std::string& path) {
  auto ck = io::load_checkpoint(path);
  auto c = ck.root->get("config");
  if (!c || c->kind != py::Kind::Str) throw Error(path + ": not a cp2 pretraining checkpoint (no 'config')");
  return c->s;
}

RunSummary run_pretrain(const PretrainConfig& cfg, const RunControl& rc) {
  cfg.validate();
  install_caching_cpu_allocator();
  const auto device = train::parse_device(cfg.train.device);
  const auto mopt = cfg.model_options();
  const auto& T = cfg.train;
  Progress progress(rc.progress, T.log_every);

  // Model: seeded init (mmsegmentation's for the segmentor encoders), the queue from the
  // same seed, then Quick Tuning weights for the query backbone, then k <- q.
  CP2Model model = make_model(mopt, T.seed);
  if (!T.init.empty() && rc.resume.empty()) {
    auto ck = io::load_checkpoint(T.init);
    auto mapped = io::map_to_segmentor(ck, io::parse_preset(T.init_preset));
    io::TensorList tensors = mapped.tensors;
    if (mopt.mode == Mode::Moco) {  // the MoCo encoder has the bare ResNet names
      io::TensorList bare;
      for (auto& [k, t] : tensors)
        if (k.rfind("backbone.", 0) == 0) bare.emplace_back(k.substr(9), t);
      tensors = bare;
    }
    auto rep = io::load_state(model->q_module(), tensors, /*strict=*/false, T.init);
    progress.message("Quick Tuning init (" + io::preset_name(mapped.preset) + " layout, " +
                     std::to_string(mapped.dropped.size()) + " keys dropped):\n" + rep.str());
    if (!rep.mismatched.empty())
      throw Error(T.init + ": does not fit model.arch=" + std::to_string(cfg.model.arch) + " (" +
                  std::to_string(rep.mismatched.size()) + " mis-shaped tensors, first: " + rep.mismatched[0].key +
                  " expected " + shape_str(rep.mismatched[0].expected) + ", found " +
                  shape_str(rep.mismatched[0].found) + ")");
    model->sync_key_encoder();
  }
  model->to(device);
  train::Optimizer opt(query_parameters(*model), cfg.optim);

  Position pos;
  std::string last_ckpt;
  if (!rc.resume.empty()) {
    last_ckpt = train::resolve_checkpoint(rc.resume);
    auto ck = io::load_checkpoint(last_ckpt);
    const std::string what = "cp2 pretraining checkpoint";
    train::expect_kind(ck.root, "pretrain", last_ckpt, what);
    load_pretrain_state(*model, io::find_state_dict(ck), last_ckpt, /*strict=*/true);
    train::load_optimizer_entry(opt, ck.root, last_ckpt);
    pos = {get_int(ck.root, "epoch", last_ckpt, what), get_int(ck.root, "iteration", last_ckpt, what),
           get_int(ck.root, "step", last_ckpt, what)};
    train::set_rng_state(ck.root->get("rng"));
    progress.message("resumed from " + last_ckpt + " at epoch " + std::to_string(pos.epoch) + ", iteration " +
                     std::to_string(pos.iter) + " (step " + std::to_string(pos.step) + ")");
  }
  const fs::path out = T.out, ckdir = train::prepare_run_folder(out, rc.config_text);

  auto ds = std::make_shared<data::PretrainDataset>(cfg.data.root, cfg.aug_options(), T.seed);
  data::PretrainLoader loader(ds, cfg.loader_options());
  const int64_t bpe = loader.batches_per_epoch();
  const int64_t iters = T.iters_per_epoch > 0 ? std::min(T.iters_per_epoch, bpe) : bpe;
  if (pos.iter >= iters) pos = {pos.epoch + 1, 0, pos.step};

  if (!rc.dump_batch.empty()) {
    loader.start(pos.epoch, pos.iter, pos.iter + 1);
    save_batch(rc.dump_batch, *loader.next());
    progress.message("wrote the batch of epoch " + std::to_string(pos.epoch) + ", iteration " +
                     std::to_string(pos.iter) + " to " + rc.dump_batch);
    return {};
  }

  std::ofstream log(out / "log.jsonl", std::ios::app);
  if (!log) throw Error((out / "log.jsonl").string() + ": cannot write");

  RunSummary sum;
  sum.first_step = sum.last_step = pos.step;
  int64_t saved_step = -1;
  auto save = [&](const Position& p) {
    if (p.step == saved_step) return;
    auto path = (ckdir / train::checkpoint_name(p.step)).string();
    io::save_checkpoint(path, make_checkpoint(*model, opt, p, rc.config_text, cfg.model.arch));
    saved_step = p.step;
    last_ckpt = path;
    train::rotate_checkpoints(ckdir, T.keep_last);
  };

  const int64_t total_steps = T.epochs * iters;
  const auto t0 = Clock::now();
  // One summary for both exits (end of training, or --max-steps): totals, summary.json.
  auto finish = [&](bool finished) {
    progress.done();
    sum.finished = finished;
    sum.seconds = seconds_since(t0);
    sum.images_per_s = (sum.last_step - sum.first_step) * T.batch / std::max(sum.seconds, 1e-9);
    sum.last_checkpoint = last_ckpt;
    sum.skipped_images += ds->take_skipped();
    nlohmann::json j = {{"finished", finished},
                        {"steps", sum.last_step},
                        {"steps_this_run", sum.last_step - sum.first_step},
                        {"seconds", sum.seconds},
                        {"images_per_s", sum.images_per_s},
                        {"final_loss", sum.losses.empty() ? 0.0 : sum.losses.back()},
                        {"skipped_image_reads", sum.skipped_images},
                        {"checkpoint", sum.last_checkpoint}};
    std::ofstream(out / "summary.json") << j.dump(2) << "\n";
    return sum;
  };

  const double lr0 = cfg.lr();
  double data_wait = 0;
  progress.message("pretraining " + cfg.model.mode + ": resnet" + std::to_string(cfg.model.arch) + ", " +
                   std::to_string(ds->size()) + " images, " + std::to_string(iters) + " steps/epoch x " +
                   std::to_string(T.epochs) + " epochs, batch " + std::to_string(T.batch) + ", lr " +
                   std::to_string(lr0) + ", run folder " + out.string());
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
      auto res = train_step(*model, opt, {to(batch->im_q), to(batch->im_k), to(batch->mask_q), to(batch->mask_k)}, lr);
      const auto& parts = res.parts;
      const double loss = res.loss;
      auto val = [](const at::Tensor& t) { return t.defined() ? t.item<double>() : 0.0; };
      if (!res.finite)
        throw Error("step " + std::to_string(pos.step) + " (epoch " + std::to_string(epoch) + ", iteration " +
                    std::to_string(it) + "): loss is not finite (loss_ins " + std::to_string(val(parts.loss_ins)) +
                    ", loss_dense " + std::to_string(val(parts.loss_dense)) + "); stopped without updating. " +
                    (last_ckpt.empty() ? std::string("No checkpoint was written yet.")
                                       : "Last good checkpoint: " + last_ckpt));
      ++it;
      ++pos.step;
      sum.losses.push_back(loss);
      sum.last_step = pos.step;
      const Position here = it >= iters ? Position{epoch + 1, 0, pos.step} : Position{epoch, it, pos.step};

      const double el = seconds_since(t0);
      const int64_t done = pos.step - sum.first_step;
      const double ips = done * T.batch / std::max(el, 1e-9);
      const bool last = pos.step == total_steps || (rc.max_steps > 0 && pos.step >= rc.max_steps);
      if (pos.step % T.log_every == 0 || last) {
        nlohmann::json j = {{"step", pos.step}, {"epoch", epoch}, {"iter", it}, {"lr", lr}, {"loss", loss},
                            {"loss_ins", val(parts.loss_ins)}, {"loss_dense", val(parts.loss_dense)},
                            {"acc1", parts.acc1}, {"acc5", parts.acc5}, {"acc_dense", parts.acc_dense},
                            {"img_per_s", ips}, {"data_wait_s", data_wait}, {"elapsed_s", el}};
        log << j.dump() << "\n";
        log.flush();
      }
      char line[512];
      const double eta = (total_steps - pos.step) * el / std::max<int64_t>(done, 1);
      std::snprintf(line, sizeof line,
                    "epoch %lld/%lld %s %lld/%lld %.2f img/s ETA %s loss %.4f (ins %.4f dense %.4f) acc1 %.1f "
                    "acc5 %.1f dense %.1f lr %.5f",
                    static_cast<long long>(epoch + 1), static_cast<long long>(T.epochs),
                    train::bar(pos.step, total_steps).c_str(),
                    static_cast<long long>(pos.step), static_cast<long long>(total_steps), ips, train::fmt_time(eta).c_str(),
                    loss, val(parts.loss_ins), val(parts.loss_dense), parts.acc1, parts.acc5, parts.acc_dense, lr);
      progress.update(line, pos.step, last);

      if (T.checkpoint_every_iters > 0 && pos.step % T.checkpoint_every_iters == 0) save(here);
      if (rc.max_steps > 0 && pos.step >= rc.max_steps) {
        save(here);
        return finish(false);
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
}

}  // namespace cp2::pretrain
