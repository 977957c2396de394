#include "test_util.h"

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <random>

namespace trellis::test {

std::string shared_dir() {
  if (const char* env = std::getenv("TRELLIS_SHARED")) return env;
  return TRELLIS_SHARED_DIR;
}

bool have_shared() { return std::filesystem::exists(shared_dir() + "/spec/exl3.md"); }

std::string shared_path(const std::string& relative) { return shared_dir() + "/" + relative; }

// TRELLIS_BIN_DIR overrides the build's bin directory (binaries run away from their build tree,
// e.g. staged on a GPU host by bench/stage_gpu_run.sh).
std::string trellis_binary() {
  if (const char* env = std::getenv("TRELLIS_BIN_DIR"); env && *env) return std::string(env) + "/trellis";
  return std::string(TRELLIS_BINARY_DIR) + "/bin/trellis";
}

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "trellis-test-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) std::abort();
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

uint64_t fnv1a64(const void* data, size_t n, uint64_t h) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001B3ull;
  }
  return h;
}

int run_command(const std::string& cmd, std::string* output) {
  std::string full = cmd + " 2>&1";
  FILE* pipe = ::popen(full.c_str(), "r");
  if (!pipe) return -1;
  std::array<char, 4096> buf;
  std::string out;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
  const int status = ::pclose(pipe);
  if (output) *output = out;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace trellis::test
