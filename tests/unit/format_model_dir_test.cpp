// ModelDir on synthetic directories: tensor classification, EXL3 group validation (spec 8.2),
// legacy su/sv expansion, bias conversion, auxiliary files.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>

#include "core/fp16.h"
#include "format/model_dir.h"
#include "format_test_helpers.h"
#include "test_util.h"

namespace trellis {
namespace {

using test::Bytes;
using test::expect_error;
using test::filled;

constexpr const char* kConfig = R"({"architectures":["LlamaForCausalLM"],"hidden_size":256,
  "num_hidden_layers":1,"num_attention_heads":4,"vocab_size":512})";

// Tensors of a directory being built, written in one file on demand.
struct DirBuilder {
  test::TempDir tmp;
  std::map<std::string, SafetensorsWriter::Item> items;
  std::vector<Bytes> storage;

  DirBuilder() { test::write_text(tmp.file("config.json"), kConfig); }

  void add(const std::string& name, DType t, Shape shape, Bytes data = {}) {
    if (data.empty()) {
      int64_t n = 1;
      for (auto d : shape) n *= d;
      data = filled(static_cast<size_t>(n) * dtype_size(t), static_cast<uint8_t>(name.size()));
    }
    storage.push_back(std::move(data));
    items[name] = {name, t, std::move(shape), storage.back()};
  }
  void add_i32(const std::string& name, uint32_t value) {
    Bytes b(4);
    std::memcpy(b.data(), &value, 4);
    add(name, DType::kI32, {}, b);
  }
  // A complete EXL3 layer: trellis, suh, svh (+ codebook tensor).
  void add_layer(const std::string& key, int64_t k, int64_t n, int K, const char* cb = nullptr) {
    add(key + ".trellis", DType::kI16, {k / 16, n / 16, 16 * K});
    add(key + ".suh", DType::kF16, {k});
    add(key + ".svh", DType::kF16, {n});
    if (cb && std::string(cb) == "mcg") add_i32(key + ".mcg", 0xCBAC1FEDu);
    if (cb && std::string(cb) == "mul1") add_i32(key + ".mul1", 0x83DCD12Du);
  }
  void remove(const std::string& name) { items.erase(name); }
  std::unique_ptr<ModelDir> open() {
    std::vector<SafetensorsWriter::Item> v;
    for (auto& [name, item] : items) v.push_back(item);
    SafetensorsWriter::write_file(tmp.file("model.safetensors"), v);
    return ModelDir::open(tmp.path());
  }
  void expect_bad(std::initializer_list<std::string> parts) {
    std::vector<std::string> all{tmp.path()};
    all.insert(all.end(), parts.begin(), parts.end());
    try {
      open();
      ADD_FAILURE() << "opened without error";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kFormat) << e.what();
      for (const auto& p : all) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << p << " / " << e.what();
    }
  }
};

const std::string kKey = "model.layers.0.mlp.down_proj";

