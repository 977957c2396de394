// backends/registry.cpp: see registry.h.
#include "backends/registry.h"

#include <charconv>
#include <memory>
#include <vector>

#include "core/error.h"
#include "core/log.h"

#include "backends/cpu/tile_encoder.h"
#if TRELLIS_WITH_CUDA
#include "backends/cuda/cuda_api.h"
#if __has_include("backends/cuda/cuda_encode.h")
#include "backends/cuda/cuda_encode.h"
#define TRELLIS_HAVE_CUDA_ENCODER 1
#endif
#endif
#if TRELLIS_WITH_VULKAN
#include "backends/vulkan/vulkan_api.h"
#endif

namespace trellis {
namespace {

// Splits "name[:N]" into name and index (default 0).
std::pair<std::string, int> parse_device(const std::string& device) {
  const size_t colon = device.find(':');
  if (colon == std::string::npos) return {device, 0};
  int index = -1;
  const char* first = device.data() + colon + 1;
  const char* last = device.data() + device.size();
  const auto [ptr, ec] = std::from_chars(first, last, index);
  if (ec != std::errc() || ptr != last || index < 0 || first == last)
    fail(ErrorKind::kInvalidArgument, "bad device '{}': expected NAME or NAME:INDEX, e.g. cuda:0", device);
  return {device.substr(0, colon), index};
}

std::string available() {
  std::string s;
  for (const DeviceInfo& d : list_devices()) {
    if (!s.empty()) s += ", ";
    s += device_id(d);
  }
  return s;
}

}  // namespace

std::vector<std::string> compiled_backends() {
  std::vector<std::string> b = {"cpu"};
#if TRELLIS_WITH_CUDA
  b.push_back("cuda");
#endif
#if TRELLIS_WITH_VULKAN
  b.push_back("vulkan");
#endif
  return b;
}

std::vector<DeviceInfo> list_devices() {
  std::vector<DeviceInfo> out;
  out.push_back(make_cpu_backend(0)->info());
#if TRELLIS_WITH_CUDA
  for (DeviceInfo& d : list_cuda_devices()) out.push_back(std::move(d));
#endif
#if TRELLIS_WITH_VULKAN
  for (DeviceInfo& d : list_vulkan_devices()) out.push_back(std::move(d));
#endif
  return out;
}

std::string device_id(const DeviceInfo& d) {
  return d.backend == "cpu" ? std::string("cpu") : d.backend + ":" + std::to_string(d.index);
}

std::string auto_device(const std::vector<DeviceInfo>& devices) {
  for (const DeviceInfo& d : devices)
    if (d.backend == "cuda") return device_id(d);
  for (const DeviceInfo& d : devices)
    if (d.backend == "vulkan" && d.kind == "discrete_gpu") return device_id(d);
  return "cpu";
}

std::string resolve_auto_device(bool vulkan) {
  std::vector<DeviceInfo> gpus;  // the CPU's entry is implied; Vulkan is asked only without CUDA
#if TRELLIS_WITH_CUDA
  gpus = list_cuda_devices();
#endif
#if TRELLIS_WITH_VULKAN
  if (gpus.empty() && vulkan) gpus = list_vulkan_devices();
#endif
  (void)vulkan;
  return auto_device(gpus);
}

std::unique_ptr<Backend> make_backend(const std::string& device, size_t threads) {
  const auto [name, index] = parse_device(device);
  if (name == "auto") {
    const std::string chosen = resolve_auto_device(true);
    if (chosen.starts_with("vulkan")) {
      try {
        return make_backend(chosen, threads);
      } catch (const Error& e) {
        log_warn("--device auto: {} failed to open ({}); using the CPU", chosen, e.what());
        return make_cpu_backend(threads);
      }
    }
    return make_backend(chosen, threads);
  }
  if (name == "cpu") {
    if (index != 0) fail(ErrorKind::kInvalidArgument, "device '{}': there is one CPU device, cpu", device);
    return make_cpu_backend(threads);
  }
  if (name == "cuda") {
#if TRELLIS_WITH_CUDA
    const size_t n = list_cuda_devices().size();
    if (static_cast<size_t>(index) >= n)
      fail(ErrorKind::kUnsupported, "device '{}' does not exist ({} CUDA device{}; available: {})", device, n,
           n == 1 ? "" : "s", available());
    return make_cuda_backend(index);
#else
    fail(ErrorKind::kUnsupported, "device '{}': this build has no CUDA backend (available: {})", device,
         available());
#endif
  }
  if (name == "vulkan") {
#if TRELLIS_WITH_VULKAN
    const size_t n = list_vulkan_devices().size();
    if (static_cast<size_t>(index) >= n)
      fail(ErrorKind::kUnsupported, "device '{}' does not exist ({} Vulkan device{}; available: {})", device, n,
           n == 1 ? "" : "s", available());
    return make_vulkan_backend(index);
#else
    fail(ErrorKind::kUnsupported, "device '{}': this build has no Vulkan backend (available: {})", device,
         available());
#endif
  }
  fail(ErrorKind::kInvalidArgument, "unknown device '{}' (expected auto, cpu, cuda[:N] or vulkan[:N])", device);
}

TileEncodeFn make_tile_encoder(const std::string& device, ThreadPool& pool) {
  const auto [name, index] = parse_device(device);
  if (name == "cpu")
    return [&pool](const uint16_t* x, size_t n, int K, exl3::Codebook cb, uint16_t* states, uint16_t* decoded,
                   bool estimate) {
      cpu::encode_tiles(x, n, K, cb, states, decoded, pool,
                        estimate ? cpu::EncodeMode::kEstimate : cpu::EncodeMode::kExact);
    };
#if TRELLIS_HAVE_CUDA_ENCODER
  if (name == "cuda") {
    if (!cuda::encoder_available())
      fail(ErrorKind::kUnsupported, "device '{}': no usable CUDA device for the tile encoder", device);
    const int dev = index;
    // The CUDA encoder always writes states (it has no estimate mode: estimates are exact
    // encodes there); callers that only want decoded values pass states = nullptr.
    auto scratch = std::make_shared<std::vector<uint16_t>>();
    return [dev, scratch](const uint16_t* x, size_t n, int K, exl3::Codebook cb, uint16_t* states, uint16_t* decoded,
                          bool) {
      if (!states) {
        scratch->resize(n * 256);
        states = scratch->data();
      }
      cuda::encode_tiles(x, n, K, cb, states, decoded, dev);
    };
  }
#endif
  fail(ErrorKind::kUnsupported, "device '{}': the tile encoder runs on: cpu{}", device,
#if TRELLIS_HAVE_CUDA_ENCODER
       ", cuda[:N]"
#else
       ""
#endif
  );
}

}  // namespace trellis
