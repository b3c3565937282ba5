#include "cp2/report/report.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <set>
#include <sstream>

#include "cp2/common.h"
#include "cp2/config/fields.h"
#include "cp2/data/loader.h"
#include "cp2/io/atomic_file.h"
#include "cp2/pretrain/config.h"
#include "cp2/seg/classes.h"
#include "cp2/seg/config.h"
#include "cp2/seg/dataset.h"
#include "cp2/seg/inference.h"
#include "cp2/seg/model.h"
#include "cp2/seg/predict.h"
#include "cp2/study/protocol.h"

namespace cp2::report {

namespace fs = std::filesystem;
using nlohmann::json;

std::string html_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

namespace {

const char* kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};

std::string num(double v) {
  char b[32];
  const double a = std::fabs(v);
  std::snprintf(b, sizeof b, a != 0 && (a < 0.01 || a >= 1e5) ? "%.2g" : a < 10 ? "%.3g" : "%.1f", v);
  return b;
}

struct Ticks {
  std::vector<double> at;
  double step = 1;
};

// "Nice" axis ticks covering [lo, hi]; whole numbers only on a counting axis (steps, iterations).
Ticks ticks(double lo, double hi, bool whole = false, int want = 5) {
  if (!(hi > lo)) hi = lo + 1;
  // The step of 1, 2 or 5 x 10^k whose tick count is nearest `want` (a 10..120 axis: 20, six
  // ticks; the first step at or above the raw one would be 50, two ticks).
  const double raw = (hi - lo) / want, mag = std::pow(10, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {2.0, 5.0, 10.0})
    if (std::fabs((hi - lo) / (m * mag) - want) <= std::fabs((hi - lo) / step - want)) step = m * mag;
  if (whole) step = std::max(step, 1.0);
  Ticks t{{}, step};
  for (double v = std::ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) t.at.push_back(std::fabs(v) < step * 1e-9 ? 0 : v);
  return t;
}

// Tick labels with as many decimals as their step needs, the same for every tick of an axis:
// steps 10, 20, 30 (not 10.0); rates 0.0465, 0.0470 (not 0.0465, 0.047).
std::vector<std::string> tick_labels(const Ticks& t) {
  double top = 0;
  for (double v : t.at) top = std::max(top, std::fabs(v));
  const int decimals = std::max(0, static_cast<int>(std::ceil(-std::log10(t.step) - 1e-6)));
  std::vector<std::string> out;
  for (double v : t.at) {
    char b[32];
    if (top >= 1e6 || decimals > 6)
      std::snprintf(b, sizeof b, "%.3g", v);
    else
      std::snprintf(b, sizeof b, "%.*f", decimals, v);
    out.push_back(b);
  }
  return out;
}

std::string data_uri_png(const at::Tensor& hwc_rgb_u8) {
  auto t = hwc_rgb_u8.contiguous().cpu();
  cv::Mat rgb(static_cast<int>(t.size(0)), static_cast<int>(t.size(1)), CV_8UC3, t.data_ptr<uint8_t>()), bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  std::vector<uchar> buf;
  cv::imencode(".png", bgr, buf);
  static const char* b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string o = "data:image/png;base64,";
  size_t i = 0;
  for (; i + 2 < buf.size(); i += 3) {
    const unsigned v = buf[i] << 16 | buf[i + 1] << 8 | buf[i + 2];
    for (int s : {18, 12, 6, 0}) o += b64[(v >> s) & 63];
  }
  if (i < buf.size()) {
    const unsigned v = buf[i] << 16 | (i + 1 < buf.size() ? buf[i + 1] << 8 : 0);
    o += b64[(v >> 18) & 63];
    o += b64[(v >> 12) & 63];
    o += i + 1 < buf.size() ? b64[(v >> 6) & 63] : '=';
    o += '=';
  }
  return o;
}

std::string img_tag(const at::Tensor& hwc, const std::string& caption, int height = 96) {
  return "<figure><img style=\"height:" + std::to_string(height) + "px;image-rendering:pixelated\" src=\"" +
         data_uri_png(hwc) + "\" alt=\"" + html_escape(caption) + "\"><figcaption>" + html_escape(caption) +
         "</figcaption></figure>";
}

std::vector<json> read_log(const fs::path& run) {
  std::vector<json> out;
  std::ifstream in(run / "log.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    try {
      out.push_back(json::parse(line));
    } catch (const std::exception&) {
      // A torn last line of a killed run: the records before it stand.
    }
  }
  return out;
}

