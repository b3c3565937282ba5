// cp2 synth: writes a folder of generated images (shapes on gradients) to train on
// without downloading anything.
#include <cstdio>
#include <string>

#include "commands.h"
#include "cp2/data/synth.h"

namespace cp2::app {

Command register_synth(CLI::App& app) {
  auto o = std::make_shared<data::SynthOptions>();
  auto out = std::make_shared<std::string>();
  auto* c = app.add_subcommand("synth", "Write a folder of generated images (for demos, tests and benchmarks)");
  c->add_option("--out", *out, "folder to write")->required();
  c->add_option("--count", o->count, "number of images")->capture_default_str();
  c->add_option("--width", o->width, "image width")->capture_default_str();
  c->add_option("--height", o->height, "image height")->capture_default_str();
  c->add_option("--classes", o->classes, "class folders (0 = flat)")->capture_default_str();
  c->add_option("--ext", o->ext, "jpg or png")->capture_default_str();
  c->add_option("--seed", o->seed, "seed")->capture_default_str();
  return {c, [o, out] {
            auto paths = data::write_synthetic_images(*out, *o);
            std::printf("wrote %zu images to %s\n", paths.size(), out->c_str());
            return 0;
          }};
}

}  // namespace cp2::app
