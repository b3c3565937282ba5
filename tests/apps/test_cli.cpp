// The cp2 program itself: exit codes and messages as a user sees them.
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <regex>
#include <set>

#include "../helpers.h"
#include "cp2/pretrain/config.h"
#include "cp2/pretrain/state_io.h"
#include "cp2/seg/config.h"
#include "cp2/seg/label_png.h"

#include <filesystem>

using cp2::test::fixture;

namespace {

cp2::test::CliRun run(const std::string& args) { return cp2::test::run_cli(args); }

TEST(Cli, HelpForEverySubcommand) {
  for (const char* sub : {"", "convert", "demo", "loss", "pretrain", "synth", "bench", "bench pretrain", "finetune",
                          "evaluate", "predict", "bench finetune", "bench evaluate", "bench conv", "bench norm", "bench view",
                          "ablate", "trials", "report", "launch"}) {
    auto r = run(std::string(sub) + " --help");
    EXPECT_EQ(r.rc, 0) << sub;
    EXPECT_NE(r.out.find("--help"), std::string::npos);
    // Which options need or exclude others is said after the description (CLI11's own help
    // put it beside the name, pushing the description to a line of its own).
    EXPECT_EQ(r.out.find("Needs:"), std::string::npos) << sub << ":\n" << r.out;
    EXPECT_EQ(r.out.find("Excludes:"), std::string::npos) << sub << ":\n" << r.out;
  }
  EXPECT_NE(run("synth --help").out.find("  --train INT:POSITIVE=8      --seg: training images (needs --seg)\n"),
            std::string::npos);
  EXPECT_NE(run("pretrain --help").out.find("of --out); writes into that run folder, with its stored config unless "
                                            "--config (not with --auto-resume)\n"),
            std::string::npos);
  // The program's help lists the commands in the order of a user's work, under three
  // headings.
  const std::string top = run("--help").out;
  size_t at = 0;
  for (const char* entry : {"Train and use a model:", "  pretrain ", "  finetune ", "  evaluate ", "  predict ",
                            "  launch ", "The paper's experiments (Tables 6 and 7):", "  demo ", "  ablate ",
                            "  trials ", "Tools:", "  report ", "  convert ", "  synth ", "  loss ", "  bench "}) {
    const size_t next = top.find(std::string("\n") + entry, at);
    ASSERT_NE(next, std::string::npos) << "'" << entry << "' after offset " << at << " in:\n" << top;
    at = next + 1;
  }
}

// `cp2 bench view` times every op of a view, on random pixels or a decoded file, and names a
// bad value.
TEST(Cli, BenchViewTimesEveryOp) {
  auto r = run("bench view --width 40 --height 30 --size 16 --rounds 2");
  ASSERT_EQ(r.rc, 0) << r.out;
  for (const char* op : {"random pixels (40x30), 16 px views", "resized_crop, AVX2 loops", "resized_crop, plain loops",
                         "adjust_contrast", "adjust_hue, scalar loop", "gaussian_blur k13 (sigma 2), plain",
                         "apply_view, drawn parameters", "samples/s per loader thread without the decodes"})
    EXPECT_NE(r.out.find(op), std::string::npos) << op << " in:\n" << r.out;
  r = run("bench view --image " + fixture("aug_input.png") + " --size 16 --rounds 10");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("decode (read_image)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("samples/s per loader thread, before"), std::string::npos) << r.out;
  r = run("bench view --rounds 0");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.out.find("--rounds: expected >= 1, found 0"), std::string::npos) << r.out;
  r = run("bench view --image /nonexistent/x.jpg --rounds 1");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.out.find("/nonexistent/x.jpg"), std::string::npos) << r.out;
}