TEST(ModelDir, ClassifiesTensors) {
  DirBuilder b;
  b.add_layer(kKey, 768, 256, 3, "mcg");
  b.add(kKey + ".bias", DType::kF16, {256});
  b.add_layer("lm_head", 256, 512, 6);
  b.add("model.embed_tokens.weight", DType::kF16, {512, 256});
  b.add("model.norm.weight", DType::kBF16, {256});
  b.add("model.layers.0.self_attn.q_proj.bias", DType::kF16, {256});  // bias of a dense layer
  b.add("orphan.trellis", DType::kI16, {16, 16, 48});                 // lone trellis: unknown
  b.add("half.suh", DType::kF16, {256});
  b.add("half.trellis", DType::kI16, {16, 16, 48});                   // missing svh
  test::write_text(b.tmp.file("tokenizer.json"), "{}");
  test::write_text(b.tmp.file("tokenizer_config.json"), "{}");
  test::write_text(b.tmp.file("chat_template.jinja"), "x");
  test::write_text(b.tmp.file("model.safetensors.index.json.bak"), "x");
  std::filesystem::create_directory(b.tmp.file("subdir"));

  auto m = b.open();
  EXPECT_EQ(m->dir(), b.tmp.path());
  EXPECT_EQ(m->config().hidden_size, 256);
  EXPECT_TRUE(m->is_exl3());
  EXPECT_EQ(m->kind_of(kKey + ".trellis"), TensorKind::kExl3Trellis);
  EXPECT_EQ(m->kind_of(kKey + ".suh"), TensorKind::kExl3Suh);
  EXPECT_EQ(m->kind_of(kKey + ".svh"), TensorKind::kExl3Svh);
  EXPECT_EQ(m->kind_of(kKey + ".mcg"), TensorKind::kExl3Mcg);
  EXPECT_EQ(m->kind_of(kKey + ".bias"), TensorKind::kExl3Bias);
  EXPECT_EQ(m->kind_of("model.embed_tokens.weight"), TensorKind::kDense);
  EXPECT_EQ(m->kind_of("model.norm.weight"), TensorKind::kDense);
  EXPECT_EQ(m->kind_of("model.layers.0.self_attn.q_proj.bias"), TensorKind::kDense);
  EXPECT_EQ(m->kind_of("orphan.trellis"), TensorKind::kUnknown);
  EXPECT_EQ(m->kind_of("half.suh"), TensorKind::kUnknown);
  EXPECT_EQ(m->kind_of("half.trellis"), TensorKind::kUnknown);
  expect_error([&] { m->kind_of("absent"); }, ErrorKind::kInvalidArgument, {"'absent'"});
  EXPECT_STREQ(tensor_kind_name(TensorKind::kExl3Mul1), "exl3_mul1");

  ASSERT_EQ(m->exl3_layers().size(), 2u);
  const Exl3Layer* l = m->find_exl3_layer(kKey);
  ASSERT_NE(l, nullptr);
  EXPECT_EQ(l->k, 768);
  EXPECT_EQ(l->n, 256);
  EXPECT_EQ(l->K, 3);
  EXPECT_EQ(l->codebook, exl3::Codebook::kMcg);
  EXPECT_TRUE(l->has_bias);
  EXPECT_FALSE(l->legacy_signs);
  const Exl3Layer* head = m->find_exl3_layer("lm_head");
  ASSERT_NE(head, nullptr);
  EXPECT_EQ(head->K, 6);
  EXPECT_EQ(head->codebook, exl3::Codebook::k3Inst);
  EXPECT_EQ(m->find_exl3_layer("orphan"), nullptr);
  EXPECT_EQ(m->find_exl3_layer("model.norm"), nullptr);

  EXPECT_EQ(m->aux_files(), (std::vector<std::string>{"chat_template.jinja", "model.safetensors.index.json.bak",
                                                      "tokenizer.json", "tokenizer_config.json"}));
}

TEST(ModelDir, ViewPointsIntoTheMapping) {
  DirBuilder b;
  b.add_layer(kKey, 128, 256, 2, "mul1");
  b.add(kKey + ".bias", DType::kF16, {256});
  auto m = b.open();
  const Exl3Layer& l = *m->find_exl3_layer(kKey);
  std::vector<uint16_t> scratch;
  const exl3::Exl3LinearView v = m->exl3_view(l, scratch);
  EXPECT_TRUE(scratch.empty());
  EXPECT_EQ(v.k, 128);
  EXPECT_EQ(v.n, 256);
  EXPECT_EQ(v.K, 2);
  EXPECT_EQ(v.codebook, exl3::Codebook::kMul1);
  EXPECT_EQ(v.trellis, m->tensors().view(kKey + ".trellis").data);
  EXPECT_EQ(v.suh, m->tensors().view(kKey + ".suh").data);
  EXPECT_EQ(v.svh, m->tensors().view(kKey + ".svh").data);
  EXPECT_EQ(v.bias, m->tensors().view(kKey + ".bias").data);
}

