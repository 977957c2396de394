// `trellis run` and `trellis chat`: placeholder registration; implemented in the issue 3 work.
#include <stdexcept>

#include "commands.h"

namespace trellis::cli {

Handler add_run(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("run", "Generate text from a prompt (not implemented yet)");
  return [cmd]() -> int {
    if (!cmd->parsed()) return -1;
    throw std::runtime_error("trellis run is not implemented yet");
  };
}

Handler add_chat(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("chat", "Interactive chat (not implemented yet)");
  return [cmd]() -> int {
    if (!cmd->parsed()) return -1;
    throw std::runtime_error("trellis chat is not implemented yet");
  };
}

}  // namespace trellis::cli
