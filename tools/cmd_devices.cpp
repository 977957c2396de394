// `trellis devices [--json]`: every backend and device this build can use.
#include <nlohmann/json.hpp>

#include <cstdio>
#include <memory>
#include <string>

#include "backends/registry.h"
#include "commands.h"

namespace trellis::cli {

Handler add_devices(CLI::App& app) {
  auto json = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand("devices", "List the backends and devices trellis can run on");
  cmd->add_flag("--json", *json, "Print a JSON array instead of text");
  cmd->footer("Select one with --device NAME[:N] (e.g. cpu, cuda:0, vulkan:1) on run, chat, ppl, kld, logits.");
  return [json, cmd]() {
    if (!cmd->parsed()) return -1;
    const auto devices = list_devices();
    if (*json) {
      nlohmann::ordered_json out = nlohmann::ordered_json::array();
      for (const DeviceInfo& d : devices) {
        out.push_back({{"device", device_id(d)},
                       {"backend", d.backend},
                       {"index", d.index},
                       {"name", d.name},
                       {"kind", d.kind},
                       {"memory_bytes", d.memory_bytes},
                       {"free_bytes", d.free_bytes},
                       {"threads", d.threads},
                       {"subgroup_size", d.subgroup_size},
                       {"features", d.features}});
      }
      std::printf("%s\n", out.dump(2).c_str());
      return 0;
    }
    std::string compiled;
    for (const std::string& b : compiled_backends()) compiled += (compiled.empty() ? "" : ", ") + b;
    std::printf("backends in this build: %s\n", compiled.c_str());
    for (const DeviceInfo& d : devices) {
      const std::string id = device_id(d);
      std::printf("\n%-10s %s\n", id.c_str(), d.name.c_str());
      if (d.backend != "cpu") std::printf("  kind       %s\n", d.kind.c_str());
      if (d.memory_bytes && d.free_bytes)
        std::printf("  memory     %.1f GiB total, %.1f GiB free\n", d.memory_bytes / 1073741824.0,
                    d.free_bytes / 1073741824.0);
      else if (d.memory_bytes)  // the driver reports no budget
        std::printf("  memory     %.1f GiB total, free unknown\n", d.memory_bytes / 1073741824.0);
      if (d.threads) std::printf("  %-10s %d\n", d.backend == "cpu" ? "threads" : "units", d.threads);
      if (d.subgroup_size) std::printf("  subgroup   %d\n", d.subgroup_size);
      if (!d.features.empty()) {
        std::string f;
        for (const std::string& s : d.features) f += (f.empty() ? "" : " ") + s;
        std::printf("  features   %s\n", f.c_str());
      }
    }
    return 0;
  };
}

}  // namespace trellis::cli
