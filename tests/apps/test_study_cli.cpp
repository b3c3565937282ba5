// cp2 ablate / trials / report as users run them, at the tiny `--scale test` recipe:
// a protocol killed mid-run resumes (finished runs not redone, the interrupted one
// continued), trials' mean ± std agrees with every trial's number, and the report
// renders in headless Chromium with its tables and pictures.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <set>

#include "../helpers.h"

namespace fs = std::filesystem;

namespace cp2::test {
namespace {

// The ETA a protocol's progress line gives for the stage line starting with `stage`.
std::string eta_of(const std::string& out, const std::string& stage) {
  const auto at = out.find(stage);
  if (at == std::string::npos) return "(no line " + stage + ")";
  const auto e = out.find("ETA ", at), close = out.find(')', e);
  return out.substr(e + 4, close - e - 4);
}

TEST(StudyCli, AblateKilledMidRunResumesWithoutRedoingFinishedRuns) {
  const auto out = temp_dir("study_ablate_kill");
  const std::string cmd = std::string(CP2_BINARY) + " ablate --out " + out +
                          " --scale test --base-epochs 1 --rows base,cp2 --quiet --threads 2 --pictures 1 --pset train.epochs=3";
  // SIGTERM once the base's finetuning finished and the CP² Quick Tuning logged a step.
  const auto res = sh("( " + cmd + " > " + out + "/first.txt 2>&1 & pid=$!; for i in $(seq 1200); do "
                      "[ -f " + out + "/ft_base/summary.json ] && grep -q '\"step\"' " + out +
                      "/qt_cp2/log.jsonl 2>/dev/null && break; sleep 0.05; done; kill -TERM $pid; wait $pid; echo rc=$? )");
  ASSERT_NE(res.find("rc=143"), std::string::npos) << res << read_text(out + "/first.txt");
  const auto first = nlohmann::json::parse(read_text(out + "/results.json"));
  EXPECT_FALSE(first["complete"].get<bool>());
  EXPECT_TRUE(first["rows"][0]["miou"].is_number());  // the base row finished before the kill
  EXPECT_TRUE(first["rows"][1]["miou"].is_null());
  const auto base_t = fs::last_write_time(out + "/base/summary.json");
  const auto ft_base_t = fs::last_write_time(out + "/ft_base/summary.json");
  const auto ft_base_best = read_text(out + "/ft_base/best.pt");

  auto r = run_cli(cmd.substr(std::string(CP2_BINARY).size() + 1));
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("base: finished before, skipped"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("ft_base: finished before, skipped"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("qt_cp2: finished before, skipped"), std::string::npos) << r.out;  // it was interrupted
  EXPECT_EQ(fs::last_write_time(out + "/base/summary.json"), base_t);
  EXPECT_EQ(fs::last_write_time(out + "/ft_base/summary.json"), ft_base_t);
  EXPECT_EQ(read_text(out + "/ft_base/best.pt"), ft_base_best);
  // The interrupted Quick Tuning run continued to its last step (3 epochs x 2 steps here;
  // the base keeps its --base-epochs).
  auto qt = nlohmann::json::parse(read_text(out + "/qt_cp2/summary.json"));
  EXPECT_TRUE(qt["finished"].get<bool>());
  EXPECT_EQ(qt["steps"].get<int64_t>(), 6);
  EXPECT_LT(qt["steps_this_run"].get<int64_t>(), 6);  // resumed, not restarted
  EXPECT_EQ(nlohmann::json::parse(read_text(out + "/base/summary.json"))["steps"].get<int64_t>(), 2);
  const auto res2 = nlohmann::json::parse(read_text(out + "/results.json"));
  EXPECT_TRUE(res2["complete"].get<bool>());
  ASSERT_EQ(res2["rows"].size(), 2u);
  for (const auto& row : res2["rows"]) {
    EXPECT_TRUE(row["miou"].is_number()) << row.dump();
    EXPECT_GT(row["wall_s"].get<double>(), 0) << row.dump();
    EXPECT_TRUE(fs::exists(row["finetune_run"].get<std::string>() + "/best.pt")) << row.dump();
  }
  EXPECT_EQ(res2["rows"][1]["pretrain_run"], out + "/qt_cp2");
  const auto table = read_text(out + "/table.txt");
  EXPECT_NE(table.find("entire CP2"), std::string::npos) << table;
  EXPECT_NE(table.find("78.6"), std::string::npos) << table;
  EXPECT_NE(r.out.find(table), std::string::npos) << r.out;  // printed as written
  const auto csv = read_text(out + "/results.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 3) << csv;
  EXPECT_TRUE(fs::exists(out + "/report.html"));
  // A third run: everything skipped, same table.
  r = run_cli(cmd.substr(std::string(CP2_BINARY).size() + 1));
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("ft_cp2: finished before, skipped"), std::string::npos) << r.out;
  EXPECT_EQ(read_text(out + "/table.txt"), table);
  // A stage killed before its first checkpoint (only its log written): the next run starts
  // that stage again instead of refusing its folder, and keeps the old log aside.
  fs::remove_all(out + "/ft_cp2/checkpoints");
  fs::remove(out + "/ft_cp2/best.pt");
  fs::remove(out + "/ft_cp2/summary.json");
  const auto old_log = read_text(out + "/ft_cp2/log.jsonl");
  ASSERT_FALSE(old_log.empty());
  r = run_cli(cmd.substr(std::string(CP2_BINARY).size() + 1));
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("/ft_cp2: its run stopped before the first checkpoint; starting it again (its log is now "
                       "log.interrupted.jsonl)"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(read_text(out + "/ft_cp2/log.interrupted.jsonl"), old_log);
  EXPECT_TRUE(fs::exists(out + "/ft_cp2/best.pt"));
  EXPECT_TRUE(nlohmann::json::parse(read_text(out + "/results.json"))["complete"].get<bool>());
}

TEST(StudyCli, TrialsMeanAndStdAgreeWithEachTrial) {
  const auto out = temp_dir("study_trials");
  auto r = run_cli("trials --out " + out + " --scale test --base-epochs 1 --seeds 2 --datasets voc,cityscapes --vary finetune "
                   "--quiet --threads 2 --pictures 0");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_TRUE(fs::exists(out + "/qt_seed0"));
  EXPECT_FALSE(fs::exists(out + "/qt_seed1"));  // --vary finetune: one Quick Tuning run
  // base + one Quick Tuning + 4 finetunings: the last stage is 6 of 6.
  EXPECT_NE(r.out.find("[trials 6/6] ft_cityscapes_seed1: finetuning"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("/6] qt_seed0: finished before"), std::string::npos) << r.out;
  // The ETA: "?" while a stage kind has no finished run to measure; at the last stage, the
  // mean of the three finished finetunings (a time, not "?").
  EXPECT_EQ(eta_of(r.out, "[trials 1/6] base:"), "?") << r.out;
  const auto eta = eta_of(r.out, "[trials 6/6] ft_cityscapes_seed1:");
  EXPECT_TRUE(eta.size() == 5 && eta[2] == ':' && eta != "00:00") << r.out;
  const auto res = nlohmann::json::parse(read_text(out + "/results.json"));
  ASSERT_EQ(res["rows"].size(), 4u);
  std::map<std::string, std::vector<double>> by;
  std::set<uint64_t> seeds;
  for (const auto& row : res["rows"]) {
    ASSERT_TRUE(row["miou"].is_number()) << row.dump();
    by[row["dataset"].get<std::string>()].push_back(row["miou"].get<double>());
    seeds.insert(row["seed"].get<uint64_t>());
  }
  EXPECT_EQ(seeds, (std::set<uint64_t>{0, 1}));
  ASSERT_EQ(by.size(), 2u);
  const auto table = read_text(out + "/table.txt");
  for (auto& [d, v] : by) {
    const double mean = (v[0] + v[1]) / 2, sd = std::fabs(v[0] - v[1]) / std::sqrt(2.0);
    char want[64];
    std::snprintf(want, sizeof want, "%.1f ± %.1f", mean, sd);
    EXPECT_NE(table.find(d), std::string::npos) << table;
    EXPECT_NE(table.find(want), std::string::npos) << want << "\n" << table;
  }
  EXPECT_NE(table.find("77.4 ± 0.2"), std::string::npos) << table;  // the paper's Cityscapes number
  // Rerun: every run finished before, nothing redone, the same table.
  const auto qt_t = fs::last_write_time(out + "/qt_seed0/summary.json");
  r = run_cli("trials --out " + out + " --scale test --base-epochs 1 --seeds 2 --datasets voc,cityscapes --vary finetune "
              "--quiet --threads 2 --pictures 0");
  ASSERT_EQ(r.rc, 0) << r.out;
  for (const char* run : {"base", "qt_seed0", "ft_voc_seed0", "ft_cityscapes_seed0", "ft_voc_seed1", "ft_cityscapes_seed1"})
    EXPECT_NE(r.out.find(std::string(run) + ": finished before, skipped"), std::string::npos) << run << "\n" << r.out;
  // Everything finished: nothing left, from the first line on (finished stages count 0).
  EXPECT_EQ(eta_of(r.out, "[trials 1/6] base:"), "00:00") << r.out;
  EXPECT_EQ(fs::last_write_time(out + "/qt_seed0/summary.json"), qt_t);
  EXPECT_EQ(read_text(out + "/table.txt"), table);
}

TEST(StudyCli, ReportRendersInHeadlessChromium) {
  const auto out = temp_dir("study_report");
  auto r = run_cli("ablate --out " + out + " --scale test --base-epochs 1 --rows cp2 --quiet --threads 2 --pictures 2");
  ASSERT_EQ(r.rc, 0) << r.out;
  const auto html = read_text(out + "/report.html");
  // Self-contained: no scripts, no network.
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("http://"), html.find("http://www.w3.org/2000/svg"));
  EXPECT_EQ(html.find("https://"), std::string::npos);
  const std::string png = out + "/shot.png";
  const auto chrome = "timeout 180 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1200,1800 ";
  sh(std::string(chrome) + "--screenshot=" + png + " file://" + out + "/report.html > /dev/null 2>&1");
  const auto dom = sh(std::string(chrome) + "--dump-dom file://" + out + "/report.html 2>/dev/null");
  // The DOM Chromium built has the table, charts and pictures.
  EXPECT_NE(dom.find("Table 6"), std::string::npos) << dom.substr(0, 2000);
  EXPECT_NE(dom.find("<table"), std::string::npos);
  EXPECT_NE(dom.find("entire CP2"), std::string::npos);
  EXPECT_NE(dom.find("<svg"), std::string::npos);
  EXPECT_NE(dom.find("<polyline"), std::string::npos);
  EXPECT_NE(dom.find("data:image/png;base64,"), std::string::npos);
  // The picture is not blank: many colours, and much of it differs from the page colour.
  cv::Mat img = cv::imread(png, cv::IMREAD_COLOR);
  ASSERT_FALSE(img.empty()) << "chromium wrote no screenshot to " << png;
  EXPECT_EQ(img.cols, 1200);
  std::set<int> colours;
  int64_t ink = 0;
  for (int y = 0; y < img.rows; ++y)
    for (int x = 0; x < img.cols; ++x) {
      const auto p = img.at<cv::Vec3b>(y, x);
      colours.insert(p[0] << 16 | p[1] << 8 | p[2]);
      ink += std::abs(p[0] - 0xfa) + std::abs(p[1] - 0xfa) + std::abs(p[2] - 0xfa) > 30;
    }
  EXPECT_GT(colours.size(), 200u);
  EXPECT_GT(static_cast<double>(ink) / (img.rows * img.cols), 0.03);
}

}  // namespace
}  // namespace cp2::test
