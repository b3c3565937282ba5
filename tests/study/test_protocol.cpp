// The protocol tables (Table 6 / Table 7 forms, sample std, CSV quoting), the recipe's
// refusal of protocol-owned keys, the built-in data's write-once stamp, and the report's
// building blocks.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "../helpers.h"
#include "cp2/report/report.h"
#include "cp2/study/builtin.h"
#include "cp2/study/protocol.h"

namespace fs = std::filesystem;

namespace cp2::test {
namespace {

study::Row row(const std::string& dataset, double miou, uint64_t seed = 0) {
  study::Row r;
  r.dataset = dataset;
  r.miou = miou;
  r.seed = seed;
  r.label = "entire CP2";
  r.paper = dataset == "voc" ? "78.6 ± 0.2" : "";
  return r;
}

TEST(StudyTables, TrialsMeanAndSampleStd) {
  std::vector<study::Row> rows{row("voc", 60), row("voc", 62), row("voc", 67), row("ade20k", 10), row("ade20k", -1)};
  auto st = study::trial_stats(rows);
  ASSERT_EQ(st.size(), 2u);
  EXPECT_EQ(st[0].dataset, "voc");
  EXPECT_EQ(st[0].n, 3);
  EXPECT_NEAR(st[0].mean, 63.0, 1e-12);
  // sample std: sqrt(((-3)^2 + (-1)^2 + 4^2) / 2) = sqrt(13)
  EXPECT_NEAR(st[0].std, std::sqrt(13.0), 1e-12);
  EXPECT_EQ(st[1].n, 1);  // the unfinished trial (-1) is not counted
  EXPECT_EQ(st[1].std, 0);
  const auto t = study::format_trials_table(rows);
  EXPECT_NE(t.find("63.0 ± 3.6"), std::string::npos) << t;
  EXPECT_NE(t.find("60.0 62.0 67.0"), std::string::npos) << t;
  EXPECT_NE(t.find("78.6 ± 0.2"), std::string::npos) << t;
  EXPECT_NE(t.find("sample standard deviation"), std::string::npos) << t;
}

TEST(StudyTables, AblateTableHasThePapersColumnsAndNumbers) {
  study::Row a = row("voc", 55.25);
  a.label = "entire CP2";
  a.qt = a.copy_paste = a.dense = a.instance = true;
  study::Row b = row("voc", -1);
  b.label = "baseline (MoCo v2 base)";
  b.paper = "77.2";
  const auto t = study::format_ablate_table({a, b});
  std::istringstream in(t);
  std::string head, l1, l2;
  std::getline(in, head);
  std::getline(in, l1);
  std::getline(in, l2);
  for (const char* col : {"mode", "QT", "copy-paste", "dense", "instance", "mIoU", "paper"})
    EXPECT_NE(head.find(col), std::string::npos) << col;
  EXPECT_TRUE(std::regex_search(l1, std::regex("entire CP2 +yes +yes +yes +yes +55\\.2 +78\\.6"))) << l1;
  EXPECT_TRUE(std::regex_search(l2, std::regex("baseline \\(MoCo v2 base\\) +- +- +- +- +- +77\\.2"))) << l2;
}

TEST(StudyTables, CsvQuotesTextFields) {
  study::Row r = row("voc", 50.5);
  r.label = "a \"quoted\", label";
  r.finetune_run = "/x,y";
  const auto c = study::format_results_csv({r});
  EXPECT_EQ(c.substr(0, c.find('\n')),
            "id,label,dataset,qt,copy_paste,dense,instance,miou,paper,seed,wall_s,budget,pretrain_run,finetune_run");
  EXPECT_NE(c.find("\"a \"\"quoted\"\", label\""), std::string::npos) << c;
  EXPECT_NE(c.find(",50.50,"), std::string::npos) << c;
  EXPECT_NE(c.find("\"/x,y\""), std::string::npos) << c;
}

TEST(StudyRecipe, ProtocolOwnedKeysAndBadValuesAreRefused) {
  study::Recipe r;
  r.pretrain_sets = {"model.mode=moco"};
  expect_error([&] { r.validate(); }, {"--pset/--fset model.mode=moco", "set by the protocol"});
  r.pretrain_sets.clear();
  r.finetune_sets = {"train.init=/x.pt"};
  expect_error([&] { r.validate(); }, {"train.init"});
  r.finetune_sets.clear();
  r.scale = "huge";
  expect_error([&] { r.validate(); }, {"--scale: expected default, demo or test, found 'huge'"});
  r.scale = "test";
  r.builtin.images = 2;
  expect_error([&] { r.validate(); }, {"--images: expected >= 8, found 2"});
  r.builtin.images = 16;
  r.builtin.fashion_classes = "medium";
  expect_error([&] { r.validate(); }, {"--fashion-classes: expected fine (the 10 classes) or coarse (4 groups), found 'medium'"});
}

TEST(StudyBuiltin, WrittenOnceAndRewrittenForOtherOptions) {
  const auto dir = temp_dir("study_builtin");
  auto o = study::builtin_for_scale("test");
  const auto seg = study::builtin_seg(dir, "voc", o);
  const auto list = seg + "/ImageSets/Segmentation/train_aug.txt";
  ASSERT_TRUE(fs::exists(list));
  const auto t0 = fs::last_write_time(list);
  EXPECT_EQ(study::builtin_seg(dir, "voc", o), seg);  // same options: not rewritten
  EXPECT_EQ(fs::last_write_time(list), t0);
  o.train_scenes = 5;
  study::builtin_seg(dir, "voc", o);  // other options: rewritten
  std::ifstream in(list);
  int n = 0;
  for (std::string l; std::getline(in, l);) n += !l.empty();
  EXPECT_EQ(n, 5);
  expect_error([&] { study::builtin_seg(dir, "kitti", o); }, {"layout must be voc, cityscapes or ade20k, found 'kitti'"});
}

TEST(Report, LineChartPlotsEveryPointAndBarsEveryClass) {
  report::Series s{"loss <ins>", {1, 2, 3, 4}, {4.0, 3.5, 3.2, 3.0}};
  const auto svg = report::line_chart("loss & co", "step", {s});
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("loss &amp; co"), std::string::npos);
  EXPECT_NE(svg.find("loss &lt;ins&gt;"), std::string::npos);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(svg, m, std::regex("points=\"([^\"]*)\"")));
  const std::string pts = m[1];
  EXPECT_EQ(std::count(pts.begin(), pts.end(), ','), 4);
  EXPECT_NE(report::line_chart("empty", "step", {}).find("no data yet"), std::string::npos);
  // Tick labels carry the decimals their step needs: integer steps, two decimals for a rate.
  const auto rate = report::line_chart("lr", "step", {report::Series{"lr", {0, 100}, {0.25, 0.5}}});
  for (const char* label : {">0</text>", ">20</text>", ">100</text>", ">0.25</text>", ">0.30</text>", ">0.50</text>"})
    EXPECT_NE(rate.find(label), std::string::npos) << label << "\n" << rate;
  for (const char* label : {">100.0</text>", ">0.3</text>", ">0.5</text>"}) EXPECT_EQ(rate.find(label), std::string::npos) << label;
  // A two-step run: the step axis counts 1, 2, with no step 1.2 or 1.5.
  const auto two = report::line_chart("loss", "step", {report::Series{"loss", {1, 2}, {10, 30}}});
  EXPECT_NE(two.find(">1</text>"), std::string::npos) << two;
  EXPECT_NE(two.find(">2</text>"), std::string::npos) << two;
  for (const char* label : {">1.2</text>", ">1.5</text>", ">1.0</text>"}) EXPECT_EQ(two.find(label), std::string::npos) << label;
  // Iterations 10..120: the step nearest five ticks is 20 (six ticks), not 50 (two).
  const auto ft = report::line_chart("loss", "iteration", {report::Series{"loss", {10, 60, 120}, {0.9, 0.7, 0.5}}});
  for (const char* label : {">20</text>", ">40</text>", ">60</text>", ">80</text>", ">100</text>", ">120</text>"})
    EXPECT_NE(ft.find(label), std::string::npos) << label << "\n" << ft;
  const auto bars = report::bar_chart("IoU", {"background", "t-shirt", "bag"}, {90, 45.5, 0}, "%");
  EXPECT_EQ(std::count(bars.begin(), bars.end(), '%'), 3);
  EXPECT_NE(bars.find("45.5%"), std::string::npos);
}

