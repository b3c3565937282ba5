// cp2: CP² copy-paste contrastive pretraining and DeepLabV3 finetuning on LibTorch.
#include <cstdio>
#include <exception>
#include <vector>

#include "commands.h"
#include "cp2/common.h"

int main(int argc, char** argv) {
  CLI::App app{"cp2: CP² copy-paste contrastive pretraining for semantic segmentation (LibTorch)"};
  app.require_subcommand(1);
  app.fallthrough();  // global options (--threads) may also follow the subcommand
  int threads = 0;
  app.add_option("--threads", threads, "intra-op threads (default: all cores)");
  std::vector<cp2::app::Command> cmds{cp2::app::register_convert(app), cp2::app::register_demo(app),
                                       cp2::app::register_loss(app), cp2::app::register_pretrain(app),
                                       cp2::app::register_synth(app), cp2::app::register_bench(app),
                                       cp2::app::register_finetune(app), cp2::app::register_evaluate(app),
                                       cp2::app::register_predict(app)};
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    cp2::set_threads(threads);
    for (auto& c : cmds)
      if (c.sub->parsed()) return c.run();
  } catch (const cp2::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 1;
}
