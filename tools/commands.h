// tools/commands.h: the subcommands of the `trellis` CLI. Each registers its options on the
// app and returns the handler to run when it was chosen.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>

namespace trellis::cli {

using Handler = std::function<int()>;

Handler add_inspect(CLI::App& app);
Handler add_dequantize(CLI::App& app);
Handler add_ppl(CLI::App& app);
Handler add_kld(CLI::App& app);
Handler add_logits(CLI::App& app);
Handler add_run(CLI::App& app);      // tools/cmd_run.cpp
Handler add_chat(CLI::App& app);     // tools/cmd_run.cpp
Handler add_quantize(CLI::App& app); // tools/cmd_quantize.cpp
Handler add_devices(CLI::App& app);  // tools/cmd_devices.cpp

}  // namespace trellis::cli
