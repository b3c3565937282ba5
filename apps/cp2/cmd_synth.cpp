// cp2 synth: writes generated image folders and segmentation datasets to train on without
// downloading anything: drawn shapes, or scenes of real Fashion-MNIST items (Debian package).
#include <cstdio>
#include <string>

#include "commands.h"
#include "cp2/data/synth.h"
#include "cp2/seg/synth.h"

namespace cp2::app {

Command register_synth(CLI::App& app) {
  auto o = std::make_shared<data::SynthOptions>();
  auto out = std::make_shared<std::string>();
  auto* c = app.add_subcommand("synth", "Write a folder of generated images (for demos, tests and benchmarks)");
  c->add_option("--out", *out, "folder to write")->required();
  c->add_option("--count", o->count, "number of images")->capture_default_str()->check(positive_int);
  c->add_option("--width", o->width, "image width")->capture_default_str()->check(positive_int);
  c->add_option("--height", o->height, "image height")->capture_default_str()->check(positive_int);
  c->add_option("--classes", o->classes, "class folders (0 = flat)")->capture_default_str()->check(non_negative_int);
  c->add_option("--ext", o->ext, "jpg or png")->capture_default_str();
  c->add_option("--seed", o->seed, "seed")->capture_default_str()->check(non_negative_int);
  c->add_option("--source", o->source,
                "shapes (drawn primitives) or fashion-mnist (real Fashion-MNIST items on procedural backgrounds)")
      ->capture_default_str();
  c->add_option("--fashion-dir", o->fashion_dir, "Fashion-MNIST's IDX files (default: Debian's /usr/share/datasets/fashion-mnist)");
  auto so = std::make_shared<seg::SynthSegOptions>();
  auto seg_layout = std::make_shared<std::string>();
  auto* seg = c->add_option("--seg", *seg_layout,
                            "write a segmentation dataset instead, in this layout: voc, cityscapes, ade20k, list");
  // The scene options mean nothing without --seg: refused rather than ignored.
  auto scene_count = [&](const char* flag, int& v, const char* help) {
    c->add_option(flag, v, help)->capture_default_str()->check(positive_int)->needs(seg);
  };
  scene_count("--train", so->train, "--seg: training images");
  scene_count("--val", so->val, "--seg: validation images");
  scene_count("--seg-classes", so->classes, "--seg: foreground classes drawn");
  scene_count("--shapes", so->shapes, "--seg: shapes per image");
  c->add_flag("--boundaries", so->boundaries, "--seg voc: 255 outlines around shapes")->needs(seg);
  c->add_flag("--label-ids", so->label_ids, "--seg cityscapes: write labelIds instead of labelTrainIds")->needs(seg);
  scene_count("--max-items", so->max_items, "--seg with fashion-mnist: items per scene, 1..N");
  c->add_option("--backgrounds", so->backgrounds,
                "--seg with fashion-mnist: all (gradients, noise, stripes, blobs, tiles) or plain (gradients only)")
      ->capture_default_str()
      ->needs(seg);
  c->add_option("--fashion-classes", so->fashion_classes,
                "--seg with fashion-mnist: fine (the 10 classes) or coarse (top, trousers, footwear, bag)")
      ->capture_default_str()
      ->needs(seg);
  return {c, [o, out, so, seg_layout] {
            if (!seg_layout->empty()) {
              so->layout = *seg_layout;
              so->width = o->width;
              so->height = o->height;
              so->seed = o->seed;
              so->source = o->source;
              so->fashion_dir = o->fashion_dir;
              auto splits = seg::write_synthetic_dataset(*out, *so);
              std::printf("wrote a %s-layout dataset (%d train, %d val images) to %s\n"
                          "data.train_split: %s\ndata.val_split: %s\n",
                          so->layout.c_str(), so->train, so->val, out->c_str(), splits.first.c_str(),
                          splits.second.c_str());
              return 0;
            }
            auto paths = data::write_synthetic_images(*out, *o);
            std::printf("wrote %s to %s\n", count_of(paths.size(), "image").c_str(), out->c_str());
            return 0;
          }};
}

}  // namespace cp2::app
