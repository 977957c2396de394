// `trellis quantize`: placeholder registration; implemented in the issue 4 work.
#include <stdexcept>

#include "commands.h"

namespace trellis::cli {

Handler add_quantize(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("quantize", "Quantize a Hugging Face model to EXL3 (not implemented yet)");
  return [cmd]() -> int {
    if (!cmd->parsed()) return -1;
    throw std::runtime_error("trellis quantize is not implemented yet");
  };
}

}  // namespace trellis::cli