json read_json(const fs::path& p) {
  std::ifstream in(p);
  if (!in) return json();
  try {
    return json::parse(in);
  } catch (const std::exception&) {
    return json();
  }
}

Series series(const std::vector<json>& log, const char* xkey, const char* ykey, const std::string& name,
              bool dashed = false) {
  Series s{name, {}, {}, dashed};
  for (const auto& r : log)
    if (r.contains(xkey) && r.contains(ykey) && r[ykey].is_number()) {
      s.x.push_back(r[xkey].get<double>());
      s.y.push_back(r[ykey].get<double>());
    }
  return s;
}

std::string summary_line(const json& sum) {
  if (!sum.is_object()) return "no summary.json (running, or killed hard)";
  const bool finished = sum.value("finished", false);
  std::string s = finished ? "finished" : "not finished";
  // Where it stopped, and the last session's share of a resumed run ("seconds" and
  // "images_per_s" are that session's, not the run's).
  const bool pre = sum.contains("steps");
  const std::string unit = pre ? "step" : "iteration";
  const auto count = [&](const char* key) { return sum.contains(key) && sum[key].is_number() ? sum[key].get<int64_t>() : -1; };
  const int64_t at = count(pre ? "steps" : "iterations"), in_session = count(pre ? "steps_this_run" : "iterations_this_run");
  const std::string by = sum.contains("stopped_by") && sum["stopped_by"].is_string() ? sum["stopped_by"].get<std::string>() : "";
  if (!finished && at >= 0 && by.rfind("SIG", 0) == 0)
    s += " (stopped by " + by + " at " + unit + " " + std::to_string(at) + ")";
  else if (!finished && at >= 0 && by == "max")
    s += " (stopped at " + unit + " " + std::to_string(at) + " by " + (pre ? "--max-steps" : "--max-iters") + ")";
  if (sum.contains("error") && sum["error"].is_string()) s += "; error: " + sum["error"].get<std::string>();
  if (sum.contains("seconds") && sum["seconds"].is_number()) {
    s += "; ";
    if (in_session >= 0 && in_session < at)
      s += "last session " + count_of(in_session, unit) + " in ";
    s += num(sum["seconds"].get<double>()) + " s";
  }
  if (sum.contains("images_per_s") && sum["images_per_s"].is_number())
    s += ", " + num(sum["images_per_s"].get<double>()) + " img/s";
  if (sum.contains("best_miou") && sum["best_miou"].is_number())
    s += "; best mIoU " + num(sum["best_miou"].get<double>()) + " % at iteration " +
         std::to_string(sum.value("best_iteration", 0));
  return s;
}

// Denormalised N x 3 x H x W view -> H x W x 3 uint8.
at::Tensor to_rgb(const at::Tensor& view, const std::array<double, 3>& mean, const std::array<double, 3>& std) {
  auto m = torch::tensor({mean[0], mean[1], mean[2]}, torch::kFloat).view({3, 1, 1});
  auto s = torch::tensor({std[0], std[1], std[2]}, torch::kFloat).view({3, 1, 1});
  return (view.cpu().to(torch::kFloat) * s + m).mul(255).clamp(0, 255).round().to(torch::kUInt8).permute({1, 2, 0}).contiguous();
}
at::Tensor mask_rgb(const at::Tensor& mask) {
  return mask.cpu().gt(0.5).to(torch::kUInt8).mul(255).unsqueeze(2).expand({-1, -1, 3}).contiguous();
}

// The run's settings from its config.yaml (false, defaults kept, when it has none).
template <class Config>
bool stored_config(const fs::path& run, Config& cfg) {
  if (!fs::exists(run / "config.yaml")) return false;
  auto f = cfg.fields();
  config::Sources src;
  src.file = (run / "config.yaml").string();
  config::apply_sources(f, src);
  return true;
}

