// cp2's training commands as users and clusters drive them: SIGTERM/SIGINT checkpoints
// and exact resume, a full disk, predict never writing over inputs, the CP² authors'
// checkpoint layout, a config warning said once, and the CLI's own help (--version,
// --threads, did you mean).
#include <torch/torch.h>
#include <torch/version.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include "../helpers.h"
#include "cp2/io/checkpoint.h"

namespace fs = std::filesystem;

namespace cp2::test {
namespace {

std::string tiny_images(const std::string& name) {
  const auto dir = temp_dir(name);
  auto r = run_cli("synth --out " + dir + " --count 16 --width 80 --height 64");
  EXPECT_EQ(r.rc, 0) << r.out;
  return dir;
}

std::string pretrain_args(const std::string& data, const std::string& out) {
  return "pretrain --config " + std::string(CP2_CONFIGS) + "/cpu_tiny.yaml --data " + data + " --out " + out +
         " --threads 2";
}

// Every tensor (RNG state aside) of two checkpoints, bit for bit.
void expect_same(const std::string& a, const std::string& b) {
  auto ta = load_tensors(a), tb = load_tensors(b);
  ASSERT_EQ(ta.size(), tb.size());
  for (auto& [k, v] : ta)
    if (k.rfind("rng.", 0) != 0) EXPECT_TRUE(torch::equal(v, tb.at(k))) << k;
}

// Starts `cp2 ARGS` in the background (its output to `log`), sends `signal` once the shell
// test `ready` holds (polled every 10 ms, 30 s at most) and returns "rc=<its exit status>".
std::string signal_when(const std::string& args, const std::string& log, const std::string& ready,
                        const std::string& signal) {
  return sh("( " + std::string(CP2_BINARY) + " " + args + " > " + log + " 2>&1 & pid=$!; for i in $(seq 3000); do " +
            ready + " && break; sleep 0.01; done; kill -" + signal + " $pid; wait $pid; echo rc=$? )");
}

TEST(RunCli, SigtermCheckpointsAndResumeEqualsAnUninterruptedRun) {
  const auto data = tiny_images("rc_sig_data");
  const auto straight = temp_dir("rc_sig_straight"), cut = temp_dir("rc_sig_cut");
  const std::string six = " --set train.epochs=3 --quiet";  // 2 steps per epoch
  auto r = run_cli(pretrain_args(data, straight) + six);
  ASSERT_EQ(r.rc, 0) << r.out;
  // SIGTERM once the first step is logged: the step finishes, a checkpoint is written, exit 143.
  const std::string out = signal_when(pretrain_args(data, cut) + six, cut + "/out.txt",
                                     "grep -q '\"step\"' " + cut + "/log.jsonl 2>/dev/null", "TERM");
  EXPECT_NE(out.find("rc=143"), std::string::npos) << out << read_text(cut + "/out.txt");
  auto summary = nlohmann::json::parse(read_text(cut + "/summary.json"));
  EXPECT_EQ(summary["stopped_by"], "SIGTERM");
  const int64_t at = summary["steps"].get<int64_t>();
  EXPECT_GE(at, 1);
  EXPECT_LT(at, 6);
  EXPECT_TRUE(fs::exists(summary["checkpoint"].get<std::string>()));
  EXPECT_NE(read_text(cut + "/out.txt").find("continue with: cp2 pretrain --resume"), std::string::npos);
  r = run_cli("pretrain --resume " + cut + " --threads 2 --quiet");
  ASSERT_EQ(r.rc, 0) << r.out;
  expect_same(straight + "/checkpoints/checkpoint_00000006.pt", cut + "/checkpoints/checkpoint_00000006.pt");
}

// Schedulers' early warnings (SLURM's --signal=USR1@120, submitit's USR2) stop a run as
// SIGTERM does, where their default action would kill it without a checkpoint; cp2 launch
// passes them on to every rank.
TEST(RunCli, Sigusr1AndSigusr2CheckpointAndStopAlsoThroughLaunch) {
  const auto data = tiny_images("rc_usr_data");
  const std::string many = " --set train.epochs=50";  // 2 steps per epoch: stopped long before the end
  for (const std::string how : {"USR1", "USR2"}) {
    const auto out = temp_dir("rc_usr_" + how);
    const std::string launch = how == "USR2" ? "launch --nproc 2 -- " : "";
    const std::string res = signal_when(launch + pretrain_args(data, out) + many, out + ".txt",
                                        "grep -q '\"step\"' " + out + "/log.jsonl 2>/dev/null", how);
    const std::string text = read_text(out + ".txt");
    EXPECT_NE(res.find(how == "USR1" ? "rc=138" : "rc=140"), std::string::npos) << res << text;
    const auto summary = nlohmann::json::parse(read_text(out + "/summary.json"));
    EXPECT_EQ(summary["stopped_by"], "SIG" + how) << summary.dump();
    EXPECT_LT(summary["steps"].get<int64_t>(), 100);
    EXPECT_TRUE(fs::exists(summary["checkpoint"].get<std::string>())) << summary.dump();
    EXPECT_NE(text.find("stopped by SIG" + how + " after step"), std::string::npos) << text;
    EXPECT_NE(text.find(launch.empty() ? "continue with: cp2 pretrain --resume " + out + "\n"
                                       : "continue with: the same launch of cp2 pretrain --resume " + out +
                                             " (2 processes)\n"),
              std::string::npos)
        << text;
    if (!launch.empty())
      EXPECT_NE(text.find("cp2 launch: SIGUSR2 received: passing it to every rank"), std::string::npos) << text;
  }
}

TEST(RunCli, QueueNotAMultipleOfTheBatchWarnsOnce) {
  // Validated where the config is resolved and again by the run; warned once, by the run.
  const auto data = tiny_images("rc_queue_data");
  auto r = run_cli(pretrain_args(data, temp_dir("rc_queue")) + " --set model.queue=12 --max-steps 1");
  ASSERT_EQ(r.rc, 0) << r.out;
  const std::string w = "warning: model.queue 12 is not a multiple of train.batch 8 (MoCo asserts it; cp2 wraps)";
  const auto at = r.out.find(w);
  EXPECT_NE(at, std::string::npos) << r.out;
  EXPECT_EQ(r.out.find(w, at + 1), std::string::npos) << r.out;
}

// Files in `dir` (recursively) that a failed write left behind: empty or temp files.
std::vector<std::string> debris(const std::string& dir) {
  std::vector<std::string> bad;
  for (auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file() || e.path().filename() == ".lock") continue;
    const auto name = e.path().filename().string();
    if (fs::file_size(e.path()) == 0 || name.find(".tmp") != std::string::npos) bad.push_back(e.path().string());
  }
  return bad;
}

TEST(RunCli, DiskFullLeavesNoTruncatedFiles) {
  const auto data = tiny_images("rc_full_data");
  // RLIMIT_FSIZE makes writes past the size fail as a full disk does (SIGXFSZ ignored:
  // the write returns an error instead of killing the process).
  const std::string small = "trap '' XFSZ; ulimit -f 64; ";  // 64 KiB: the JSON fits, a checkpoint does not
  const auto a = temp_dir("rc_full_a");
  auto r = run_cli(pretrain_args(data, a) + " --quiet --max-steps 1", small);
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_NE(r.out.find("checkpoint_00000001.pt"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("File too large"), std::string::npos) << r.out;
  EXPECT_EQ(debris(a), std::vector<std::string>{});
  auto summary = nlohmann::json::parse(read_text(a + "/summary.json"));
  EXPECT_NE(summary["error"].get<std::string>().find("checkpoint_00000001.pt"), std::string::npos);
  EXPECT_EQ(summary["steps"], 1);  // how far and how fast it went, as a finished run's summary says
  EXPECT_GT(summary["images_per_s"].get<double>(), 0) << summary.dump();
  // Its step logged but never saved: nothing to resume. The same command line with
  // --auto-resume (a requeued job's) starts it again, then continues it.
  r = run_cli(pretrain_args(data, a) + " --quiet --max-steps 1");
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_NE(r.out.find("stopped before its first checkpoint"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--auto-resume"), std::string::npos) << r.out;
  r = run_cli(pretrain_args(data, a) + " --quiet --max-steps 1 --auto-resume --resume");
  EXPECT_NE(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("--resume excludes --auto-resume"), std::string::npos) << r.out;
  r = run_cli(pretrain_args(data, a) + " --quiet --max-steps 1 --auto-resume");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("starting it again (its log is now log.interrupted.jsonl)"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(a + "/checkpoints/checkpoint_00000001.pt"));
  r = run_cli(pretrain_args(data, a) + " --quiet --max-steps 2 --auto-resume");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("after step 2: 1 step in"), std::string::npos) << r.out;
  // Nothing can be written at all: config.yaml fails whole, no 0-byte file stays.
  const auto b = temp_dir("rc_full_b");
  r = run_cli(pretrain_args(data, b) + " --quiet --max-steps 1", "trap '' XFSZ; ulimit -f 0; ");
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_NE(r.out.find("config.yaml"), std::string::npos) << r.out;
  EXPECT_EQ(debris(b), std::vector<std::string>{});
}

TEST(RunCli, KilledDuringItsFirstCheckpointStartsAgainClean) {
  // SIGKILL (a scheduler's, after its grace period) while the first checkpoint is written:
  // the temp file stays, and the run has a logged step but nothing to resume.
  const auto data = tiny_images("rc_kill_data");
  const auto out = temp_dir("rc_kill");
  const std::string shell = signal_when(pretrain_args(data, out) + " --quiet --max-steps 1", "/dev/null",
                                       "ls " + out + "/checkpoints/*.tmp > /dev/null 2>&1", "KILL");
  EXPECT_NE(shell.find("rc=137"), std::string::npos) << shell;
  std::vector<std::string> temps;
  for (auto& e : fs::directory_iterator(out + "/checkpoints")) temps.push_back(e.path().filename().string());
  ASSERT_EQ(temps.size(), 1u);
  EXPECT_EQ(temps[0].rfind("checkpoint_00000001.pt.", 0), 0u) << temps[0];
  // The same command with --auto-resume: the temp file removed and said, the run started again.
  auto r = run_cli(pretrain_args(data, out) + " --quiet --max-steps 1 --auto-resume");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find(out + ": removed 1 unfinished file ("), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(") of a write that was killed: checkpoints/" + temps[0]), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("starting it again"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(out + "/checkpoints/" + temps[0]));
  EXPECT_TRUE(fs::exists(out + "/checkpoints/checkpoint_00000001.pt"));
  EXPECT_EQ(debris(out), std::vector<std::string>{});
}

TEST(RunCli, AuthorsCheckpointWithClassifierThroughLossInitConvert) {
  const auto data = tiny_images("rc_auth_data");
  const auto dir = temp_dir("rc_auth");
  auto r = run_cli(pretrain_args(data, dir + "/run") + " --quiet --max-steps 1 --dump-batch " + dir + "/batch.pt");
  ASSERT_EQ(r.rc, 0) << r.out;
  r = run_cli(pretrain_args(data, dir + "/run") + " --quiet --max-steps 1");
  ASSERT_EQ(r.rc, 0) << r.out;
  // The authors' ASPPHead builds a 21-class conv_seg in both encoders: add it, as their files hold it.
  const std::string ck = dir + "/run/checkpoints/checkpoint_00000001.pt";
  auto root = io::load_checkpoint(ck).root;
  auto sd = root->get("state_dict");
  for (const char* e : {"encoder_q", "encoder_k"}) {
    py::set(sd, std::string(e) + ".decode_head.conv_seg.weight", py::tensor(torch::randn({21, 512, 1, 1})));
    py::set(sd, std::string(e) + ".decode_head.conv_seg.bias", py::tensor(torch::randn({21})));
  }
  const std::string authors = dir + "/authors_style.pt";
  io::save_checkpoint(authors, root);
  // cp2 loss: the stored model description, the classifier reported as dropped.
  r = run_cli("loss --checkpoint " + authors + " --batch " + dir + "/batch.pt");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("dropped 4 tensors"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("0 missing, 0 unexpected"), std::string::npos) << r.out;
  // Quick Tuning from it (auto layout), and convert.
  r = run_cli(pretrain_args(data, dir + "/qt") + " --quiet --max-steps 1 --init " + authors);
  ASSERT_EQ(r.rc, 0) << r.out;
  r = run_cli("convert " + authors + " " + dir + "/mmseg.pt --to mmseg");
  ASSERT_EQ(r.rc, 0) << r.out;
  auto keys = load_tensors(dir + "/mmseg.pt");
  EXPECT_FALSE(keys.count("state_dict.decode_head.conv_seg.weight"));
  // A finetune run's checkpoint is no pretraining resume: one line says what to do.
  r = run_cli("pretrain --resume " + fixture("seg_r18_os16.pt") + " --out " + dir + "/x --quiet");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.out.find("not a cp2 pretraining checkpoint"), std::string::npos) << r.out;
}

TEST(RunCli, PredictNeverWritesOverInputs) {
  const auto dir = temp_dir("rc_pred");
  auto r = run_cli("synth --seg voc --out " + dir + "/voc --train 4 --val 1 --width 48 --height 40");
  ASSERT_EQ(r.rc, 0) << r.out;
  r = run_cli("--threads 2 finetune --config " CP2_CONFIGS "/cpu_seg_tiny.yaml --data " + dir + "/voc --out " + dir +
              "/run --iters 2 --eval-every 2 --quiet");
  ASSERT_EQ(r.rc, 0) << r.out;
  const std::string predict = "predict " + dir + "/run ";
  // `predict ARGS` exits 1 and says each fragment.
  auto refused = [&](const std::string& args, std::initializer_list<std::string> fragments) {
    auto f = run_cli(predict + args);
    EXPECT_EQ(f.rc, 1) << args;
    for (const auto& s : fragments) EXPECT_NE(f.out.find(s), std::string::npos) << s << " in: " << f.out;
  };
  // `predict ARGS` succeeds, prints `summary` and writes `files` (relative to dir); returns its output.
  auto wrote = [&](const std::string& args, const std::string& summary, std::initializer_list<std::string> files) {
    auto w = run_cli(predict + args);
    EXPECT_EQ(w.rc, 0) << args << ": " << w.out;
    EXPECT_NE(w.out.find(summary), std::string::npos) << w.out;
    for (const auto& f : files) EXPECT_TRUE(fs::exists(dir + "/" + f)) << f;
    return w.out;
  };
  // a.jpg and a.png share a stem; a broken image; an earlier overlay in the folder.
  const auto in = dir + "/in";
  fs::create_directories(in);
  cv::Mat img(40, 48, CV_8UC3, cv::Scalar(30, 90, 150));
  cv::imwrite(in + "/a.jpg", img);
  cv::imwrite(in + "/a.png", img);
  cv::imwrite(in + "/b_overlay.jpg", img);
  { std::ofstream(in + "/broken.jpg") << "not an image"; }
  refused(in + " --out " + in + "/preds --quiet", {"inside the input folder"});
  refused(in + " --out " + in + " --quiet", {"inside the input folder"});
  refused(in + " --out " + dir + "/preds --quiet", {"broken.jpg", "--skip-bad"});
  auto out = wrote(in + " --out " + dir + "/preds --quiet --skip-bad", "wrote 2 label PNGs and 2 overlays",
                   {"preds/a_jpg.png", "preds/a_png.png"});
  EXPECT_NE(out.find("skipped 1 unreadable image:"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(dir + "/preds/b_overlay.png"));
  // A single image inside --out whose prediction would land on itself.
  refused(dir + "/preds/a_png.png --out " + dir + "/preds --quiet", {"an input"});
  size_t files = 0;
  for (auto& e : fs::directory_iterator(dir + "/preds")) files += e.is_regular_file();
  EXPECT_EQ(files, 4u);
  // Several inputs (a shell glob, files and folders together): outputs mirror the paths below
  // the deepest folder holding them all; an image named twice is predicted once; --out inside
  // any input folder is refused.
  const auto in2 = dir + "/in2/deep";
  fs::create_directories(in2);
  cv::imwrite(in2 + "/c.jpg", img);
  wrote(in + "/a.jpg " + in + "/a.png --out " + dir + "/multi1 --quiet", "wrote 2 label PNGs and 2 overlays",
        {"multi1/a_jpg.png", "multi1/a_png.png"});
  out = wrote(in + "/a.jpg " + in + " " + in2 + " --out " + dir + "/multi2 --skip-bad --no-overlay",
              "wrote 3 label PNGs to", {"multi2/in/a_jpg.png", "multi2/in/a_png.png", "multi2/in2/deep/c.png"});
  EXPECT_NE(out.find("skipped 1 unreadable image:"), std::string::npos) << out;
  EXPECT_NE(out.find("] " + in + "/a.jpg -> "), std::string::npos) << out;  // progress lines without --quiet
  refused(in + "/a.jpg " + in2 + " --out " + in2 + "/p --quiet", {"inside the input folder " + in2});
  refused(in + "/a.jpg " + in + "/nope.jpg --out " + dir + "/multi3 --quiet", {in + "/nope.jpg: no such image or folder"});
  EXPECT_FALSE(fs::exists(dir + "/multi3"));
  // --set model.* reaches the model: a depth the file does not hold is an error, not ignored.
  r = run_cli("evaluate " + dir + "/run --set model.arch=50 --quiet");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.out.find("model.arch: 50 asked"), std::string::npos) << r.out;
  wrote(in + "/a.jpg --out " + dir + "/p2 --quiet --set model.align_corners=true", "wrote 1 label PNG and 1 overlay to", {});
  // Bad eval keys are refused before any image, naming where the value came from.
  refused(in + "/a.jpg --out " + dir + "/p4 --quiet --scales 0,1",
          {"error: command line: eval.scales: expected positive ratios, found 0"});
  refused(in + "/a.jpg --out " + dir + "/p4 --quiet --set eval.stride_h=0",
          {"error: --set: eval.stride_h: expected >= 1, found 0"});
  EXPECT_FALSE(fs::exists(dir + "/p4"));
  // A config trained in fp16 on a GPU is evaluated on the CPU in fp32, with a note.
  for (const std::string cmd : {"evaluate " + dir + "/run", predict + in + "/a.jpg --out " + dir + "/p3"}) {
    r = run_cli(cmd + " --quiet --set train.precision=fp16");
    EXPECT_EQ(r.rc, 0) << cmd << ": " << r.out;
    EXPECT_NE(r.out.find("note: train.precision: fp16 runs on CUDA only: running in fp32 on 'cpu'"), std::string::npos)
        << r.out;
  }
}

TEST(RunCli, VersionThreadsAndDidYouMean) {
  auto r = run_cli("--version --threads 2");
  ASSERT_EQ(r.rc, 0) << r.out;
  // The LibTorch it was built against, as its headers say (torch/version.h).
  EXPECT_NE(r.out.find(std::string("LibTorch ") + TORCH_VERSION), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("CUDA available: no"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("CPU features: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\nthreads: 2\n"), std::string::npos) << r.out;
  // OpenBLAS (Debian's LibTorch does its matmuls there) keeps its own thread pool, which
  // at::set_num_threads does not reach; --threads sizes it too.
  EXPECT_NE(r.out.find("\nOpenBLAS threads: 2\n"), std::string::npos) << r.out;
  EXPECT_NE(run_cli("--version --threads 1").out.find("\nOpenBLAS threads: 1\n"), std::string::npos);
  // By default as many threads as the cores the process may run on: pinned to one core
  // (taskset, as SLURM's --cpus-per-task or a cpuset would), one thread, not one per core of
  // the machine; --threads still says otherwise.
  r = run_cli("--version", "taskset -c 0 ");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("\nthreads: 1\nOpenBLAS threads: 1\n"), std::string::npos) << r.out;
  r = run_cli("--version --threads 3", "taskset -c 0 ");
  EXPECT_NE(r.out.find("\nthreads: 3\nOpenBLAS threads: 3\n"), std::string::npos) << r.out;
  for (const char* sub : {"pretrain", "finetune", "evaluate", "predict", "convert", "loss", "bench", "synth", "demo", "ablate", "trials", "report"}) {
    r = run_cli(std::string(sub) + " --help");
    EXPECT_NE(r.out.find("--threads"), std::string::npos) << sub;
  }
  r = run_cli("pretrain --help");
  EXPECT_NE(r.out.find("(train.batch; default 256)"), std::string::npos) << r.out;
  // Numeric options say what they expect (CLI11's own checks print a 300-digit bound).
  for (auto [args, msg] : {std::pair{"synth --threads 0 --out /tmp/x", "--threads: expected a positive number, found '0'"},
                           {"launch --nproc abc -- pretrain", "--nproc: expected a positive number, found 'abc'"},
                           {"pretrain --data /tmp --max-steps -1", "--max-steps: expected a number >= 0, found '-1'"},
                           {"pretrain --data /tmp --dist-timeout inf", "--dist-timeout: expected a positive number, found 'inf'"}}) {
    r = run_cli(args);
    EXPECT_EQ(r.rc, 2) << args;  // a usage error
    EXPECT_NE(r.out.find(msg), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("1797693"), std::string::npos) << r.out;
  }
  EXPECT_NE(run_cli("pretrain --help").out.find("--max-steps INT:NONNEGATIVE"), std::string::npos);  // help as before
  r = run_cli("pretrian --help");
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.out.find("did you mean 'pretrain'?"), std::string::npos) << r.out;
  r = run_cli("pretrain --bach 8 --data /tmp");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.out.find("did you mean '--batch'?"), std::string::npos) << r.out;
  r = run_cli("pretrain --batch eight --data /tmp");
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.out.find("--batch: expected a positive integer (train.batch), found 'eight'"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace cp2::test
