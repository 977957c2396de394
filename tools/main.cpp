// trellis: the command-line tool. A thin layer over the public API in include/trellis/.
#include <cstdio>
#include <exception>
#include <vector>

#include "commands.h"
#include "trellis/error.h"
#include "trellis/settings.h"

int main(int argc, char** argv) {
  CLI::App app{"trellis: EXL3 trellis-quantized LLMs on CPUs and GPUs"};
  app.set_version_flag("--version", trellis::version_string());
  app.require_subcommand(1);
  int threads = 0;
  int verbose = 0;
  bool quiet = false;
  app.add_option("--threads", threads, "Worker threads for CPU work (default: all hardware threads)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("-v,--verbose", verbose, "More output (repeat for debug)");
  app.add_flag("-q,--quiet", quiet, "Errors only, no progress bars");
  app.fallthrough();

  std::vector<trellis::cli::Handler> handlers = {
      trellis::cli::add_run(app),
      trellis::cli::add_chat(app),
      trellis::cli::add_inspect(app),
      trellis::cli::add_dequantize(app),
      trellis::cli::add_ppl(app),
      trellis::cli::add_kld(app),
      trellis::cli::add_logits(app),
      trellis::cli::add_quantize(app),
      trellis::cli::add_devices(app),
  };

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  trellis::set_num_threads(static_cast<size_t>(threads));
  trellis::set_verbosity(quiet ? 0 : 1 + verbose);
  try {
    for (auto& handler : handlers) {
      const int rc = handler();
      if (rc >= 0) return rc;
    }
  } catch (const trellis::Error& e) {
    std::fprintf(stderr, "trellis: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "trellis: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