std::string pretrain_section(const fs::path& run, const std::vector<json>& log, int pictures) {
  std::ostringstream h;
  pretrain::PretrainConfig cfg;
  const bool have_cfg = stored_config(run, cfg);
  h << "<p>mode <b>" << html_escape(cfg.model.mode) << "</b>, ResNet-" << cfg.model.arch << ", views "
    << cfg.aug.view.size << " px, output stride " << cfg.model.output_stride << ", batch " << cfg.train.batch << ", queue "
    << cfg.model.queue << ", " << count_of(cfg.train.epochs, "epoch")
    << (cfg.train.init.empty() ? "" : ", Quick Tuning from <code>" + html_escape(cfg.train.init) + "</code>") << "</p>\n";
  std::vector<Series> loss{series(log, "step", "loss", "total")};
  for (auto [k, n] : {std::pair{"loss_ins", "instance"}, {"loss_dense", "dense"}}) {
    auto s = series(log, "step", k, n);
    if (std::any_of(s.y.begin(), s.y.end(), [](double v) { return v != 0; })) loss.push_back(s);
  }
  h << "<div class=charts>" << line_chart("loss", "step", loss);
  std::vector<Series> acc;
  const auto& mode = pretrain::mode_spec(cfg.model.mode);
  if (mode.instance) {
    acc.push_back(series(log, "step", "acc1", "instance top-1"));
    acc.push_back(series(log, "step", "acc5", "instance top-5"));
    auto c = acc[0];
    c.name = "top-1 chance 100/(K+1)";
    c.dashed = true;
    std::fill(c.y.begin(), c.y.end(), 100.0 / static_cast<double>(cfg.model.queue + 1));
    acc.push_back(c);
  }
  if (mode.dense) {
    acc.push_back(series(log, "step", "acc_dense", "dense"));
    acc.push_back(series(log, "step", "acc_dense_chance", "dense chance", true));
    // Logs from before the dense-match accuracy have none: no empty lines then.
    for (auto s : {series(log, "step", "acc_dense_match", "dense match"),
                   series(log, "step", "acc_dense_match_chance", "dense match chance", true)})
      if (!s.x.empty()) acc.push_back(s);
  }
  if (!acc.empty()) h << line_chart("accuracy (%)", "step", acc);
  h << line_chart("learning rate", "step", {series(log, "step", "lr", "lr")}) << "</div>\n";
  if (pictures > 0 && have_cfg) {
    try {
      auto aug = cfg.aug_options();
      auto ds = std::make_shared<data::PretrainDataset>(cfg.data.root, aug, cfg.train.seed);
      auto lo = cfg.loader_options();
      lo.batch = std::min<int64_t>(pictures, std::max<int64_t>(1, ds->size()));
      lo.workers = 0;
      data::PretrainLoader loader(ds, lo);
      loader.start(0, 0, 1);
      auto b = loader.next();
      if (b) {
        h << "<h4>composite views (query) with their paste masks, and the key views (epoch 1's first images)</h4><div class=grid>";
        for (int64_t i = 0; i < b->im_q.size(0); ++i)
          h << "<div class=cell>" << img_tag(to_rgb(b->im_q[i], cfg.aug.view.mean, cfg.aug.view.std), "query " + std::to_string(i + 1))
            << img_tag(mask_rgb(b->mask_q[i]), "query mask") << img_tag(to_rgb(b->im_k[i], cfg.aug.view.mean, cfg.aug.view.std), "key")
            << img_tag(mask_rgb(b->mask_k[i]), "key mask") << "</div>";
        h << "</div>\n";
      }
    } catch (const std::exception& e) {
      h << "<p class=note>composites not shown: " << html_escape(e.what()) << "</p>\n";
    }
  }
  return h.str();
}