// The flags ("cp2 SUB ... --flag") and config keys ("`section.key`") that README.md and docs/*.md
// name exist, and their pretrain/finetune command lines resolve to valid configs: a renamed
// option or a pair of flags that no longer go together fails here rather than in a reader's shell.
TEST(Cli, DocsNameOnlyRealFlagsAndKeys) {
  namespace fs = std::filesystem;
  const fs::path root = fs::path(CP2_CONFIGS).parent_path();
  std::vector<fs::path> docs = {root / "README.md"};
  for (const auto& e : fs::directory_iterator(root / "docs"))
    if (e.path().extension() == ".md") docs.push_back(e.path());
  ASSERT_GE(docs.size(), 3u);

  std::map<std::string, std::string> help;  // "bench conv" -> its --help ("" = the program's)
  auto help_of = [&](const std::string& sub) -> const std::string& {
    if (!help.count(sub)) help[sub] = run(sub + " --help").out;
    return help[sub];
  };
  // The subcommands as the program lists them, so that a new one's flags are read too: the
  // entries under every heading but Positionals and Options (cp2 --help groups them).
  auto subcommands_of = [&](const std::string& sub) {
    std::istringstream in(help_of(sub));
    std::vector<std::string> out;
    std::string line, heading;
    while (std::getline(in, line)) {
      if (!line.empty() && line[0] != ' ' && line.back() == ':') heading = line;
      else if (line.rfind("  ", 0) == 0 && line.size() > 2 && line[2] != ' ' && line[2] != '-' &&
               !heading.empty() && heading != "Positionals:" && heading != "Options:")
        out.push_back(line.substr(2, line.find(' ', 2) - 2));
    }
    return out;
  };
  const auto subs = subcommands_of(""), benches = subcommands_of("bench");
  ASSERT_NE(std::find(subs.begin(), subs.end(), "launch"), subs.end());
  ASSERT_NE(std::find(benches.begin(), benches.end(), "conv"), benches.end());
  auto has_flag = [&](const std::string& sub, const std::string& flag) {
    const std::string& h = help_of(sub);
    for (size_t at = h.find(flag); at != std::string::npos; at = h.find(flag, at + 1)) {
      const size_t end = at + flag.size();
      if ((at == 0 || !(std::isalnum(static_cast<unsigned char>(h[at - 1])) || h[at - 1] == '-')) &&
          (end == h.size() || !(std::isalnum(static_cast<unsigned char>(h[end])) || h[end] == '-')))
        return true;
    }
    return false;
  };
  auto first_word = [](const std::string& s, std::string& rest) {
    const size_t b = s.find_first_not_of(' ');
    if (b == std::string::npos) return std::string();
    const size_t e = std::min(s.find(' ', b), s.size());
    rest = s.substr(e);
    return s.substr(b, e - b);
  };
  // "--flag" tokens of one command's text (not "--" alone, not "a--b").
  auto flags_of = [](const std::string& s) {
    std::vector<std::string> out;
    for (size_t at = s.find("--"); at != std::string::npos; at = s.find("--", at + 2)) {
      if (at > 0 && (std::isalnum(static_cast<unsigned char>(s[at - 1])) || s[at - 1] == '-')) continue;
      size_t e = at + 2;
      if (e >= s.size() || !std::islower(static_cast<unsigned char>(s[e]))) continue;
      while (e < s.size() && (std::isalnum(static_cast<unsigned char>(s[e])) || s[e] == '-')) ++e;
      out.push_back(s.substr(at, e - at));
    }
    return out;
  };
  cp2::pretrain::PretrainConfig pre;
  cp2::seg::FinetuneConfig fin;
  const std::string keys = "\n" + pre.fields().describe() + fin.fields().describe();
  std::set<std::string> sections;  // "train." ...: the first word of every key
  for (size_t at = keys.find("\n  "); at != std::string::npos; at = keys.find("\n  ", at + 1))
    sections.insert(keys.substr(at + 3, keys.find('.', at + 3) - at - 2));
  ASSERT_TRUE(sections.count("copy_paste.") && sections.count("pipeline.") && sections.count("eval.")) << keys;

  // Where the next command of a line starts ("cp2 " and a subcommand; "--mode cp2 --arch" is
  // not one), or npos.
  auto next_command = [&](const std::string& s) {
    for (size_t at = s.find("cp2 "); at != std::string::npos; at = s.find("cp2 ", at + 4)) {
      std::string ignored;
      const std::string w = first_word(s.substr(at + 4), ignored);
      if (std::find(subs.begin(), subs.end(), w) != subs.end()) return at;
    }
    return std::string::npos;
  };
  // A whole command line in a code block, with nothing left for the reader to fill in.
  auto complete = [](const std::string& s) {
    for (const char* open : {"...", "\xE2\x80\xA6", "$", "<", ">", "[", "'", "\"", "--resume", "--auto-resume"})
      if (s.find(open) != std::string::npos) return false;
    return true;
  };
  size_t flags_checked = 0, keys_checked = 0, configs_checked = 0;
  for (const auto& path : docs) {
    std::string text = cp2::io::read_file(path.string());
    // A command continued over lines is one command.
    for (size_t at = text.find("\\\n"); at != std::string::npos; at = text.find("\\\n", at)) {
      size_t e = at + 2;
      while (e < text.size() && text[e] == ' ') ++e;
      text.replace(at, e - at, " ");
    }
    std::istringstream lines(text);
    bool code = false;  // inside a ``` block (indented ones too: a fence inside a list item)
    for (std::string line; std::getline(lines, line);) {
      if (const size_t b = line.find_first_not_of(' '); b != std::string::npos && line.compare(b, 3, "```") == 0)
        code = !code;
      const std::string where = path.filename().string() + ": " + line;
      for (size_t at = line.find("cp2 "); at != std::string::npos; at = line.find("cp2 ", at + 4)) {
        if (at > 0 && (std::isalnum(static_cast<unsigned char>(line[at - 1])) || line[at - 1] == '_')) continue;
        std::string rest;
        std::string sub = first_word(line.substr(at + 4), rest);
        if (std::find(subs.begin(), subs.end(), sub) == subs.end()) continue;
        // The command ends where the next one, a comment, a code span or a table cell begins.
        rest = rest.substr(0, std::min({next_command(rest), rest.find('#'), rest.find('`'), rest.find('|')}));
        std::vector<std::pair<std::string, std::string>> parts;  // (subcommand, its text)
        if (sub == "launch" && rest.find(" -- ") != std::string::npos) {
          std::string inner_rest;
          const std::string inner = first_word(rest.substr(rest.find(" -- ") + 4), inner_rest);
          parts.push_back({"launch", rest.substr(0, rest.find(" -- "))});
          if (std::find(subs.begin(), subs.end(), inner) != subs.end()) parts.push_back({inner, inner_rest});
        } else {
          parts.push_back({sub, rest});
        }
        for (auto& [s, t] : parts) {
          std::string after;
          const std::string w = first_word(t, after);
          if (s == "bench" && std::find(benches.begin(), benches.end(), w) != benches.end()) {
            s = "bench " + w;
            t = after;
          }
          for (const auto& flag : flags_of(t)) {
            bool known = has_flag("", flag) || has_flag(s, flag);  // "" = the global options (--threads)
            if (s == "bench")  // "cp2 bench ... --flag": any bench
              for (const auto& b : benches) known = known || has_flag("bench " + b, flag);
            EXPECT_TRUE(known) << "cp2 " << s << " has no " << flag << "\n  " << where;
            ++flags_checked;
          }
          // A training command line the reader can paste resolves to a valid config: its flags go
          // together (CLI11's needs/excludes) and its values pass validate(), without data.
          if (code && (s == "pretrain" || s == "finetune") && complete(t)) {
            const auto r = cp2::test::run_cli(s + t + " --print-config", "cd '" + root.string() + "' && ");
            EXPECT_EQ(r.rc, 0) << "cp2 " << s << t << " --print-config:\n" << r.out << "  " << where;
            ++configs_checked;
          }
        }
      }
      for (size_t at = line.find('`'); at != std::string::npos; at = line.find('`', at + 1)) {
        const size_t b = at + 1;
        size_t e = b;
        while (e < line.size() && (std::islower(static_cast<unsigned char>(line[e])) ||
                                   std::isdigit(static_cast<unsigned char>(line[e])) || line[e] == '_' || line[e] == '.'))
          ++e;
        const std::string key = line.substr(b, e - b);
        if (key.find('.') == std::string::npos || (e < line.size() && line[e] == '('))  // loss.item() is code
          continue;
        if (std::none_of(sections.begin(), sections.end(), [&](const std::string& p) { return key.rfind(p, 0) == 0; }))
          continue;
        // `train.*` names a section: some key is in it.
        const std::string wanted = "\n  " + key + (key.back() == '.' ? "" : " = ");
        EXPECT_NE(keys.find(wanted), std::string::npos) << "no config key " << key << "\n  " << where;
        ++keys_checked;
      }
    }
  }
  // The scan reads what it should: the docs name over 500 flags (a command cut short, as at
  // "--mode cp2 --arch" once, read about 100) and well over fifty keys.
  EXPECT_GT(flags_checked, 400u);
  EXPECT_GT(keys_checked, 50u);
  std::printf("[docs] %zu flags, %zu config keys and %zu training command lines checked\n", flags_checked,
              keys_checked, configs_checked);
  EXPECT_GT(configs_checked, 15u);
}

