// backends/registry.h: choosing a backend by name and listing the devices of every backend
// compiled into this build.
//
// Device strings: "auto", "cpu", "cuda[:N]", "vulkan[:N]". A backend that is not compiled in, or a
// device index that does not exist, is a kUnsupported / kInvalidArgument error naming what is
// available. "auto" is auto_device(): CUDA device 0 if there is one, else the first discrete GPU
// Vulkan lists, else the CPU; a Vulkan device that fails to open falls back to the CPU with a
// warning.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "core/thread_pool.h"
#include "exl3/codebook.h"

namespace trellis {

// `threads` is used by the CPU backend only (0: all hardware threads).
std::unique_ptr<Backend> make_backend(const std::string& device, size_t threads = 0);

// The device "auto" stands for, from a list_devices() result: "cuda:0", "vulkan:N" or "cpu".
// Integrated, virtual and CPU Vulkan devices (lavapipe) are never chosen: the CPU backend is
// faster than a CPU Vulkan driver, and an integrated GPU is picked only on request.
std::string auto_device(const std::vector<DeviceInfo>& devices);

// auto_device() over this machine's GPUs (CUDA's, and Vulkan's only when `vulkan` and there is
// no CUDA device), without creating any backend. vulkan = false is "auto" for work that has no
// Vulkan version (the quantizer's tile encoder).
std::string resolve_auto_device(bool vulkan = true);

// "cpu", "cuda:N" or "vulkan:N": the device string that selects `d`.
std::string device_id(const DeviceInfo& d);

// Every device of every compiled-in backend, CPU first. Backends whose runtime is missing (no
// driver) contribute nothing; they do not throw.
std::vector<DeviceInfo> list_devices();

// The backends compiled into this build, e.g. {"cpu", "cuda", "vulkan"}.
std::vector<std::string> compiled_backends();

// The quantizer's tile encoder (spec 5.7) on a device: encodes n_tiles tiles of 256 binary16
// values (trellis order) with K bits, writing states and/or decoded values (either nullable);
// `estimate`: one unconstrained pass, for scoring only (states not valid to store).
using TileEncodeFn = std::function<void(const uint16_t* x, size_t n_tiles, int K, exl3::Codebook cb,
                                        uint16_t* states, uint16_t* decoded, bool estimate)>;
// "cpu" (SIMD, threads of `pool`) or "cuda[:N]" (bit-identical states). kUnsupported when the
// device kind has no encoder in this build.
TileEncodeFn make_tile_encoder(const std::string& device, ThreadPool& pool);

}  // namespace trellis