std::string finetune_section(const fs::path& run, const std::vector<json>& log, int pictures) {
  std::ostringstream h;
  seg::FinetuneConfig cfg;
  const bool have_cfg = stored_config(run, cfg);
  h << "<p>DeepLabV3 ResNet-" << cfg.model.arch << " on " << html_escape(cfg.data.type) << ", " << cfg.train.iters
    << " iterations, batch " << cfg.train.batch << ", crop " << cfg.pipeline.crop_h << "x" << cfg.pipeline.crop_w
    << ", init " << (cfg.train.init.empty() ? "scratch" : "<code>" + html_escape(cfg.train.init) + "</code>") << "</p>\n";
  std::vector<json> train_log, evals;
  for (const auto& r : log) (r.contains("miou") ? evals : train_log).push_back(r);
  h << "<div class=charts>" << line_chart("training loss", "iteration", {series(train_log, "iteration", "loss", "loss")})
    << line_chart("val mIoU (%)", "iteration", {series(evals, "iteration", "miou", "mIoU"), series(evals, "iteration", "macc", "mAcc")});
  // Per-class IoU of the best evaluation.
  const json* best = nullptr;
  for (const auto& e : evals)
    if (e["miou"].is_number() && (!best || e["miou"].get<double>() > (*best)["miou"].get<double>())) best = &e;
  std::unique_ptr<seg::SegDataset> val;
  std::string data_note;
  if (have_cfg && !cfg.data.root.empty()) {
    try {
      val = std::make_unique<seg::SegDataset>(cfg.data.dataset(false));
    } catch (const std::exception& e) {
      data_note = e.what();
    }
  }
  if (best && best->contains("iou")) {
    std::vector<std::string> names;
    std::vector<double> vals;
    const auto& iou = (*best)["iou"];
    for (size_t c = 0; c < iou.size(); ++c) {
      if (!iou[c].is_number()) continue;
      names.push_back(val && c < val->classes().size() ? val->classes()[c] : "class " + std::to_string(c));
      vals.push_back(iou[c].get<double>());
    }
    h << bar_chart("IoU per class at iteration " + std::to_string((*best)["iteration"].get<int64_t>()) + " (%)", names, vals, "%");
  }
  h << "</div>\n";
  if (pictures > 0 && val && val->size() > 0) {
    try {
      const auto file = seg::resolve_model_file(run.string());
      auto m = seg::load_finetuned(file);
      torch::NoGradGuard ng;
      const auto eo = cfg.eval_options();
      auto pal = val->palette();
      h << "<h4>predictions (" << html_escape(fs::path(file).filename().string())
        << ") beside the ground truth, first validation images</h4><div class=grid>";
      for (int64_t i = 0; i < std::min<int64_t>(pictures, val->size()); ++i) {
        auto img = val->image(i);
        auto lab = val->label(i, img.size(0), img.size(1));
        auto pred = eval::predicted_class(seg::predict_probs(*m.model, img, eo), 0).to(torch::kUInt8).cpu();
        auto black = torch::zeros_like(img);
        h << "<div class=cell>" << img_tag(img, fs::path(val->image_path(i)).filename().string())
          << img_tag(seg::overlay(black, lab, pal, 1.0), "ground truth")
          << img_tag(seg::overlay(black, pred, pal, 1.0), "prediction") << "</div>";
      }
      h << "</div>\n";
    } catch (const std::exception& e) {
      h << "<p class=note>predictions not shown: " << html_escape(e.what()) << "</p>\n";
    }
  } else if (pictures > 0 && !data_note.empty()) {
    h << "<p class=note>predictions not shown: " << html_escape(data_note) << "</p>\n";
  }
  return h.str();
}

std::string run_section(const fs::path& run, int pictures) {
  const auto log = read_log(run);
  const auto sum = read_json(run / "summary.json");
  bool finetune = false, pretrain = false;
  for (const auto& r : log) {
    finetune |= r.contains("iteration");
    pretrain |= r.contains("step");
  }
  if (!finetune && !pretrain) {
    // No records yet: tell the kind from the stored config's sections.
    std::ifstream in(run / "config.yaml");
    std::stringstream t;
    t << in.rdbuf();
    finetune = t.str().find("pipeline:") != std::string::npos;
  }
  std::ostringstream h;
  h << "<section><h3>" << (finetune ? "finetuning" : "pretraining") << " run <code>" << html_escape(run.string())
    << "</code></h3>\n<p class=note>" << html_escape(summary_line(sum)) << "</p>\n";
  h << (finetune ? finetune_section(run, log, pictures) : pretrain_section(run, log, pictures));
  h << "</section>\n";
  return h.str();
}