TEST(Cli, ConvertListPrintsKeysShapesDtypes) {
  auto r = run("convert --list " + fixture("moco_r18_legacy.pt"));
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("legacy format"), std::string::npos);
  EXPECT_NE(r.out.find("state_dict.module.encoder_q.layer4.1.conv2.weight\t[512, 512, 3, 3] Float"), std::string::npos);
  EXPECT_NE(r.out.find("epoch\tint 800"), std::string::npos);
  EXPECT_NE(r.out.find("optimizer.param_groups.0.momentum\tfloat 0.9\n"), std::string::npos) << r.out;  // as written
}

TEST(Cli, ConvertMocoToTorchvisionAndBack) {
  std::string out = ::testing::TempDir() + "cli_tv.pt";
  auto r = run("convert " + fixture("moco_r18_legacy.pt") + " " + out + " --to torchvision --arch 18");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("layout moco"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("dropped: module.encoder_q.fc.0.weight"), std::string::npos) << r.out;
  auto back = run("convert --list " + out);
  EXPECT_NE(back.out.find("\nconv1.weight\t[64, 3, 7, 7] Float"), std::string::npos) << back.out;
  EXPECT_EQ(back.out.find("fc."), std::string::npos);
  // A run folder stands for its newest checkpoint.
  const auto run_dir = ::testing::TempDir() + "cli_convert_run";
  std::filesystem::remove_all(run_dir);
  std::filesystem::create_directories(run_dir + "/checkpoints");
  std::filesystem::copy_file(fixture("moco_r18_legacy.pt"), run_dir + "/checkpoints/checkpoint_00000002.pt");
  std::filesystem::copy_file(fixture("resnet18_os16.pt"), run_dir + "/checkpoints/checkpoint_00000001.pt");
  auto folder = run("convert " + run_dir + " " + out + " --to torchvision");
  ASSERT_EQ(folder.rc, 0) << folder.out;
  EXPECT_NE(folder.out.find("read " + run_dir + "/checkpoints/checkpoint_00000002.pt (legacy format), layout moco"),
            std::string::npos) << folder.out;
  const auto empty_dir = ::testing::TempDir() + "cli_convert_empty";
  std::filesystem::remove_all(empty_dir);
  std::filesystem::create_directories(empty_dir);
  auto empty = run("convert " + empty_dir + " " + out);
  EXPECT_EQ(empty.rc, 1);
  EXPECT_NE(empty.out.find("convert IN: "), std::string::npos) << empty.out;
  EXPECT_NE(empty.out.find("is a folder without checkpoints"), std::string::npos) << empty.out;
  // OUT naming a folder is refused before IN is read.
  auto to_folder = run("convert " + fixture("moco_r18_legacy.pt") + " " + empty_dir + " --to torchvision");
  EXPECT_EQ(to_folder.rc, 1);
  EXPECT_NE(to_folder.out.find("convert OUT " + empty_dir + ": is a folder; expected the checkpoint file to write (e.g. " +
                               empty_dir + "/model.pt)"), std::string::npos) << to_folder.out;
  EXPECT_EQ(to_folder.out.find("read "), std::string::npos) << to_folder.out;
}

