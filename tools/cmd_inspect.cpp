// `trellis inspect DIR [--json] [--tensors]`
#include <cstdio>
#include <memory>

#include "commands.h"
#include "trellis/model_tools.h"

namespace trellis::cli {

Handler add_inspect(CLI::App& app) {
  struct Options {
    std::string dir;
    bool json = false;
    bool tensors = false;
  };
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("inspect", "Describe and validate a model directory (EXL3 or unquantized)");
  cmd->add_option("DIR", opt->dir, "Model directory (config.json + *.safetensors)")->required();
  cmd->add_flag("--json", opt->json, "Print one JSON object instead of text");
  cmd->add_flag("-t,--tensors", opt->tensors, "List every tensor (text output)");
  cmd->footer(
      "Exits 0 when the directory is a valid model trellis can read, non-zero with a message naming\n"
      "the file, tensor or field otherwise.");
  return [opt, cmd]() {
    if (!cmd->parsed()) return -1;
    const InspectReport report = inspect_model(opt->dir);
    const std::string text = opt->json ? inspect_report_json(report) + "\n" : inspect_report_text(report, opt->tensors);
    std::fwrite(text.data(), 1, text.size(), stdout);
    return 0;
  };
}

}  // namespace trellis::cli