std::string check(bool b) { return b ? "&#10003;" : ""; }

std::string study_section(const fs::path& dir, const json& res, int pictures, std::set<std::string>& done) {
  std::ostringstream h;
  const std::string kind = res.value("kind", "");
  const auto& rows = res["rows"];
  if (kind == "ablate") {
    h << "<section><h2>Table 6: ablation of CP²'s parts (<code>" << html_escape(dir.string()) << "</code>)</h2>\n"
      << "<p>Every row Quick-Tuned from the same base <code>" << html_escape(res.value("base", "")) << "</code> and finetuned with one recipe; "
      << (res.value("complete", false) ? "complete." : "<b>incomplete</b> (rerun the command to continue).") << "</p>\n"
      << "<table><tr><th>mode</th><th>QT</th><th>copy-paste</th><th>dense loss</th><th>instance loss</th><th>mIoU (%)</th><th>paper (R50, VOC)</th><th>wall (s)</th></tr>\n";
    std::vector<std::string> names;
    std::vector<double> vals;
    for (const auto& r : rows) {
      const bool has = r["miou"].is_number();
      h << "<tr><td>" << html_escape(r.value("label", "")) << "</td><td>" << check(r.value("qt", false)) << "</td><td>"
        << check(r.value("copy_paste", false)) << "</td><td>" << check(r.value("dense", false)) << "</td><td>"
        << check(r.value("instance", false)) << "</td><td>" << (has ? num(r["miou"].get<double>()) : "-") << "</td><td>"
        << html_escape(r.value("paper", "")) << "</td><td>" << num(r.value("wall_s", 0.0)) << "</td></tr>\n";
      if (has) {
        names.push_back(r.value("label", ""));
        vals.push_back(r["miou"].get<double>());
      }
    }
    h << "</table>\n";
    if (!vals.empty()) h << bar_chart("val mIoU per row (%)", names, vals, "%");
  } else {
    h << "<section><h2>Table 7: mean ± std over trials (<code>" << html_escape(dir.string()) << "</code>)</h2>\n"
      << "<table><tr><th>dataset</th><th>mIoU mean ± std (%)</th><th>n</th><th>trials</th><th>paper (R50)</th></tr>\n";
    // The same statistics as the printed table (study::trial_stats), from results.json's rows.
    std::vector<study::Row> trials;
    for (const auto& r : rows) {
      study::Row t;
      t.dataset = r.value("dataset", "");
      t.paper = r.value("paper", "");
      t.miou = r["miou"].is_number() ? r["miou"].get<double>() : -1;
      trials.push_back(t);
    }
    for (const auto& m : study::trial_stats(trials)) {
      std::string each;
      for (const auto& t : trials)
        if (t.dataset == m.dataset && t.miou >= 0) each += (each.empty() ? "" : ", ") + num(t.miou);
      h << "<tr><td>" << html_escape(m.dataset) << "</td><td>" << num(m.mean) + " ± " + num(m.std) << "</td><td>" << m.n
        << "</td><td>" << each << "</td><td>" << html_escape(m.paper) << "</td></tr>\n";
    }
    h << "</table><p class=note>std: sample standard deviation (n - 1).</p>\n";
  }
  h << "</section>\n";
  for (const auto& r : rows)
    for (const char* k : {"pretrain_run", "finetune_run"}) {
      const std::string p = r.value(k, "");
      if (!p.empty() && fs::exists(p) && done.insert(p).second) h << run_section(p, pictures);
    }
  return h.str();
}

}  // namespace