TEST(Cli, BadInputsExitNonZeroWithOneMessage) {
  auto missing = run("convert /nonexistent/x.pt /tmp/y.pt");
  EXPECT_EQ(missing.rc, 1);
  EXPECT_NE(missing.out.find("error: /nonexistent/x.pt: cannot open file"), std::string::npos) << missing.out;

  std::string trunc = ::testing::TempDir() + "cli_trunc.pt";
  std::string bytes = cp2::io::read_file(fixture("resnet18_os16.pt"));
  std::ofstream(trunc, std::ios::binary) << bytes.substr(0, bytes.size() / 3);
  auto t = run("convert " + trunc + " /tmp/y.pt");
  EXPECT_EQ(t.rc, 1);
  EXPECT_NE(t.out.find("truncated"), std::string::npos) << t.out;

  auto wrong = run("convert " + fixture("resnet18_os16.pt") + " /tmp/y.pt --arch 50 --strict");
  EXPECT_EQ(wrong.rc, 1);
  EXPECT_NE(wrong.out.find("mismatched: backbone.layer1.0.conv1.weight expected [64, 64, 1, 1], found [64, 64, 3, 3]"),
            std::string::npos) << wrong.out;

  auto preset = run("convert " + fixture("resnet18_os16.pt") + " /tmp/y.pt --to keras");
  EXPECT_EQ(preset.rc, 1);
  EXPECT_NE(preset.out.find("'keras'"), std::string::npos) << preset.out;

  auto dtype = run("convert --list " + fixture("complex.pt"));
  EXPECT_EQ(dtype.rc, 1);
  EXPECT_NE(dtype.out.find("ComplexFloatStorage"), std::string::npos) << dtype.out;
}

}  // namespace

namespace {

TEST(Cli, LossPrintsTheReferenceLosses) {
  auto r = run("loss --arch 18 --checkpoint " + fixture("cp2_step_r18_96.pt") + " --batch " +
               fixture("cp2_step_r18_96_batch.pt"));
  ASSERT_EQ(r.rc, 0) << r.out;
  auto ref = cp2::test::load_tensors(fixture("cp2_step_r18_96_ref.pt"));
  auto pos = r.out.find("\ntotal ");
  ASSERT_NE(pos, std::string::npos) << r.out;
  double total = std::stod(r.out.substr(pos + 7));
  EXPECT_NEAR(total, ref["total"].item<double>(), 1e-5 * std::abs(ref["total"].item<double>()));
  EXPECT_NE(r.out.find("0 missing, 0 unexpected, 0 shape-mismatched"), std::string::npos);

  auto wrong = run("loss --arch 50 --checkpoint " + fixture("cp2_step_r18_96.pt") + " --batch " +
                   fixture("cp2_step_r18_96_batch.pt"));
  EXPECT_EQ(wrong.rc, 1);
  EXPECT_NE(wrong.out.find("strict load failed"), std::string::npos) << wrong.out;
  // The model's keys are checked as `cp2 pretrain` checks them: key names, and where the value came from.
  for (auto [args, msg] : {std::pair{"--queue 0", "error: command line: model.queue: expected >= 1, found 0\n"},
                           {"--set model.momentum=2", "error: --set: model.momentum: expected 0..1, found 2\n"},
                           {"--arch 10", "error: command line: model.arch: expected one of 18, 34, 50, 101, found 10\n"}}) {
    auto bad = run("loss --checkpoint " + fixture("cp2_step_r18_96.pt") + " --batch " +
                   fixture("cp2_step_r18_96_batch.pt") + " " + args);
    EXPECT_EQ(bad.rc, 1) << args;
    EXPECT_NE(bad.out.find(msg), std::string::npos) << bad.out;
  }
}

}  // namespace

TEST(Cli, PretrainDumpBatchThenLossOnTheRunsCheckpoint) {
  auto dir = cp2::test::temp_dir("cli_pretrain");
  auto r = run("synth --out " + dir + "/img --count 16 --width 96 --height 80");
  ASSERT_EQ(r.rc, 0) << r.out;
  const std::string common = "pretrain --config " + std::string(CP2_CONFIGS) + "/cpu_tiny.yaml --data " + dir +
                             "/img --threads 2 --quiet --out " + dir + "/run";
  r = run(common + " --dump-batch " + dir + "/batch.pt");
  ASSERT_EQ(r.rc, 0) << r.out;
  auto b = cp2::pretrain::load_batch(dir + "/batch.pt");
  EXPECT_EQ(b.im_q.sizes(), (std::vector<int64_t>{8, 3, 64, 64}));
  EXPECT_EQ(b.mask_q.sizes(), (std::vector<int64_t>{8, 64, 64}));
  r = run(common + " --max-steps 1");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("stopped after step 1"), std::string::npos) << r.out;
  // cp2 loss takes the run's own config (R18, m 0.99, K 16 from the checkpoint).
  r = run("loss --checkpoint " + dir + "/run/checkpoints/checkpoint_00000001.pt --batch " + dir +
          "/batch.pt --config " + dir + "/run/config.yaml");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("loss_dense"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("0 missing"), std::string::npos) << r.out;
  // The same with shortcut flags instead; a wrong architecture is a clear error.
  r = run("loss --checkpoint " + dir + "/run/checkpoints/checkpoint_00000001.pt --batch " + dir +
          "/batch.pt --arch 18 --momentum 0.99");
  ASSERT_EQ(r.rc, 0) << r.out;
  r = run("loss --checkpoint " + dir + "/run/checkpoints/checkpoint_00000001.pt --batch " + dir +
          "/batch.pt --config " + dir + "/run/config.yaml --set model.arch=50");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.out.find("mismatched"), std::string::npos) << r.out;
  // Resume from the run folder: its stored config, continuing at step 1.
  r = run("pretrain --resume " + dir + "/run --threads 2 --quiet --max-steps 2");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("stopped after step 2: 1 step in"), std::string::npos) << r.out;
}

