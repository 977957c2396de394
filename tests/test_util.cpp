#include "test_util.h"

#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "format/safetensors.h"

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

void write_cut_tiny_llama(const std::string& dir, const CutLlamaShape& s) {
  namespace fs = std::filesystem;
  const std::string src = shared_path("fixtures/tiny-llama/hf");
  fs::create_directories(dir);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "generation_config.json"})
    fs::copy_file(fs::path(src) / f, fs::path(dir) / f);
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(fs::path(src) / "config.json"));
  cfg["hidden_size"] = s.hidden;
  cfg["intermediate_size"] = s.inter;
  cfg["num_attention_heads"] = s.heads;
  cfg["num_key_value_heads"] = s.kv_heads;
  cfg["head_dim"] = s.head_dim;
  cfg["num_hidden_layers"] = s.layers;
  std::ofstream(fs::path(dir) / "config.json") << cfg.dump(2) << "\n";

  const auto in = TensorStore::open_dir(src);
  const int64_t H = s.hidden, I = s.inter, Q = s.heads * s.head_dim, KV = s.kv_heads * s.head_dim;
  const int64_t vocab = cfg.at("vocab_size").get<int64_t>();
  std::vector<std::pair<std::string, Shape>> plan = {{"model.embed_tokens.weight", {vocab, H}}};
  for (int64_t l = 0; l < s.layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    plan.push_back({p + "input_layernorm.weight", {H}});
    plan.push_back({p + "post_attention_layernorm.weight", {H}});
    plan.push_back({p + "self_attn.q_proj.weight", {Q, H}});
    plan.push_back({p + "self_attn.k_proj.weight", {KV, H}});
    plan.push_back({p + "self_attn.v_proj.weight", {KV, H}});
    plan.push_back({p + "self_attn.o_proj.weight", {H, Q}});
    plan.push_back({p + "mlp.gate_proj.weight", {I, H}});
    plan.push_back({p + "mlp.up_proj.weight", {I, H}});
    plan.push_back({p + "mlp.down_proj.weight", {H, I}});
  }
  plan.push_back({"model.norm.weight", {H}});
  plan.push_back({"lm_head.weight", {vocab, H}});

  std::vector<std::vector<std::byte>> bytes;
  std::vector<SafetensorsWriter::Item> items;
  for (const auto& [name, shape] : plan) {
    const TensorView v = in->view(name);
    ASSERT_EQ(v.dtype, DType::kF16) << name;
    ASSERT_EQ(v.shape.size(), shape.size()) << name;
    const int64_t rows = shape.size() == 2 ? shape[0] : 1, cols = shape.back();
    const int64_t src_cols = v.shape.back();
    ASSERT_LE(cols, src_cols) << name;
    const int64_t src_rows = shape.size() == 2 ? v.shape[0] : 1;
    std::vector<std::byte> out(static_cast<size_t>(rows * cols * 2));
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(&out[r * cols * 2], v.data + (r % src_rows) * src_cols * 2, cols * 2);
    bytes.push_back(std::move(out));
  }
  for (size_t i = 0; i < plan.size(); ++i) items.push_back({plan[i].first, DType::kF16, plan[i].second, bytes[i]});
  SafetensorsWriter::write_file(dir + "/model.safetensors", items);
}

}  // namespace trellis::test