std::string line_chart(const std::string& title, const std::string& xlabel, const std::vector<Series>& series) {
  // Legend entries flow into rows under the plot; the chart grows by a row each.
  const double W = 420, L = 52, R = 10, T = 24;
  std::vector<std::pair<double, int>> legend;  // x, row
  {
    double lx = L;
    int row = 0;
    for (const auto& s : series) {
      const double w = 18 + 6.0 * static_cast<double>(s.name.size());
      if (lx + w > W && lx > L) {
        lx = L;
        ++row;
      }
      legend.emplace_back(lx, row);
      lx += w;
    }
  }
  const int rows = legend.empty() ? 1 : legend.back().second + 1;
  const double B = 56 + 12.0 * (rows - 1), H = 240 + 12.0 * (rows - 1);
  double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
  for (const auto& s : series)
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!std::isfinite(s.y[i])) continue;
      x0 = std::min(x0, s.x[i]);
      x1 = std::max(x1, s.x[i]);
      y0 = std::min(y0, s.y[i]);
      y1 = std::max(y1, s.y[i]);
    }
  std::ostringstream o;
  o << "<svg class=chart xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H << "\" viewBox=\"0 0 " << W
    << " " << H << "\"><text x=\"" << W / 2 << "\" y=\"16\" text-anchor=\"middle\" font-weight=\"bold\">" << html_escape(title)
    << "</text>";
  if (x0 > x1) {
    o << "<text x=\"" << W / 2 << "\" y=\"" << H / 2 << "\" text-anchor=\"middle\" fill=\"#888\">no data yet</text></svg>";
    return o.str();
  }
  if (x1 == x0) x1 = x0 + 1;
  if (y1 - y0 < 1e-9 * std::max(1.0, std::fabs(y1))) {
    y0 -= 0.5 * std::max(1e-3, std::fabs(y0) * 0.01);
    y1 += 0.5 * std::max(1e-3, std::fabs(y1) * 0.01);
  }
  bool whole_x = true;
  for (const auto& s : series)
    for (double v : s.x) whole_x = whole_x && v == std::floor(v);
  const auto yt = ticks(y0, y1), xt = ticks(x0, x1, whole_x);
  y0 = std::min(y0, yt.at.front());
  y1 = std::max(y1, yt.at.back());
  auto X = [&](double v) { return L + (v - x0) / (x1 - x0) * (W - L - R); };
  auto Y = [&](double v) { return H - B - (v - y0) / (y1 - y0) * (H - T - B); };
  o << "<rect x=\"" << L << "\" y=\"" << T << "\" width=\"" << W - L - R << "\" height=\"" << H - T - B
    << "\" fill=\"#fff\" stroke=\"#999\"/>";
  const auto ylabels = tick_labels(yt), xlabels = tick_labels(xt);
  for (size_t i = 0; i < yt.at.size(); ++i)
    o << "<line x1=\"" << L << "\" x2=\"" << W - R << "\" y1=\"" << Y(yt.at[i]) << "\" y2=\"" << Y(yt.at[i])
      << "\" stroke=\"#eee\"/><text x=\"" << L - 4 << "\" y=\"" << Y(yt.at[i]) + 4
      << "\" text-anchor=\"end\" font-size=\"10\">" << ylabels[i] << "</text>";
  for (size_t i = 0; i < xt.at.size(); ++i)
    if (xt.at[i] >= x0 && xt.at[i] <= x1)
      o << "<text x=\"" << X(xt.at[i]) << "\" y=\"" << H - B + 14 << "\" text-anchor=\"middle\" font-size=\"10\">"
        << xlabels[i] << "</text>";
  o << "<text x=\"" << (L + W - R) / 2 << "\" y=\"" << H - B + 28 << "\" text-anchor=\"middle\" font-size=\"11\">"
    << html_escape(xlabel) << "</text>";
  int k = 0;
  for (const auto& s : series) {
    const double lx = legend[k].first, ly = H - 16 - 12.0 * (rows - 1 - legend[k].second);
    const char* c = kColours[k++ % 8];
    std::ostringstream pts;
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i)
      if (std::isfinite(s.y[i])) pts << X(s.x[i]) << "," << Y(s.y[i]) << " ";
    o << "<polyline fill=\"none\" stroke=\"" << c << "\" stroke-width=\"1.6\"" << (s.dashed ? " stroke-dasharray=\"5,3\"" : "")
      << " points=\"" << pts.str() << "\"/>";
    if (s.x.size() == 1)
      o << "<circle cx=\"" << X(s.x[0]) << "\" cy=\"" << Y(s.y[0]) << "\" r=\"3\" fill=\"" << c << "\"/>";
    o << "<rect x=\"" << lx << "\" y=\"" << ly << "\" width=\"10\" height=\"3\" fill=\"" << c << "\"/><text x=\"" << lx + 13
      << "\" y=\"" << ly + 5 << "\" font-size=\"10\">" << html_escape(s.name) << "</text>";
  }
  o << "</svg>";
  return o.str();
}

