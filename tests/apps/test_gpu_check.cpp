// cp2_gpu_check, the program tools/gpu_check.sh runs on a GPU machine, run here on the CPU at
// small sizes, through the script: every part it has (loss and finetuning parity against PyTorch's fixtures, the
// training loop's step runner against eager steps, the timed pretraining and finetuning steps,
// the convolutions' ceiling) must run and pass before a GPU session spends its minutes on it.
#include <filesystem>
#include <regex>
#include <sstream>

#include "../helpers.h"

namespace {

// The program alone.
cp2::test::CliRun gpu_check(const std::string& args) {
  return cp2::test::run_command(std::string(CP2_GPU_CHECK) + " " + args);
}

// How many lines of `out` match `pattern` whole.
int count_lines(const std::string& out, const std::string& pattern) {
  const std::regex re(pattern);
  std::istringstream in(out);
  int n = 0;
  for (std::string line; std::getline(in, line);) n += std::regex_match(line, re);
  return n;
}

// tools/gpu_check.sh itself, as a GPU session runs it, on the CPU (its DEVICE=cpu dry run): the
// built program instead of a build, the suite's fixtures instead of writing them, then PyTorch's
// side (tools/cp2_reference.py's models, timed as on the card) and the summary. One run checks
// both the program's every part (its output before the summary) and the script around it.
TEST(GpuCheck, ScriptRunsOnTheCpu) {
  const auto dir = cp2::test::temp_dir("gpu_check_script");
  auto r = cp2::test::run_command("DEVICE=cpu OUT=" + dir + "/logs GPU_CHECK_BIN=" + std::string(CP2_GPU_CHECK) +
                                  " FIXTURES=" + std::string(CP2_FIXTURES) + " PYTHON=" + std::string(CP2_PYTHON) +
                                  " bash " + std::string(CP2_TOOLS) + "/gpu_check.sh " + dir + "/build");
  ASSERT_EQ(r.rc, 0) << r.out;
  const auto at = r.out.find("\n== summary\n");
  ASSERT_NE(at, std::string::npos) << r.out;
  const std::string run = r.out.substr(0, at), summary = r.out.substr(at);
  // The program (--arch 18 --size 64 --batches 4 --steps 1 --warmup 1 --queue 256 --finetune-batch 2
  // --finetune-crop 64 --ceiling-shapes 2). Parity: the CP² step's losses at both fixture sizes,
  // finetuning's two SGD steps, the runner.
  EXPECT_EQ(count_lines(run, R"(\[parity\] cp2_step_r18_96 on cpu: .*accuracies equal: PASS)"), 1) << run;
  EXPECT_EQ(count_lines(run, R"(\[parity\] cp2_step_r50_224 on cpu: .*accuracies equal: PASS)"), 1) << run;
  EXPECT_EQ(count_lines(run, R"(\[parity\] finetune DeepLabV3 R18, 2 SGD steps in float64 on cpu: .*: PASS)"), 1)
      << run;
  EXPECT_EQ(count_lines(run, R"(\[graph\] R18-ASPP@96 fp32 NCHW, 7 steps, .*expected 7, 0, 0\).*: PASS)"), 1) << run;
  // Timed lines: fp32 and AMP bf16, NCHW and channels-last (fp16 and graphs are CUDA's only).
  const std::string rate = R"( +[0-9.]+ img/s +[0-9.]+ GFLOP/s)";
  EXPECT_EQ(count_lines(run, R"(\[step\] batch   4 (fp32     |AMP bf16 ) (NCHW         |channels-last)      )" + rate), 4)
      << run;
  EXPECT_EQ(count_lines(run, R"(\[ceiling\] batch   4 (fp32 NCHW|fp32 channels-last|bf16 channels-last) +[0-9.]+ ms .*)"),
            3)
      << run;
  EXPECT_EQ(count_lines(run, R"(\[finetune\] batch   2 (fp32     |AMP bf16 ) (NCHW         |channels-last))" + rate), 3)
      << run;
  // The script's summary.
  EXPECT_EQ(count_lines(summary, R"(\[parity\] .*: PASS)"), 3) << summary;
  EXPECT_EQ(count_lines(summary, R"(\[graph\] .*: PASS)"), 1) << summary;
  // cp2's and PyTorch's timed lines of each configuration, one after the other.
  for (const std::string numerics : {"fp32     ", "AMP bf16 "})
    for (const std::string layout : {"NCHW         ", "channels-last"}) {
      const std::string cp2_line = R"(\[step\] batch   4 )" + numerics + " " + layout + R"( +[0-9.]+ img/s .*)";
      const std::string torch_line = R"(\[torch\] batch   4 )" + numerics + " " + layout + R"( +[0-9.]+ img/s)";
      EXPECT_EQ(count_lines(summary, cp2_line), 1) << cp2_line << " in:\n" << summary;
      EXPECT_EQ(count_lines(summary, torch_line), 1) << torch_line << " in:\n" << summary;
      EXPECT_TRUE(std::regex_search(summary, std::regex(cp2_line + "\n" + torch_line + "\n"))) << summary;
    }
  EXPECT_EQ(count_lines(summary, R"(\[torch-ft\] batch   2 (fp32     |AMP bf16 ) (NCHW         |channels-last) +[0-9.]+ img/s)"),
            3)
      << summary;
  EXPECT_EQ(count_lines(summary, R"(\[ceiling\] batch   4 .* ms .*)"), 3) << summary;
  EXPECT_EQ(r.out.find("failed"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("FAIL"), std::string::npos) << r.out;
  EXPECT_TRUE(std::filesystem::exists(dir + "/logs/cp2.log"));
  EXPECT_TRUE(std::filesystem::exists(dir + "/logs/torch.log"));
  // One part alone (a GPU session's rerun): no fixtures written, and PyTorch's side follows.
  r = cp2::test::run_command("DEVICE=cpu PARTS=ceiling OUT=" + dir + "/logs1 GPU_CHECK_BIN=" +
                             std::string(CP2_GPU_CHECK) + " PYTHON=" + std::string(CP2_PYTHON) + " bash " +
                             std::string(CP2_TOOLS) + "/gpu_check.sh " + dir + "/build1");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("== fixtures: exit 0, not written (PARTS=ceiling)"), std::string::npos) << r.out;
  EXPECT_EQ(count_lines(r.out, R"(\[ceiling\] batch   4 .* ms .*)"), 6) << r.out;  // the run, then the summary
  EXPECT_EQ(count_lines(r.out, R"(\[(parity|graph|step|finetune|torch|torch-ft)\] .*)"), 0) << r.out;
  // A mistyped setting is refused before anything runs.
  r = cp2::test::run_command("DEVICE=gpu bash " + std::string(CP2_TOOLS) + "/gpu_check.sh " + dir + "/build");
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_NE(r.out.find("error: DEVICE: expected cuda or cpu (a dry run), found 'gpu'"), std::string::npos) << r.out;
  r = cp2::test::run_command("PARTS=parity,speed bash " + std::string(CP2_TOOLS) + "/gpu_check.sh " + dir + "/build");
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_NE(r.out.find("error: PARTS: expected some of parity,graph,step,ceiling,finetune, found 'parity,speed'"),
            std::string::npos)
      << r.out;
}

TEST(GpuCheck, NamesWhatIsMissingOrWrong) {
  // Fixtures not written: each check names the file and how to write it, and the run fails.
  const auto empty = cp2::test::temp_dir("gpu_check_no_fixtures");
  auto r = gpu_check("--fixtures " + empty + " --device cpu --parts parity");
  EXPECT_EQ(r.rc, 1) << r.out;
  for (const std::string f : {"[parity] cp2_step_r18_96: missing " + empty + "/cp2_step_r18_96.pt",
                              "missing " + empty + "/finetune_r18.pt", "run tools/make_parity_fixtures.py --out " + empty})
    EXPECT_NE(r.out.find(f), std::string::npos) << f << " in:\n" << r.out;
  EXPECT_EQ(count_lines(r.out, R"(\[(graph|step|ceiling|finetune)\] .*)"), 0) << r.out;
  // One part alone, without fixtures when it is not parity: a GPU session's rerun.
  r = gpu_check("--device cpu --arch 18 --size 32 --batches 2 --ceiling-shapes 1 --parts ceiling");
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_EQ(count_lines(r.out, R"(\[ceiling\] batch   2 (fp32 NCHW|fp32 channels-last|bf16 channels-last) +[0-9.]+ ms .*)"), 3)
      << r.out;
  EXPECT_EQ(count_lines(r.out, R"(\[(parity|graph|step|finetune)\] .*)"), 0) << r.out;
  r = gpu_check("--help");
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("usage: cp2_gpu_check --fixtures DIR"), std::string::npos) << r.out;
  for (const auto& [args, message] : std::vector<std::pair<std::string, std::string>>{
           {"--fixtures x --batches ''", "--batches: expected one batch size or more, found none"},
           {"--fixtures x --batches 8,0", "--batches: expected sizes >= 1, found 0"},
           {"--fixtures x --steps 0", "--steps: expected >= 1, found 0"},
           {"--fixtures x --arch eighteen", "--arch: expected a number, found 'eighteen'"},
           {"--fixtures x --colour red", "unknown option --colour"},
           {"--fixtures x --parts step,speed", "--parts: expected parity, graph, step, ceiling or finetune, found 'speed'"},
           {"--fixtures x --parts ''", "--parts: expected one part or more, found none"},
           {"--batches 8", "--fixtures DIR is required for --parts parity"}}) {
    r = gpu_check(args);
    EXPECT_EQ(r.rc, 2) << args << ":\n" << r.out;
    EXPECT_NE(r.out.find("error: " + message), std::string::npos) << args << ":\n" << r.out;
  }
}

}  // namespace
