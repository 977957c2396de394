// fuzz/fuzz_config.cpp: parse_model_config on arbitrary text.
//
// Contract under test: parse or trellis::Error; a parsed config has the invariants the runtime
// relies on (positive sizes, heads divisible by KV heads, a positive head_dim).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "format/config.h"
#include "trellis/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const trellis::ModelConfig c = trellis::parse_model_config(text, "fuzz/config.json");
    if (c.hidden_size <= 0 || c.num_hidden_layers <= 0 || c.num_attention_heads <= 0 || c.vocab_size <= 0) std::abort();
    if (c.num_key_value_heads <= 0 || c.num_attention_heads % c.num_key_value_heads != 0) std::abort();
    if (c.head_dim <= 0) std::abort();
    if (c.architectures.empty() && c.model_type.empty()) std::abort();
    if (!(c.rope_theta > 0) || !(c.rms_norm_eps > 0)) std::abort();
  } catch (const trellis::Error&) {
  }
  return 0;
}