std::string bar_chart(const std::string& title, const std::vector<std::string>& labels, const std::vector<double>& values,
                      const std::string& unit) {
  const double rowh = 18, L = 190, W = 460, T = 24;
  const double H = T + rowh * static_cast<double>(labels.size()) + 10;
  double vmax = 0;
  for (double v : values) vmax = std::max(vmax, v);
  if (vmax <= 0) vmax = 1;
  std::ostringstream o;
  o << "<svg class=chart xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H << "\" viewBox=\"0 0 " << W
    << " " << H << "\"><text x=\"" << W / 2 << "\" y=\"16\" text-anchor=\"middle\" font-weight=\"bold\">" << html_escape(title)
    << "</text>";
  for (size_t i = 0; i < labels.size() && i < values.size(); ++i) {
    const double y = T + rowh * static_cast<double>(i), w = std::max(0.0, values[i]) / vmax * (W - L - 60);
    o << "<text x=\"" << L - 6 << "\" y=\"" << y + 12 << "\" text-anchor=\"end\" font-size=\"11\">" << html_escape(labels[i])
      << "</text><rect x=\"" << L << "\" y=\"" << y + 2 << "\" width=\"" << w << "\" height=\"" << rowh - 5 << "\" fill=\""
      << kColours[0] << "\"/><text x=\"" << L + w + 4 << "\" y=\"" << y + 12 << "\" font-size=\"11\">" << num(values[i])
      << html_escape(unit) << "</text>";
  }
  o << "</svg>";
  return o.str();
}

std::string render(const std::vector<std::string>& inputs, const ReportOptions& o) {
  if (inputs.empty()) throw Error("report: no run folders given");
  std::ostringstream body;
  std::set<std::string> done;
  for (const auto& in : inputs) {
    const fs::path p = fs::absolute(in).lexically_normal();
    if (!fs::is_directory(p)) throw Error(in + ": not a folder (expected a run folder or an ablate/trials folder)");
    const auto res = read_json(p / "results.json");
    if (res.is_object() && res.contains("rows")) {
      body << study_section(p, res, o.pictures, done);
    } else if (fs::exists(p / "log.jsonl") || fs::exists(p / "config.yaml")) {
      if (done.insert(p.string()).second) body << run_section(p, o.pictures);
    } else {
      throw Error(in + ": neither a run folder (config.yaml, log.jsonl) nor an ablate/trials folder (results.json)");
    }
  }
  std::string title = o.title;
  if (title.empty()) {
    for (const auto& in : inputs) title += (title.empty() ? "" : ", ") + fs::path(in).filename().string();
    title = "cp2 report: " + title;
  }
  std::ostringstream h;
  h << "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" << html_escape(title) << "</title>\n<style>"
    << "body{font-family:sans-serif;margin:24px;color:#222;background:#fafafa}"
    << "table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #bbb;padding:4px 10px;text-align:center}"
    << "th{background:#e8eef6}td:first-child{text-align:left}.charts{display:flex;flex-wrap:wrap;gap:10px}"
    << ".chart{background:#fff;border:1px solid #ddd}.grid{display:flex;flex-wrap:wrap;gap:14px}"
    << ".cell{display:flex;gap:4px;background:#fff;border:1px solid #ddd;padding:4px}figure{margin:0;text-align:center}img{border:1px solid #ccc}"
    << "figcaption{font-size:10px;color:#555}.note{color:#555;font-size:13px}section{margin-bottom:28px}"
    << "</style></head><body>\n<h1>" << html_escape(title) << "</h1>\n" << body.str() << "</body></html>\n";
  return h.str();
}

void write(const std::string& path, const std::vector<std::string>& inputs, const ReportOptions& o) {
  io::write_file_atomic(path, render(inputs, o));
}

}  // namespace cp2::report
