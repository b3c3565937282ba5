// Config keys: YAML files, overrides, errors listing what is valid, round trips.
#include <fstream>

#include "../helpers.h"
#include "cp2/common.h"
#include "cp2/config/fields.h"
#include "cp2/pretrain/config.h"
#include "cp2/seg/config.h"

namespace cp2::test {
namespace {

TEST(ConfigFields, YamlOverridesAndRoundTrip) {
  pretrain::PretrainConfig cfg;
  auto f = cfg.fields();
  f.load_yaml_text("train:\n  epochs: 7\n  out: \"runs/a: b\"\nview:\n  mean: [0.5, 0.25, 0.125]\nmodel:\n  mode: dense-only\n",
                   "test.yaml");
  f.apply_overrides({"train.batch=12", "optim.name=adamw"});
  EXPECT_EQ(cfg.train.epochs, 7);
  EXPECT_EQ(cfg.train.out, "runs/a: b");
  EXPECT_EQ(cfg.train.batch, 12);
  EXPECT_EQ(cfg.optim.name, "adamw");
  EXPECT_EQ(cfg.model.mode, "dense-only");
  EXPECT_DOUBLE_EQ(cfg.aug.view.mean[2], 0.125);
  // The dump reads back to the same values.
  pretrain::PretrainConfig again;
  auto g = again.fields();
  g.load_yaml_text(f.to_yaml(), "dump");
  EXPECT_EQ(g.to_yaml(), f.to_yaml());
  EXPECT_EQ(again.train.out, "runs/a: b");
}

TEST(ConfigFields, UnknownKeysAndBadValuesListWhatIsValid) {
  pretrain::PretrainConfig cfg;
  auto f = cfg.fields();
  expect_error([&] { f.set("train.epoch", "3", "cfg.yaml"); },
               {"cfg.yaml", "unknown key 'train.epoch'", "did you mean 'train.epochs'", "train.batch (int)", "optim.lr (float)"});
  // A key under the wrong section: its name in the others.
  expect_error([&] { f.set("model.batch", "3", "--set"); }, {"unknown key 'model.batch' (did you mean 'train.batch'?)"});
  expect_error([&] { f.set("train.lr", "0.1", "--set"); }, {"(did you mean 'optim.lr'?)"});
  seg::FinetuneConfig ft;
  auto g = ft.fields();
  expect_error([&] { g.set("train.crop", "64", "--set"); },
               {"unknown key 'train.crop' (did you mean 'pipeline.crop_h', 'pipeline.crop_w', 'eval.crop_h' or 'eval.crop_w'?)"});
  expect_error([&] { f.set("train.zzzzzz", "3", "--set"); }, {"unknown key 'train.zzzzzz'; valid keys:"});
  expect_error([&] { f.set("train.epochs", "three", "--set"); }, {"--set", "train.epochs", "an integer", "'three'"});
  expect_error([&] { f.set("model.mode", "dense", "cfg.yaml"); },
               {"model.mode", "one of cp2, instance-only, dense-only, no-copy-paste, moco", "'dense'"});
  expect_error([&] { f.set("view.mean", "[1, 2]", "x"); }, {"view.mean", "3 numbers"});
  expect_error([&] { f.set("optim.lr", "nan", "x"); }, {"optim.lr", "finite number"});
  expect_error([&] { f.apply_overrides({"train.epochs"}); }, {"key=value", "train.epochs"});
  expect_error([&] { f.load_yaml_text("train: [1, 2", "broken.yaml"); }, {"broken.yaml", "invalid YAML"});
  expect_error([&] { f.load_yaml_file("/nonexistent/cp2.yaml"); }, {"/nonexistent/cp2.yaml", "not found"});
}

// data.workers is a count or auto: auto resolves by the run's device (2 beside a CPU step, the
// process's cores but one beside a GPU step); an explicit count is kept whatever the device.
TEST(ConfigFields, LoaderWorkersAutoOrACount) {
  pretrain::PretrainConfig cfg;
  auto f = cfg.fields();
  EXPECT_EQ(f.value("data.workers"), "auto");  // the default
  EXPECT_NE(f.to_yaml().find("  workers: auto\n"), std::string::npos) << f.to_yaml();
  EXPECT_EQ(cfg.data.workers_for("cpu"), 2);
  EXPECT_EQ(train::auto_workers(false, 64), 2);
  EXPECT_EQ(train::auto_workers(true, 16), 15);
  EXPECT_EQ(train::auto_workers(true, 2), 2);
  EXPECT_EQ(train::auto_workers(true, 1), 2);
  EXPECT_EQ(cfg.data.workers_for("cuda:1"), train::auto_workers(true, cores_per_process()));
  // On a 16-core process the device decides (on 2 cores both rules give 2).
  EXPECT_EQ(cfg.data.workers_for("cuda:1", 16), 15);
  EXPECT_EQ(cfg.data.workers_for("cuda", 16), 15);
  EXPECT_EQ(cfg.data.workers_for("cpu", 16), 2);
  f.set("data.workers", "3", "--set");
  EXPECT_EQ(cfg.data.workers_for("cpu"), 3);
  EXPECT_EQ(cfg.data.workers_for("cuda"), 3);
  EXPECT_EQ(cfg.data.workers_for("cuda", 16), 3);
  EXPECT_EQ(cfg.loader_options().workers, 3);
  f.set("data.workers", "0", "--set");
  EXPECT_EQ(cfg.data.workers_for("cuda"), 0);
  // The dump of auto reads back as auto.
  f.set("data.workers", "auto", "run.yaml");
  pretrain::PretrainConfig again;
  again.data.workers = 5;
  auto g = again.fields();
  g.load_yaml_text(f.to_yaml(), "dump");
  EXPECT_EQ(g.value("data.workers"), "auto");
  for (const char* bad : {"-1", "two", "1.5", ""})
    expect_error([&] { f.set("data.workers", bad, "cp2.yaml"); },
                 {"cp2.yaml: key 'data.workers': expected auto or an integer >= 0, found '" + std::string(bad) + "'"});
}

TEST(ConfigFields, ValidateRejectsBadValuesNamingTheKey) {
  pretrain::PretrainConfig cfg;
  cfg.data.root = "/tmp";
  cfg.train.batch = 0;
  expect_error([&] { cfg.validate(); }, {"train.batch", ">= 1", "0"});
  cfg.train.batch = 6;
  cfg.model.key_bn_splits = 4;
  expect_error([&] { cfg.validate(); }, {"model.key_bn_splits", "does not divide", "6"});
  cfg.model.key_bn_splits = 1;
  cfg.aug.view.gray_p = 1.5;
  expect_error([&] { cfg.validate(); }, {"view.gray_p", "probability", "1.5"});
  cfg.aug.view.gray_p = 0.2;
  cfg.model.arch = 19;
  expect_error([&] { cfg.validate(); }, {"19"});
  pretrain::PretrainConfig empty;
  expect_error([&] { empty.validate(); }, {"data.root"});
}

TEST(ConfigFields, ValidateErrorsNameWhereTheValueCameFrom) {
  seg::FinetuneConfig cfg;
  auto f = cfg.fields();
  EXPECT_EQ(f.origin("train.batch"), "");  // a default
  f.load_yaml_text("model:\n  arch: 19\neval:\n  stride_w: 0\n", "voc.yaml");
  f.set("train.batch", "0", "command line");
  EXPECT_EQ(f.origin("model.arch"), "voc.yaml");
  EXPECT_EQ(f.origin("train.batch"), "command line");
  // The whole message of validate() run under check_naming_origin.
  auto message = [&](const std::function<void()>& fn = {}) -> std::string {
    try {
      config::check_naming_origin(f, fn ? fn : [&] { cfg.validate(); });
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  // A key at its default is left as it is.
  EXPECT_EQ(message(), "data.root: expected the dataset folder (--data DIR or data.root in the config)");
  f.set("data.root", "/tmp", "command line");
  EXPECT_EQ(message(), "voc.yaml: model.arch: expected one of 18, 34, 50, 101, found 19");
  f.apply_overrides({"model.arch=18"});
  EXPECT_EQ(f.origin("model.arch"), "--set");
  EXPECT_EQ(message(), "command line: train.batch: expected >= 1, found 0");
  f.apply_overrides({"train.batch=2"});
  // A relation between keys names each key's origin, once.
  f.load_yaml_text("pipeline:\n  ratio_min: 2.5\n", "more.yaml");
  f.apply_overrides({"pipeline.ratio_max=2"});
  EXPECT_EQ(message(), "more.yaml and --set: pipeline.ratio_min/ratio_max: expected 0 < min <= max, found 2.5, 2");
  f.apply_overrides({"pipeline.ratio_min=0.5", "pipeline.ratio_max=0.25"});
  EXPECT_EQ(message(), "--set: pipeline.ratio_min/ratio_max: expected 0 < min <= max, found 0.5, 0.25");
  f.apply_overrides({"pipeline.ratio_max=1"});
  EXPECT_EQ(message(), "voc.yaml: eval.stride_w: expected >= 1, found 0");
  f.apply_overrides({"eval.stride_w=341"});
  EXPECT_EQ(message(), "no error");
  // A message that starts with no key is left as it is.
  EXPECT_EQ(message([] { throw Error("voc layout: expected the split file x"); }), "voc layout: expected the split file x");
  EXPECT_EQ(message([] { throw Error("WORLD_SIZE: expected >= 1, found 0"); }), "WORLD_SIZE: expected >= 1, found 0");

  // A relation across sections (model.key_bn_splits/train.batch) names both keys' origins.
  pretrain::PretrainConfig pre;
  auto p = pre.fields();
  p.set("data.root", "/tmp", "command line");
  p.load_yaml_text("model:\n  key_bn_splits: 4\n", "cp2.yaml");
  p.set("train.batch", "6", "command line");
  const std::string expected =
      "cp2.yaml and command line: model.key_bn_splits/train.batch: key_bn_splits 4 does not divide the batch 6 "
      "(batch norm runs over equal groups of the batch)";
  try {
    config::check_naming_origin(p, [&] { pre.validate(); });
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), expected);
  }
}

TEST(ConfigFields, ShippedConfigsLoad) {
  for (const char* name : {"cp2_r50_224.yaml", "cp2_r50_224_quick_tuning.yaml", "moco_r50_224.yaml", "cpu_r18_96.yaml",
                           "cpu_tiny.yaml"}) {
    pretrain::PretrainConfig cfg;
    auto f = cfg.fields();
    EXPECT_NO_THROW(f.load_yaml_file(std::string(CP2_CONFIGS) + "/" + name)) << name;
    cfg.data.root = cfg.data.root.empty() ? "/tmp" : cfg.data.root;
    EXPECT_NO_THROW(cfg.validate()) << name;
  }
}

}  // namespace
}  // namespace cp2::test