TEST(ModelDir, LegacySignsExpand) {
  DirBuilder b;
  b.add(kKey + ".trellis", DType::kI16, {8, 16, 64});  // k = 128, n = 256, K = 4
  std::vector<uint16_t> su(8), sv(16);
  test::SplitMix64 rng(7);
  for (auto& w : su) w = static_cast<uint16_t>(rng.next());
  for (auto& w : sv) w = static_cast<uint16_t>(rng.next());
  su[0] = 0x0001;  // element 0 negative, elements 1..15 positive
  b.add(kKey + ".su", DType::kI16, {8}, test::as_bytes_of(su));
  b.add(kKey + ".sv", DType::kI16, {16}, test::as_bytes_of(sv));
  auto m = b.open();
  const Exl3Layer& l = *m->find_exl3_layer(kKey);
  EXPECT_TRUE(l.legacy_signs);
  EXPECT_EQ(m->kind_of(kKey + ".su"), TensorKind::kExl3Su);
  EXPECT_EQ(m->kind_of(kKey + ".sv"), TensorKind::kExl3Sv);
  std::vector<uint16_t> scratch;
  const auto v = m->exl3_view(l, scratch);
  const auto* suh = static_cast<const uint16_t*>(v.suh);
  const auto* svh = static_cast<const uint16_t*>(v.svh);
  EXPECT_EQ(fp16_to_fp32(suh[0]), -1.0f);
  for (int i = 1; i < 16; ++i) EXPECT_EQ(fp16_to_fp32(suh[i]), 1.0f) << i;
  for (int i = 0; i < 128; ++i) EXPECT_EQ(fp16_to_fp32(suh[i]), ((su[i / 16] >> (i % 16)) & 1) ? -1.0f : 1.0f) << i;
  for (int i = 0; i < 256; ++i) EXPECT_EQ(fp16_to_fp32(svh[i]), ((sv[i / 16] >> (i % 16)) & 1) ? -1.0f : 1.0f) << i;
}

TEST(ModelDir, Fp32AndBf16BiasConvertedToFp16) {
  for (DType t : {DType::kF32, DType::kBF16}) {
    DirBuilder b;
    b.add_layer(kKey, 128, 128, 3);
    std::vector<float> bias(128);
    for (int i = 0; i < 128; ++i) bias[i] = 0.25f * static_cast<float>(i - 64);  // exact in every format
    if (t == DType::kF32) {
      b.add(kKey + ".bias", t, {128}, test::as_bytes_of(bias));
    } else {
      std::vector<uint16_t> bf(128);
      fp32_to_bf16(bias.data(), bf.data(), 128);
      b.add(kKey + ".bias", t, {128}, test::as_bytes_of(bf));
    }
    auto m = b.open();
    std::vector<uint16_t> scratch;
    const auto v = m->exl3_view(*m->find_exl3_layer(kKey), scratch);
    ASSERT_NE(v.bias, nullptr);
    const auto* h = static_cast<const uint16_t*>(v.bias);
    for (int i = 0; i < 128; ++i) EXPECT_EQ(fp16_to_fp32(h[i]), bias[i]) << i;
  }
}

TEST(ModelDir, WrongK) {
  for (int64_t last : {int64_t{0}, int64_t{8}, int64_t{40}, int64_t{144}}) {
    DirBuilder b;
    b.add_layer(kKey, 128, 128, 3);
    b.add(kKey + ".trellis", DType::kI16, {8, 8, last});
    b.expect_bad({"model.safetensors", kKey + ".trellis", "1 <= K <= 8"});
  }
}

TEST(ModelDir, TrellisDtypeAndRank) {
  DirBuilder b;
  b.add_layer(kKey, 128, 128, 3);
  b.add(kKey + ".trellis", DType::kF16, {8, 8, 48});
  b.expect_bad({kKey + ".trellis", "F16", "expected I16 of rank 3"});
  b.add(kKey + ".trellis", DType::kI16, {64, 48});
  b.expect_bad({kKey + ".trellis", "rank 3"});
}

TEST(ModelDir, DimsNotMultipleOf128) {
  DirBuilder b;
  b.add_layer(kKey, 128, 128, 3);
  b.add(kKey + ".trellis", DType::kI16, {8, 7, 48});  // n = 112
  b.add(kKey + ".svh", DType::kF16, {112});
  b.expect_bad({kKey + ".trellis", "multiples of 128"});
}

TEST(ModelDir, SuhLengthMismatch) {
  DirBuilder b;
  b.add_layer(kKey, 256, 128, 3);
  b.add(kKey + ".suh", DType::kF16, {128});
  b.expect_bad({kKey + ".suh", "expected F16 [256]"});
}

