#include "cp2/seg/finetune.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cp2/common.h"
#include "cp2/cpu_allocator.h"
#include "cp2/io/checkpoint.h"
#include "cp2/seg/inference.h"
#include "cp2/seg/loader.h"
#include "cp2/seg/model.h"
#include "cp2/train/run.h"

namespace fs = std::filesystem;

namespace cp2::seg {

namespace {

const char* kWhat = "cp2 finetune checkpoint";

// mmseg-compatible: `state_dict` (backbone.*, decode_head.*) and `meta` (CLASSES,
// PALETTE), so mmsegmentation loads it as is; plus cp2's optimizer, position, RNG, config.
py::ObjPtr make_checkpoint(models::SegmentorImpl& m, const train::Optimizer* opt, int64_t iteration,
                           const SegDataset& ds, const std::string& config, double best_miou, int64_t best_iter,
                           double miou) {
  auto root = py::dict();
  auto cp2 = py::dict();
  py::set(cp2, "format", py::integer(1));
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
  py::set(best, "miou", py::real(best_miou));
  py::set(best, "iteration", py::integer(best_iter));
  py::set(root, "best", best);
  py::set(root, "miou", py::real(miou));
  py::set(root, "rng", train::rng_state());
  py::set(root, "config", py::str(config));
  return root;
}

}  // namespace

SegLoss seg_loss(const at::Tensor& logits, const at::Tensor& label, bool avg_non_ignore, bool align_corners) {
  namespace F = torch::nn::functional;
  auto up = F::interpolate(logits, F::InterpolateFuncOptions()
                                       .size(std::vector<int64_t>{label.size(1), label.size(2)})
                                       .mode(torch::kBilinear)
                                       .align_corners(align_corners));
  auto per_pixel = F::cross_entropy(up, label, F::CrossEntropyFuncOptions().ignore_index(255).reduction(torch::kNone));
  auto valid = label != 255;
  auto nvalid = valid.sum();
  SegLoss r;
  r.loss = avg_non_ignore ? per_pixel.sum() / nvalid.clamp_min(1) : per_pixel.mean();
  torch::NoGradGuard ng;
  // One device sync for both counts (the loop reads the loss once more).
  auto counts = torch::stack({nvalid, (up.argmax(1) == label).logical_and(valid).sum()}).to(torch::kCPU);
  const int64_t n = counts[0].item<int64_t>(), correct = counts[1].item<int64_t>();
  r.acc = n ? 100.0 * static_cast<double>(correct) / static_cast<double>(n) : 0.0;
  return r;
}

std::string finetune_checkpoint_config(const std::string& path) {
  auto ck = io::load_checkpoint(path);
  auto c = ck.root->get("config");
  if (!c || c->kind != py::Kind::Str) throw Error(path + ": not a " + std::string(kWhat) + " (no 'config')");
  return c->s;
}

FinetuneSummary run_finetune(const FinetuneConfig& cfg, const FinetuneControl& fc) {
  cfg.validate();
  install_caching_cpu_allocator();
  torch::AutoGradMode grad_on(true);  // callers may hold a NoGradGuard (inference code)
  const auto device = train::parse_device(cfg.train.device);
  const auto& T = cfg.train;
  train::Progress progress(fc.progress, T.log_every);

  auto train_ds = std::make_shared<SegDataset>(cfg.data.dataset(true));
  SegDataset val_ds(cfg.data.dataset(false));
  const int classes = cfg.model.num_classes > 0 ? cfg.model.num_classes : train_ds->num_classes();
  if (classes != train_ds->num_classes())
    throw Error("model.num_classes: " + std::to_string(classes) + " set, the " + cfg.data.type + " dataset has " +
                std::to_string(train_ds->num_classes()) + " classes");

  auto model = make_segmentor(cfg.model.segmentor(classes), T.seed);
  if (!T.init.empty() && fc.resume.empty()) {
    auto r = init_from_pretrained(*model, T.init, io::parse_preset(T.init_preset));
    progress.message(r.str());
  } else if (fc.resume.empty()) {
    progress.message("no train.init: finetuning from scratch (mmsegmentation init)");
  }
  model->to(device);
  train::NamedTensors params;
  for (auto& p : model->named_parameters()) params.emplace_back(p.key(), p.value());
  train::Optimizer opt(params, cfg.optim);

  int64_t iter = 0, best_iter = 0;
  double best_miou = -1;
  std::string last_ckpt;
  if (!fc.resume.empty()) {
    last_ckpt = train::resolve_checkpoint(fc.resume);
    auto ck = io::load_checkpoint(last_ckpt);
    train::expect_kind(ck.root, "finetune", last_ckpt, kWhat);
    io::load_state(*model, io::find_state_dict(ck), /*strict=*/true, last_ckpt);
    train::load_optimizer_entry(opt, ck.root, last_ckpt);
    iter = train::get_int(ck.root, "iteration", last_ckpt, kWhat);
    if (auto b = ck.root->get("best")) {
      if (auto m = b->get("miou"); m && m->kind == py::Kind::Float) best_miou = m->f;
      if (auto i = b->get("iteration"); i && i->kind == py::Kind::Int) best_iter = i->i;
    }
    train::set_rng_state(ck.root->get("rng"));
    progress.message("resumed from " + last_ckpt + " at iteration " + std::to_string(iter));
  }
  const fs::path out = T.out, ckdir = train::prepare_run_folder(out, fc.config_text);
  std::ofstream log(out / "log.jsonl", std::ios::app);
  if (!log) throw Error((out / "log.jsonl").string() + ": cannot write");

  SegTrainLoader loader(train_ds, cfg.pipeline, cfg.loader_options(), T.seed);
  loader.batches_per_epoch();  // fails early on a split smaller than a batch
  const int64_t stop = fc.max_iters > 0 ? std::min(fc.max_iters, T.iters) : T.iters;

  FinetuneSummary sum;
  sum.first_iter = sum.last_iter = iter;
  sum.best_miou = best_miou;
  sum.best_iter = best_iter;
  double last_miou = -1;
  int64_t saved_iter = -1;
  const std::string best_path = (out / "best.pt").string();
  auto save = [&] {
    if (iter == saved_iter) return;
    auto path = (ckdir / train::checkpoint_name(iter)).string();
    io::save_checkpoint(path, make_checkpoint(*model, &opt, iter, *train_ds, fc.config_text, best_miou, best_iter,
                                              last_miou));
    saved_iter = iter;
    last_ckpt = path;
    train::rotate_checkpoints(ckdir, T.keep_last);
  };
  auto run_eval = [&] {
    progress.done();
    auto r = evaluate(*model, val_ds, cfg.eval_options(), cfg.data.workers, [&](int64_t d, int64_t n) {
      progress.update("evaluating " + train::bar(d, n) + " " + std::to_string(d) + "/" + std::to_string(n), d, d == n);
    });
    progress.done();
    last_miou = r.metrics.miou;
    const bool better = r.metrics.miou > best_miou;
    if (better) {
      best_miou = r.metrics.miou;
      best_iter = iter;
      // Weights only (no optimizer): the model to evaluate, predict or export.
      io::save_checkpoint(best_path, make_checkpoint(*model, nullptr, iter, *train_ds, fc.config_text, best_miou,
                                                     best_iter, last_miou));
    }
    char line[256];
    std::snprintf(line, sizeof line, "iteration %lld: mIoU %.2f mAcc %.2f aAcc %.2f on %lld images (%.1f s)%s",
                  static_cast<long long>(iter), 100 * r.metrics.miou, 100 * r.metrics.macc, 100 * r.metrics.aacc,
                  static_cast<long long>(r.images), r.seconds, better ? ", best so far -> best.pt" : "");
    progress.message(line);
    if (r.label_stats.pixels)
      progress.message("warning: " + std::to_string(r.label_stats.pixels) + " validation label pixels in " +
                       std::to_string(r.label_stats.files) + " files are outside 0.." + std::to_string(classes - 1) +
                       " and not 255 (ignored); first: " + r.label_stats.first_file);
    log << nlohmann::json{{"iteration", iter}, {"miou", r.metrics.miou}, {"macc", r.metrics.macc},
                          {"aacc", r.metrics.aacc}, {"eval_seconds", r.seconds}}.dump()
        << "\n";
    log.flush();
  };

  const double lr0 = cfg.optim.lr;
  progress.message("finetuning DeepLabV3 resnet" + std::to_string(cfg.model.arch) + " on " + cfg.data.type + " (" +
                   std::to_string(train_ds->size()) + " train / " + std::to_string(val_ds.size()) + " val images, " +
                   std::to_string(classes) + " classes): " + std::to_string(T.iters) + " iterations, batch " +
                   std::to_string(T.batch) + ", crop " + std::to_string(cfg.pipeline.crop_h) + "x" +
                   std::to_string(cfg.pipeline.crop_w) + ", lr " + std::to_string(lr0) + ", run folder " + out.string());
  const auto t0 = Clock::now();
  double data_wait = 0;
  loader.start(iter, stop);
  model->train();
  while (iter < stop) {
    auto tw = Clock::now();
    auto batch = loader.next();
    data_wait += seconds_since(tw);
    const double lr = train::scheduled_lr(cfg.optim, lr0, 0, iter, T.iters, 1);
    auto x = batch->image.to(device, true), y = batch->label.to(device, true);
    auto l = seg_loss(model->logits(x), y, T.avg_non_ignore, cfg.model.align_corners);
    const double loss = l.loss.item<double>();
    if (!std::isfinite(loss))
      throw Error("iteration " + std::to_string(iter) + ": loss is not finite; stopped without updating. " +
                  (last_ckpt.empty() ? std::string("No checkpoint was written yet.") : "Last good checkpoint: " + last_ckpt));
    opt.zero_grad();
    l.loss.backward();
    opt.step(lr);
    ++iter;
    sum.losses.push_back(loss);
    sum.last_iter = iter;

    const double el = seconds_since(t0);
    const int64_t done = iter - sum.first_iter;
    const double ips = static_cast<double>(done * T.batch) / std::max(el, 1e-9);
    const bool last = iter == stop;
    if (iter % T.log_every == 0 || last) {
      log << nlohmann::json{{"iteration", iter}, {"lr", lr}, {"loss", loss}, {"acc", l.acc}, {"img_per_s", ips},
                            {"data_wait_s", data_wait}, {"elapsed_s", el}}.dump()
          << "\n";
      log.flush();
    }
    char line[256];
    const double eta = static_cast<double>(T.iters - iter) * el / static_cast<double>(std::max<int64_t>(done, 1));
    std::snprintf(line, sizeof line, "%s %lld/%lld %.2f img/s ETA %s loss %.4f acc %.1f lr %.6f",
                  train::bar(iter, T.iters).c_str(), static_cast<long long>(iter), static_cast<long long>(T.iters), ips,
                  train::fmt_time(eta).c_str(), loss, l.acc, lr);
    progress.update(line, iter, last);

    const bool at_end = iter == T.iters;
    if ((T.eval_every > 0 && iter % T.eval_every == 0) || at_end) run_eval();
    if ((T.checkpoint_every > 0 && iter % T.checkpoint_every == 0) || at_end || last) save();
  }
  progress.done();
  if (auto st = train_ds->take_label_stats(); st.pixels)
    progress.message("warning: " + std::to_string(st.pixels) + " training label pixels in " + std::to_string(st.files) +
                     " file reads are outside 0.." + std::to_string(classes - 1) + " and not 255 (ignored); first: " +
                     st.first_file);
  sum.finished = iter == T.iters;
  sum.seconds = seconds_since(t0);
  sum.images_per_s = static_cast<double>((sum.last_iter - sum.first_iter) * T.batch) / std::max(sum.seconds, 1e-9);
  sum.best_miou = best_miou;
  sum.best_iter = best_iter;
  sum.last_miou = last_miou;
  sum.last_checkpoint = last_ckpt;
  std::error_code e2;
  sum.best_checkpoint = fs::exists(best_path, e2) ? best_path : "";
  nlohmann::json j = {{"finished", sum.finished},       {"iterations", sum.last_iter},
                      {"iterations_this_run", sum.last_iter - sum.first_iter},
                      {"seconds", sum.seconds},         {"images_per_s", sum.images_per_s},
                      {"final_loss", sum.losses.empty() ? 0.0 : sum.losses.back()},
                      {"best_miou", best_miou},         {"best_iteration", best_iter},
                      {"last_miou", last_miou},         {"checkpoint", last_ckpt},
                      {"best_checkpoint", sum.best_checkpoint}};
  std::ofstream(out / "summary.json") << j.dump(2) << "\n";
  return sum;
}

}  // namespace cp2::seg
