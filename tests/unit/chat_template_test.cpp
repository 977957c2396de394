// ChatTemplate API: apply() as transformers prepares messages, the model-directory loader, and
// raise_exception surfacing. Byte-exact comparisons with Python jinja2 are in
// chat_template_oracle_test.cpp.
#include "runtime/chat_template.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "test_util.h"

namespace trellis {
namespace {

std::string source_dir() {
  return std::filesystem::path(__FILE__).parent_path().parent_path().parent_path().string();
}

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
}

ChatTemplate data_template(const std::string& name) {
  return ChatTemplate::parse(read_text(source_dir() + "/tests/data/chat_templates/" + name + ".jinja"));
}

TEST(ChatTemplate, FixtureChatML) {
  if (!test::have_shared()) GTEST_SKIP() << "shared/ not available";
  const ModelChatTemplate m = load_model_chat_template(test::shared_path("fixtures/tiny-llama/hf"));
  EXPECT_NE(m.origin.find("chat_template.jinja"), std::string::npos);
  const ChatTemplate t = ChatTemplate::parse(m.source);
  const std::vector<ChatMessage> chat = {{"system", "Be brief."}, {"user", "Hi!"}};
  EXPECT_EQ(t.apply(chat, true, m.bos_token, m.eos_token),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(t.apply(chat, false, m.bos_token, m.eos_token),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n");
}

TEST(ChatTemplate, Llama3Literal) {
  const ChatTemplate t = data_template("llama3_instruct");
  EXPECT_EQ(t.apply({{"system", " sys "}, {"user", "Hello\n"}}, true, "<|begin_of_text|>", "<|eot_id|>"),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nsys<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplate, MistralAlternationRaises) {
  const ChatTemplate t = data_template("mistral_instruct_v0_2_legacy");
  EXPECT_EQ(t.apply({{"user", "a"}, {"assistant", "b"}, {"user", "c"}}, false, "<s>", "</s>"),
            "<s>[INST] a [/INST]b</s>[INST] c [/INST]");
  try {
    t.apply({{"user", "a"}, {"user", "b"}}, false, "<s>", "</s>");
    FAIL() << "expected raise_exception";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("Conversation roles must alternate user/assistant/user/assistant/..."),
              std::string::npos)
        << e.what();
  }
}

TEST(ChatTemplate, ApplyDropsNullFieldsAndAliasesReasoning) {
  const ChatTemplate t = ChatTemplate::parse(
      "{% for m in messages %}{{ m|tojson }}\n{% endfor %}{{ tools }} {{ documents }} {{ add_generation_prompt }}");
  ChatMessage a{"assistant", "x"};
  a.extra = {{"tool_calls", nullptr}, {"reasoning_content", "why"}};
  ChatMessage b{"user", "y"};
  b.extra = {{"content", nullptr}, {"name", "n"}};
  EXPECT_EQ(t.apply({a, b}, true, "", ""),
            "{\"thinking\": \"why\", \"role\": \"assistant\", \"content\": \"x\", \"reasoning_content\": \"why\"}\n"
            "{\"role\": \"user\", \"name\": \"n\"}\n"
            "None None True");
}

TEST(ChatTemplate, ApplyPassesExtraContext) {
  const ChatTemplate t = ChatTemplate::parse("{{ enable_thinking }} {{ tools|length }} {{ bos_token }}{{ eos_token }}");
  nlohmann::ordered_json extra = {{"enable_thinking", false}, {"tools", nlohmann::ordered_json::array({1, 2})}};
  EXPECT_EQ(t.apply({}, false, "<s>", "</s>", extra), "False 2 <s></s>");
}

TEST(ChatTemplate, RenderKeepsOrderedJsonOrder) {
  const ChatTemplate t = ChatTemplate::parse("{{ d|tojson }}");
  EXPECT_EQ(t.render(nlohmann::ordered_json::parse(R"({"d": {"z": 1, "a": 2}})")), "{\"z\": 1, \"a\": 2}");
  EXPECT_EQ(t.render(nlohmann::json::parse(R"({"d": {"z": 1, "a": 2}})")), "{\"a\": 2, \"z\": 1}");
}

TEST(ChatTemplate, LoaderPrefersJinjaFile) {
  test::TempDir dir;
  write_text(dir.file("chat_template.jinja"), "from jinja");
  write_text(dir.file("tokenizer_config.json"),
             R"({"chat_template": "from config", "bos_token": {"content": "<s>", "__type": "AddedToken"}, "eos_token": "</s>"})");
  const ModelChatTemplate m = load_model_chat_template(dir.path());
  EXPECT_EQ(m.source, "from jinja");
  EXPECT_EQ(m.bos_token, "<s>");
  EXPECT_EQ(m.eos_token, "</s>");
}

TEST(ChatTemplate, LoaderReadsTokenizerConfig) {
  test::TempDir dir;
  write_text(dir.file("tokenizer_config.json"), R"({"chat_template": "{{ 'x' }}"})");
  EXPECT_EQ(load_model_chat_template(dir.path()).source, "{{ 'x' }}");
}

TEST(ChatTemplate, LoaderPicksDefaultFromList) {
  test::TempDir dir;
  write_text(dir.file("tokenizer_config.json"),
             R"({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]})");
  EXPECT_EQ(load_model_chat_template(dir.path()).source, "D");
  write_text(dir.file("tokenizer_config.json"), R"({"chat_template": [{"name": "tool_use", "template": "T"}]})");
  EXPECT_THROW(load_model_chat_template(dir.path()), Error);
}

TEST(ChatTemplate, LoaderReadsChatTemplateJson) {
  test::TempDir dir;
  write_text(dir.file("chat_template.json"), R"({"chat_template": "J"})");
  EXPECT_EQ(load_model_chat_template(dir.path()).source, "J");
}

TEST(ChatTemplate, LoaderErrors) {
  test::TempDir dir;
  try {
    load_model_chat_template(dir.path());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kFormat);
    EXPECT_NE(std::string(e.what()).find("no chat template"), std::string::npos);
  }
  write_text(dir.file("tokenizer_config.json"), "{not json");
  try {
    load_model_chat_template(dir.path());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kFormat);
    EXPECT_NE(std::string(e.what()).find("tokenizer_config.json"), std::string::npos);
  }
}

TEST(ChatTemplate, EveryStoredTemplateParses) {
  for (const auto& entry : std::filesystem::directory_iterator(source_dir() + "/tests/data/chat_templates")) {
    if (entry.path().extension() != ".jinja") continue;
    SCOPED_TRACE(entry.path().filename().string());
    EXPECT_NO_THROW(ChatTemplate::parse(read_text(entry.path().string())));
  }
}

}  // namespace
}  // namespace trellis