TEST(ModelDir, SvhDtypeMismatch) {
  DirBuilder b;
  b.add_layer(kKey, 256, 128, 3);
  b.add(kKey + ".svh", DType::kF32, {128});
  b.expect_bad({kKey + ".svh", "F32", "expected F16 [128]"});
}

TEST(ModelDir, LegacySignLengthMismatch) {
  DirBuilder b;
  b.add(kKey + ".trellis", DType::kI16, {8, 8, 48});
  b.add(kKey + ".su", DType::kI16, {9});
  b.add(kKey + ".sv", DType::kI16, {8});
  b.expect_bad({kKey + ".su", "expected I16 [8]"});
}

TEST(ModelDir, BothSuhAndSu) {
  DirBuilder b;
  b.add_layer(kKey, 128, 128, 3);
  b.add(kKey + ".su", DType::kI16, {8});
  b.expect_bad({kKey + ".suh", kKey + ".su", "ambiguous"});
}

TEST(ModelDir, BothMcgAndMul1) {
  DirBuilder b;
  b.add_layer(kKey, 128, 128, 3, "mcg");
  b.add_i32(kKey + ".mul1", 0x83DCD12Du);
  b.expect_bad({kKey, "both .mcg and .mul1"});
}

TEST(ModelDir, CodebookTensorNotScalarI32) {
  DirBuilder b;
  b.add_layer(kKey, 128, 128, 3);
  b.add(kKey + ".mul1", DType::kI32, {1});
  b.expect_bad({kKey + ".mul1", "I32 scalar"});
  b.add(kKey + ".mul1", DType::kI64, {});
  b.expect_bad({kKey + ".mul1", "I64"});
}

TEST(ModelDir, UnlockedMultiplierOnlyWarns) {
  DirBuilder b;
  b.add_layer(kKey, 128, 128, 3);
  b.add_i32(kKey + ".mcg", 12345u);
  auto m = b.open();
  EXPECT_EQ(m->find_exl3_layer(kKey)->codebook, exl3::Codebook::kMcg);
}

TEST(ModelDir, ScaleTensorRejected) {
  DirBuilder b;
  b.add_layer(kKey, 128, 128, 3);
  b.add(kKey + ".scale", DType::kF16, {1});
  b.expect_bad({kKey + ".scale", "no longer used"});
}

TEST(ModelDir, DenseWeightNextToExl3Rejected) {
  DirBuilder b;
  b.add_layer(kKey, 128, 128, 3);
  b.add(kKey + ".weight", DType::kF16, {128, 128});
  b.expect_bad({kKey + ".weight", "either EXL3 or dense"});
}

TEST(ModelDir, BadBias) {
  DirBuilder b;
  b.add_layer(kKey, 128, 256, 3);
  b.add(kKey + ".bias", DType::kF16, {128});
  b.expect_bad({kKey + ".bias", "[256]"});
  b.add(kKey + ".bias", DType::kI32, {256});
  b.expect_bad({kKey + ".bias", "I32"});
}

TEST(ModelDir, MissingConfigOrTensors) {
  test::TempDir tmp;
  expect_error([&] { ModelDir::open(tmp.path()); }, ErrorKind::kFormat, {tmp.path(), "no config.json"});
  test::write_text(tmp.file("config.json"), kConfig);
  expect_error([&] { ModelDir::open(tmp.path()); }, ErrorKind::kFormat, {tmp.path(), "no safetensors"});
  test::write_text(tmp.file("config.json"), "{\"hidden_size\": }");
  expect_error([&] { ModelDir::open(tmp.path()); }, ErrorKind::kFormat, {"config.json", "not valid JSON"});
  expect_error([&] { ModelDir::open(tmp.file("nope")); }, ErrorKind::kIo, {"nope"});
}

TEST(ModelDir, DenseOnlyDirectory) {
  DirBuilder b;
  b.add("model.embed_tokens.weight", DType::kF16, {512, 256});
  auto m = b.open();
  EXPECT_FALSE(m->is_exl3());
  EXPECT_TRUE(m->aux_files().empty());
  Exl3Layer fake;
  fake.key = "nothing";
  std::vector<uint16_t> scratch;
  expect_error([&] { m->exl3_view(fake, scratch); }, ErrorKind::kInvalidArgument, {"'nothing'"});
}

}  // namespace
}  // namespace trellis