TEST(Cli, PretrainConfigErrors) {
  auto r = run("pretrain --data /tmp --set train.epoch=3");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.out.find("error: --set: unknown key 'train.epoch' (did you mean 'train.epochs'?)"), std::string::npos) << r.out;
  r = run("pretrain --data /tmp --batch zero");  // a usage error: exit 2, the flag and its key named
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.out.find("--batch: expected a positive integer (train.batch), found 'zero'"), std::string::npos) << r.out;
  // --workers takes auto or a count, for both training commands.
  for (const char* cmd : {"pretrain --data /tmp", "finetune --data /tmp --type voc"}) {
    r = run(std::string(cmd) + " --workers -1");
    EXPECT_EQ(r.rc, 2) << cmd;
    EXPECT_NE(r.out.find("--workers: expected auto or an integer >= 0 (data.workers), found '-1'"), std::string::npos)
        << r.out;
    r = run(std::string(cmd) + " --workers auto --print-config");
    EXPECT_EQ(r.rc, 0) << r.out;
    EXPECT_NE(r.out.find("\n  workers: auto\n"), std::string::npos) << r.out;
    r = run(std::string(cmd) + " --workers 5 --print-config");
    EXPECT_NE(r.out.find("\n  workers: 5\n"), std::string::npos) << r.out;
  }
  EXPECT_NE(run("pretrain --help").out.find("--workers INT|auto"), std::string::npos);
  // The numerics' two auto keys have flags; `direct` / `false` give PyTorch's arithmetic.
  for (const std::string cmd : {"pretrain --data /tmp", "finetune --data /tmp --type voc"}) {
    r = run(cmd + " --print-config");
    EXPECT_NE(r.out.find("\n  channels_last: auto\n  conv_algorithm: auto\n"), std::string::npos) << r.out;
    r = run(cmd + " --conv-algorithm direct --channels-last false --print-config");
    EXPECT_NE(r.out.find("\n  channels_last: false\n  conv_algorithm: direct\n"), std::string::npos) << r.out;
    r = run(cmd + " --channels-last sometimes");
    EXPECT_EQ(r.rc, 1) << r.out;
    EXPECT_NE(r.out.find("train.channels_last"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("sometimes"), std::string::npos) << r.out;
    const std::string sub = cmd.substr(0, cmd.find(' '));  // pretrain, finetune
    EXPECT_NE(run(sub + " --help").out.find("(train.channels_last; default auto)"), std::string::npos) << sub;
  }
  r = run("pretrain --data /tmp --set train.batch=zero");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.out.find("key 'train.batch': expected an integer, found 'zero'"), std::string::npos) << r.out;
  r = run("pretrain --data /tmp --print-config --set model.mode=moco");
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("mode: moco"), std::string::npos) << r.out;
  // Numbers in messages as the user wrote them (std::to_string would say 0.900000, -3.000000),
  // after where the value came from.
  for (auto [set, msg] : {std::pair{"view.hue=0.9", "error: --set: view.hue: expected 0..0.5, found 0.9\n"},
                          {"view.size=-3", "error: --set: view.size: expected >= 8, found -3\n"},
                          {"optim.lr=-0.5", "error: --set: optim.lr: expected > 0, found -0.5\n"},
                          {"model.momentum=1.5", "error: --set: model.momentum: expected 0..1, found 1.5\n"}}) {
    r = run(std::string("pretrain --data /tmp --set ") + set);
    EXPECT_EQ(r.rc, 1) << set;
    EXPECT_NE(r.out.find(msg), std::string::npos) << r.out;
  }
  r = run("pretrain --config-keys");
  EXPECT_EQ(r.rc, 0);
  EXPECT_NE(r.out.find("train.checkpoint_every_iters"), std::string::npos);
  // A device name that is none is refused by the config's check, so --print-config too.
  for (const char* cmd : {"pretrain --data /tmp", "finetune --data /tmp --type voc"}) {
    r = run(std::string(cmd) + " --device gpu --print-config");
    EXPECT_EQ(r.rc, 1) << cmd;
    EXPECT_EQ(r.out, "error: command line: train.device: expected cpu, cuda or cuda:N, found 'gpu'\n") << cmd;
  }
  // A precision this device cannot run is refused before the run folder opens.
  const auto out = cp2::test::temp_dir("cli_fp16_refused") + "/run";
  for (const char* cmd : {"pretrain --data /tmp", "finetune --data /tmp --type voc"}) {
    r = run(std::string(cmd) + " --precision fp16 --out " + out);
    EXPECT_EQ(r.rc, 1) << cmd;
    EXPECT_NE(r.out.find("error: train.precision: fp16 runs on CUDA only, found device 'cpu'"), std::string::npos)
        << r.out;
    EXPECT_FALSE(std::filesystem::exists(out)) << cmd << ": " << r.out;
  }
  // So is train.cuda_graph: on where graphs cannot run.
  r = run("pretrain --data /tmp --set train.cuda_graph=on --out " + out);
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.out.find("error: train.cuda_graph: on: a CUDA graph needs a CUDA device, found cpu"), std::string::npos)
      << r.out;
  EXPECT_FALSE(std::filesystem::exists(out)) << r.out;
  r = run("pretrain --data /tmp --set train.cuda_graph=sometimes");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.out.find("train.cuda_graph"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("sometimes"), std::string::npos) << r.out;
  r = run("pretrain --data /tmp --print-config --precision auto --set train.channels_last=true");
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("precision: auto"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("channels_last: true"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("cuda_graph: off"), std::string::npos) << r.out;
  r = run("pretrain --data /tmp --print-config --set train.channels_last=auto");
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("channels_last: auto"), std::string::npos) << r.out;
}

