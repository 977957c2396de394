#include "convert/linear_shapes.h"

namespace trellis {

namespace {
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace

bool is_head_key(const std::string& key) { return key == "lm_head" || ends_with(key, ".lm_head"); }

std::optional<LinearDims> llama_linear_dims(const ModelConfig& c, const std::string& key) {
  const int64_t q = c.num_attention_heads * c.head_dim;
  const int64_t kv = c.num_key_value_heads * c.head_dim;
  if (is_head_key(key)) return LinearDims{c.hidden_size, c.vocab_size};
  if (ends_with(key, "self_attn.q_proj")) return LinearDims{c.hidden_size, q};
  if (ends_with(key, "self_attn.k_proj") || ends_with(key, "self_attn.v_proj")) return LinearDims{c.hidden_size, kv};
  if (ends_with(key, "self_attn.o_proj")) return LinearDims{q, c.hidden_size};
  if (ends_with(key, "mlp.gate_proj") || ends_with(key, "mlp.up_proj"))
    return LinearDims{c.hidden_size, c.intermediate_size};
  if (ends_with(key, "mlp.down_proj")) return LinearDims{c.intermediate_size, c.hidden_size};
  return std::nullopt;
}

}  // namespace trellis