// A run's status line says where a stopped run stopped, and that a resumed run's time and rate
// are its last session's.
TEST(Report, StatusLineSaysWhereARunStopped) {
  auto status = [](const std::string& name, const std::string& summary, const std::string& log) {
    const auto dir = temp_dir(name);
    std::ofstream(dir + "/log.jsonl") << log;
    std::ofstream(dir + "/summary.json") << summary;
    const auto html = report::render({dir}, report::ReportOptions{0, ""});
    const std::string head = "</code></h3>\n<p class=note>";
    const size_t at = html.find(head);
    if (at == std::string::npos) return std::string("no status line");
    const size_t b = at + head.size();
    return html.substr(b, html.find("</p>", b) - b);
  };
  EXPECT_EQ(status("report_sigint",
                   R"({"finished": false, "stopped_by": "SIGINT", "steps": 34, "steps_this_run": 14, "seconds": 9.07,)"
                   R"( "images_per_s": 12.35, "error": null})",
                   "{\"step\": 33, \"loss\": 3.0}\n{\"step\": 34, \"loss\": 2.9}\n"),
            "not finished (stopped by SIGINT at step 34); last session 14 steps in 9.07 s, 12.3 img/s");
  EXPECT_EQ(status("report_sigusr1",  // a scheduler's warning ahead of its time limit
                   R"({"finished": false, "stopped_by": "SIGUSR1", "iterations": 750, "iterations_this_run": 750,)"
                   R"( "seconds": 80.0, "images_per_s": 75.0, "error": null})",
                   "{\"iteration\": 750, \"loss\": 0.5}\n"),
            "not finished (stopped by SIGUSR1 at iteration 750); 80.0 s, 75.0 img/s");
  EXPECT_EQ(status("report_max",
                   R"({"finished": false, "stopped_by": "max", "iterations": 200, "iterations_this_run": 200,)"
                   R"( "seconds": 61.5, "images_per_s": 26.0, "error": null})",
                   "{\"iteration\": 200, \"loss\": 0.7}\n"),
            "not finished (stopped at iteration 200 by --max-iters); 61.5 s, 26.0 img/s");
  EXPECT_EQ(status("report_done",
                   R"({"finished": true, "stopped_by": "", "steps": 40, "steps_this_run": 40, "seconds": 20.0,)"
                   R"( "images_per_s": 16.0, "error": null})",
                   "{\"step\": 40, \"loss\": 2.0}\n"),
            "finished; 20.0 s, 16.0 img/s");
}

TEST(Report, RefusesFoldersThatAreNotRuns) {
  const auto dir = temp_dir("report_not_run");
  expect_error([&] { report::render({dir}, {}); }, {dir, "neither a run folder"});
  expect_error([&] { report::render({dir + "/missing"}, {}); }, {"missing: not a folder"});
}

}  // namespace
}  // namespace cp2::test