// --alternate: every other round with fast paths off, the on rounds' figures, the pairs' ratios.
TEST(Cli, BenchAlternatesFastPathsInOneProcess) {
  auto r = run("bench finetune --threads 1 --workers 1 --arch 18 --crop 32 --scale 32 --image-width 48 "
               "--image-height 40 --batch 2 --steps 1 --warmup 0 --rounds 3 --conv-algorithm auto --channels-last "
               "--alternate bn-act,winograd");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(\n  round 1: train step [0-9.]+ img/s)"))) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(\n  round 2 \(bn-act,winograd off\): train step [0-9.]+ img/s)")))
      << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(\n  round 3: train step [0-9.]+ img/s)"))) << r.out;
  EXPECT_NE(r.out.find("(median of 2 rounds of 1 steps on a fixed batch;"), std::string::npos) << r.out;
  EXPECT_TRUE(std::regex_search(
      r.out, std::regex(R"(\nbn-act,winograd off        train step on / off [0-9.]+x \(median of 1 pairs, [0-9.]+-[0-9.]+x\); )"
                        R"(end to end on / off [0-9.]+x \(median of 1 pairs)")))
      << r.out;
  // Refused before any work: an unknown path, one round, numerics that leave every path off
  // (--conv-algorithm direct).
  for (const auto& [args, what] : std::vector<std::pair<std::string, std::string>>{
           {"--alternate bn-act,fast", "--alternate: expected a comma-separated list of winograd, tap-gemms, 1x1-gemms, "
                                       "bn-act, cp2-tiles, subgrids, onednn-mm, max-pool, aspp-pool, found 'fast' "
                                       "in "
                                       "'bn-act,fast'"},
           {"--alternate bn-act --rounds 1", "--alternate: expected --rounds >= 2 (rounds alternate with the paths on "
                                             "and off), found 1"},
           {"--alternate bn-act --rounds 2 --conv-algorithm direct",
            "--alternate: the fast paths run only under --conv-algorithm winograd or auto in fp32 on a CPU with their "
            "kernels; this run's numerics are \"fp32, NCHW\", so every round would be the same"}}) {
    const auto bad = run("bench finetune --threads 1 --arch 18 --crop 32 --scale 32 " + args);
    EXPECT_EQ(bad.rc, 1) << args << ":\n" << bad.out;
    EXPECT_NE(bad.out.find("error: " + what), std::string::npos) << args << ":\n" << bad.out;
    EXPECT_EQ(bad.out.find("data pipeline"), std::string::npos) << args << ":\n" << bad.out;
  }
  const auto images = cp2::test::synth_images("cli_bench_alternate", 4, 48, 48, 2);
  const auto bad = run("bench pretrain --threads 1 --data " + images + " --arch 18 --size 32 --batch 2 --alternate x");
  EXPECT_EQ(bad.rc, 1) << bad.out;
  EXPECT_NE(bad.out.find("error: --alternate: expected a comma-separated list of"), std::string::npos) << bad.out;
  EXPECT_EQ(bad.out.find("data pipeline"), std::string::npos) << bad.out;
}

