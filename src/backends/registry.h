// backends/registry.h: choosing a backend by name and listing the devices of every backend
// compiled into this build.
//
// Device strings: "auto" (CUDA device 0 if present, else the CPU), "cpu", "cuda[:N]",
// "vulkan[:N]". A backend that is not compiled in, or a device index that does not exist, is a
// kUnsupported / kInvalidArgument error naming what is available.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backends/backend.h"

namespace trellis {

// `threads` is used by the CPU backend only (0: all hardware threads).
std::unique_ptr<Backend> make_backend(const std::string& device, size_t threads = 0);

// Every device of every compiled-in backend, CPU first. Backends whose runtime is missing (no
// driver) contribute nothing; they do not throw.
std::vector<DeviceInfo> list_devices();

// The backends compiled into this build, e.g. {"cpu", "cuda", "vulkan"}.
std::vector<std::string> compiled_backends();

}  // namespace trellis