// Issue 11 §1: every bench line carries the step's FLOPs and the share of the probe.
TEST(Cli, BenchLinesCarryFlopsAndTheProbe) {
  const auto images = cp2::test::synth_images("cli_bench_flops", 8, 64, 64, 2);
  auto r = run("bench pretrain --threads 1 --workers 1 --data " + images +
               " --arch 18 --size 32 --batch 2 --queue 16 --steps 1 --warmup 0 --rounds 1 --channels-last "
               "--conv-algorithm direct --cuda-graph auto --profile 10");
  ASSERT_EQ(r.rc, 0) << r.out;
  // --profile N: one table of the N ops with the most own time, convolutions among them.
  EXPECT_NE(r.out.find("\nprofile of 1 step, "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("aten::convolution_backward"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  the other "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("numerics       fp32, channels-last; one step = "), std::string::npos) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(\ndata pipeline +[0-9.]+ img/s  \(1 loader thread, [0-9.]+ img/s )"
                                                  R"(each; 4 batches of 2\)\n)")))
      << r.out;
  // --cuda-graph as train.cuda_graph: auto falls back naming why, on is refused before any work.
  EXPECT_NE(r.out.find("\nsteps          eager (train.cuda_graph auto: a CUDA graph needs a CUDA device, found cpu)\n"),
            std::string::npos)
      << r.out;
  auto on = run("bench pretrain --threads 1 --data " + images + " --arch 18 --size 32 --batch 2 --cuda-graph on");
  EXPECT_EQ(on.rc, 1) << on.out;
  EXPECT_NE(on.out.find("train.cuda_graph: on: a CUDA graph needs a CUDA device, found cpu"), std::string::npos)
      << on.out;
  EXPECT_EQ(on.out.find("data pipeline"), std::string::npos) << on.out;
  // A device this build or machine lacks is named before any work (it ran the data phase, then
  // stopped on LibTorch's "PyTorch is not linked with support for cuda devices").
  for (const std::string cmd : {"bench pretrain --data " + images + " --arch 18 --size 32 --batch 2",
                                std::string("bench finetune --arch 18 --crop 32 --scale 32 --batch 2"),
                                std::string("bench evaluate --arch 18 --scale 32 --eval-images 1")}) {
    const auto dev = run(cmd + " --threads 1 --device cuda:99");
    EXPECT_EQ(dev.rc, 1) << cmd << ":\n" << dev.out;
    EXPECT_NE(dev.out.find("error: --device: "), std::string::npos) << cmd << ":\n" << dev.out;
    EXPECT_NE(dev.out.find("cuda:99"), std::string::npos) << cmd << ":\n" << dev.out;
    EXPECT_EQ(dev.out.find("data pipeline"), std::string::npos) << cmd << ":\n" << dev.out;
    EXPECT_EQ(dev.out.find("not linked"), std::string::npos) << cmd << ":\n" << dev.out;
  }
  // --profile sees eager steps only: with graphs replayed (on) it is refused, before any work.
  auto prof = run("bench pretrain --threads 1 --data " + images + " --arch 18 --size 32 --batch 2 --cuda-graph on "
                  "--profile 3");
  EXPECT_EQ(prof.rc, 1) << prof.out;
  EXPECT_NE(prof.out.find("error: bench pretrain: --profile times eager steps op by op, and --cuda-graph on replays"),
            std::string::npos)
      << prof.out;
  EXPECT_EQ(prof.out.find("data pipeline"), std::string::npos) << prof.out;
  // --workers: a count or auto (as data.workers), nothing below 0.
  const auto neg = run("bench pretrain --data " + images + " --workers -1");
  EXPECT_EQ(neg.rc, 2) << neg.out;
  EXPECT_NE(neg.out.find("--workers: expected auto or an integer >= 0, found '-1'"), std::string::npos) << neg.out;
  const auto huge = run("bench finetune --workers 99999999999");
  EXPECT_EQ(huge.rc, 2) << huge.out;
  EXPECT_NE(huge.out.find("--workers: expected auto or an integer >= 0, found '99999999999'"), std::string::npos)
      << huge.out;
  for (const char* line : {"\nmodel step ", "\nend to end "}) {
    const auto at = r.out.find(line);
    ASSERT_NE(at, std::string::npos) << r.out;
    const auto text = r.out.substr(at + 1, r.out.find('\n', at + 1) - at - 1);
    EXPECT_NE(text.find("GFLOP/img"), std::string::npos) << text;
    EXPECT_NE(text.find("% of the probe's"), std::string::npos) << text;
  }
  r = run("bench finetune --threads 1 --workers auto --arch 18 --crop 32 --scale 32 --image-width 48 "
          "--image-height 40 --batch 2 --steps 1 --warmup 0 --rounds 1 --precision bf16 --profile 2 --channels-last=auto");
  ASSERT_EQ(r.rc, 0) << r.out;
  // --workers auto (the default): 2 loader threads beside a CPU step (train::auto_workers).
  EXPECT_NE(r.out.find("1 intra-op threads, 2 workers\n"), std::string::npos) << r.out;
  // The loader alone first, in all and per thread (4 x --steps batches).
  std::smatch m;
  const std::string out = r.out;
  ASSERT_TRUE(std::regex_search(out, m, std::regex(R"(\ndata pipeline +([0-9.]+) img/s  \(2 loader threads, )"
                                                   R"(([0-9.]+) img/s each; 4 batches of 2\)\n)")))
      << r.out;
  EXPECT_GT(std::stod(m[1]), 0);
  EXPECT_NEAR(std::stod(m[2]), std::stod(m[1]) / 2, 0.01);
  EXPECT_NE(r.out.find("\nprofile of 1 step, "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("outside any op"), std::string::npos) << r.out;
  const auto no_data = run("bench finetune --data-batches -2");
  EXPECT_EQ(no_data.rc, 2) << no_data.out;
  EXPECT_NE(no_data.out.find("--data-batches: expected an integer >= 0, found '-2'"), std::string::npos) << no_data.out;
  const auto bad = run("bench finetune --profile -1");
  EXPECT_EQ(bad.rc, 2) << bad.out;  // a usage error, as CLI11 exits
  EXPECT_NE(bad.out.find("--profile: expected an integer >= 0, found '-1'"), std::string::npos) << bad.out;
  // --channels-last=auto as train.channels_last: auto, NCHW for a ResNet-18.
  EXPECT_NE(r.out.find("numerics       bf16 autocast (fp32 weights, losses, optimizer), NCHW;"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("% of the probe's"), std::string::npos) << r.out;
  const auto layout = run("bench finetune --channels-last=fast");
  EXPECT_EQ(layout.rc, 1) << layout.out;
  EXPECT_NE(layout.out.find("train.channels_last: expected one of false, true, auto, found 'fast'"), std::string::npos)
      << layout.out;
}

// Counts, seeds and picture numbers below their range, and options that mean nothing without
// another, are refused naming the flag; nothing is written. (They were taken: "-1" wrapped an
// unsigned seed, --classes -1 wrote a flat folder, --train without --seg was ignored.)
TEST(Cli, OptionsOutOfRangeOrWithoutTheirPartnerAreRefused) {
  const auto dir = cp2::test::temp_dir("cli_option_refusals");
  const auto typo_yaml = cp2::test::temp_dir("cli_option_refusals_yaml") + "/typo.yaml";
  std::ofstream(typo_yaml) << "train:\n  iter: 10\n";
  const std::pair<std::string, std::string> cases[] = {
      // trials' datasets are checked before the base and Quick Tuning runs, not after them.
      {"trials --out " + dir + "/t --scale test --base-epochs 1 --datasets voc,kitti",
       "error: --datasets: expected voc, cityscapes, ade20k or a finetune config file, found 'kitti'"},
      {"trials --out " + dir + "/t --scale test --base-epochs 1 --datasets " + typo_yaml,
       "error: " + typo_yaml + ": unknown key 'train.iter' (did you mean 'train.iters'?); valid keys:"},
      {"synth --out " + dir + "/s --classes -1", "--classes: expected an integer >= 0, found '-1'"},
      {"synth --out " + dir + "/s --seed -1", "--seed: expected an integer >= 0, found '-1'"},
      {"synth --out " + dir + "/s --count 0", "--count: expected a positive integer, found '0'"},
      {"synth --out " + dir + "/s --train 4", "--train requires --seg"},
      {"synth --out " + dir + "/s --boundaries", "--boundaries requires --seg"},
      {"synth --out " + dir + "/s --seg voc --shapes 0", "--shapes: expected a positive integer, found '0'"},
      {"synth --out " + dir + "/s --ext gif", "error: synth --ext: expected jpg or png, found 'gif'"},
      {"pretrain --data " + dir + " --init-preset timm --print-config",
       "error: command line: key 'train.init_preset': expected one of auto, torchvision, moco, cp2, mmseg, found 'timm'"},
      {"report " + dir + " --pictures -1", "--pictures: expected an integer >= 0, found '-1'"},
      {"ablate --out " + dir + "/a --pictures -2", "--pictures: expected an integer >= 0, found '-2'"},
      {"demo --out " + dir + "/d --seed -1", "--seed: expected an integer >= 0, found '-1'"},
      {"bench pretrain --data " + dir + " --data-batches -1", "--data-batches: expected an integer >= 0, found '-1'"},
      {"convert " + dir + "/in.pt " + dir + "/out.pt --output-stride 8", "--output-stride requires --arch"},
      {"convert " + dir + "/in.pt " + dir + "/out.pt --strict", "--strict requires --arch"},
      {"convert " + fixture("moco_r18_legacy.pt") + " " + dir + "/out.pt --to timm",
       "error: --to: expected one of torchvision, moco, cp2, mmseg, found 'timm'"},
  };
  for (const auto& [args, message] : cases) {
    const auto r = run(args);
    EXPECT_NE(r.rc, 0) << args;
    EXPECT_EQ(r.out.rfind(message + "\n", 0), 0u) << args << "\n" << r.out;
  }
  EXPECT_TRUE(std::filesystem::is_empty(dir)) << "a refused command wrote something";
}

TEST(Cli, FinetuneEvaluatePredict) {
  const auto dir = cp2::test::temp_dir("cli_finetune");
  auto r = run("synth --seg voc --out " + dir + "/voc --train 4 --val 2 --width 64 --height 48 --boundaries");
  ASSERT_EQ(r.rc, 0) << r.out;
  r = run("--threads 2 finetune --config " CP2_CONFIGS "/cpu_seg_tiny.yaml --data " + dir + "/voc --out " + dir +
          "/run --iters 6 --eval-every 3 --quiet");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("best mIoU"), std::string::npos) << r.out;
  // evaluate: the table (class names), the summary and the JSON next to the model.
  r = run("--threads 2 evaluate " + dir + "/run --quiet");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("aeroplane"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("mIoU"), std::string::npos);
  std::ifstream js(dir + "/run/best_eval.json");
  std::string json((std::istreambuf_iterator<char>(js)), std::istreambuf_iterator<char>());
  EXPECT_NE(json.find("\"miou\""), std::string::npos);
  EXPECT_NE(json.find("\"confusion\""), std::string::npos);
  r = run("--threads 2 evaluate " + dir + "/run --mode slide --set eval.crop_h=40 --set eval.crop_w=40 --flip --scales 0.75,1 --quiet --json " +
          dir + "/slide.json");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_TRUE(std::filesystem::exists(dir + "/slide.json"));
  // predict: palette label PNGs at the input size, and overlays. A temp file that a killed
  // predict left (its pid no live process) is removed and said; a live process's is kept.
  std::filesystem::create_directories(dir + "/pred");
  const std::string dead = dir + "/pred/val_000001.png.4194304.tmp",
                    live = dir + "/pred/val_000001.png." + std::to_string(getpid()) + ".tmp";
  std::ofstream(dead) << "half a png";
  std::ofstream(live) << "being written";
  r = run("--threads 2 predict " + dir + "/run " + dir + "/voc/JPEGImages --out " + dir + "/pred --quiet");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("pred: removed 1 unfinished file (10 bytes) of a write that was killed: " + dead), std::string::npos) << r.out;
  EXPECT_FALSE(std::filesystem::exists(dead));
  EXPECT_TRUE(std::filesystem::exists(live));
  std::filesystem::remove(live);
  EXPECT_TRUE(std::filesystem::exists(dir + "/pred/train_000000_overlay.jpg"));
  auto lab = cp2::seg::read_label_png(dir + "/pred/val_000001.png");
  EXPECT_EQ(lab.size(0), 48);
  EXPECT_EQ(lab.size(1), 64);
  // Bad inputs: one message, non-zero exit.
  r = run("finetune --config " CP2_CONFIGS "/cpu_seg_tiny.yaml --data " + dir + "/voc --type cityscapes --out " + dir + "/bad");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.out.find("cityscapes layout: expected leftImg8bit/train"), std::string::npos) << r.out;
  EXPECT_FALSE(std::filesystem::exists(dir + "/bad")) << "a wrong layout left a run folder";
  r = run("finetune --config " CP2_CONFIGS "/cpu_seg_tiny.yaml --data " + dir + "/voc --set pipeline.crop_hh=3");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.out.find("pipeline.crop_h"), std::string::npos) << r.out;  // did you mean
  r = run("evaluate " + dir + "/nothing");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.out.find("nothing"), std::string::npos) << r.out;
  r = run("evaluate " CP2_FIXTURES "/moco_r18_legacy.pt --data " + dir + "/voc");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.out.find("finetune it first"), std::string::npos) << r.out;
}
