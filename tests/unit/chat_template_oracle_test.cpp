// Byte-for-byte comparison of trellis' chat templates with Python jinja2 configured like
// transformers' apply_chat_template (scripts/chat_template_reference.py), over every stored model
// template and a set of conversations, plus the interpreter cases of jinja_cases.h.
//
// Python is found as $TRELLIS_PYTHON, else <source>/.cache/venv/bin/python, else python3; the tests
// skip when none of them has jinja2 >= 3.1.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>

#include <nlohmann/json.hpp>

#include "runtime/chat_template.h"
#include "test_util.h"
#include "unit/chat_template_oracle.h"
#include "unit/jinja_cases.h"

namespace trellis {
namespace {

using test::first_difference;
using test::reference_python;
using test::run_reference;
using test::read_text;
using test::source_dir;
using ojson = nlohmann::ordered_json;

ChatMessage msg(const char* role, const std::string& content, ojson extra = ojson::object()) {
  ChatMessage m{role, content};
  m.extra = std::move(extra);
  return m;
}

struct Conversation {
  std::string name;
  std::vector<ChatMessage> messages;
  ojson extra = ojson::object();
};

std::vector<Conversation> conversations() {
  const std::string tricky =
      "Ünïcödé — “quotes” 'single' \"double\"\nnew line\ttab \\backslash {{ not jinja }} {% raw %} 日本語 🚀";
  std::vector<Conversation> c = {
      {"system_user", {msg("system", "You are a helpful assistant."), msg("user", "Hello!")}},
      {"multi_turn",
       {msg("system", "Be brief."), msg("user", "What is 2+2?"), msg("assistant", "4"), msg("user", "And 3+3?"),
        msg("assistant", "6"), msg("user", "Thanks")}},
      {"no_system", {msg("user", "Hi"), msg("assistant", "Hello there."), msg("user", "Tell me a joke")}},
      {"single_user", {msg("user", "Only one message")}},
      {"empty_system", {msg("system", ""), msg("user", "Hi")}},
      {"unicode_quotes_newlines",
       {msg("system", "Tu es un assistant. 日本語 🚀"), msg("user", tricky), msg("assistant", "Réponse: {\"json\": 1}\n\n"),
        msg("user", "  leading and trailing spaces \u00a0")}},
      {"whitespace_content", {msg("user", "\n\nhello\n\n"), msg("assistant", "  answer  "), msg("user", "\t")}},
      {"ends_with_assistant", {msg("user", "Q"), msg("assistant", "A")}},
      {"think_in_history",
       {msg("user", "Q1"), msg("assistant", "<think>\nstep one\n</think>\n\nA1"), msg("user", "Q2"),
        msg("assistant", "<think>\nmore\n</think>\n\nA2")}},
      {"reasoning_field", {msg("user", "Q"), msg("assistant", "A", {{"reasoning_content", "because"}})}},
      {"alternation_violation", {msg("user", "a"), msg("user", "b")}},
      {"system_only", {msg("system", "S")}},
  };
  Conversation no_think{"enable_thinking_false", {msg("user", "Q")}};
  no_think.extra = {{"enable_thinking", false}};
  c.push_back(no_think);
  const ojson tools = ojson::parse(R"([{"type": "function", "function": {"name": "get_weather",
      "description": "Get the weather", "parameters": {"type": "object",
      "properties": {"city": {"type": "string", "description": "City name"}}, "required": ["city"]}}}])");
  Conversation tool_use{"tool_use",
                        {msg("system", "You can call tools."), msg("user", "Weather in Paris?"),
                         msg("assistant", "", {{"tool_calls", ojson::parse(R"([{"id": "call12345", "type": "function",
                             "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}])")}}),
                         msg("tool", "{\"temp\": 21}", {{"tool_call_id", "call12345"}}),
                         msg("assistant", "It is 21 degrees."), msg("user", "Thanks")}};
  tool_use.extra = {{"tools", tools}};
  c.push_back(tool_use);
  return c;
}

struct TemplateUnderTest {
  std::string name;
  std::string source;
  std::string bos, eos;
};

std::vector<TemplateUnderTest> templates() {
  const std::string dir = source_dir() + "/tests/data/chat_templates/";
  std::vector<TemplateUnderTest> t = {
      {"smollm2_instruct", "", "<|im_start|>", "<|im_end|>"},
      {"llama3_instruct", "", "<|begin_of_text|>", "<|eot_id|>"},
      {"llama3_1_instruct", "", "<|begin_of_text|>", "<|eot_id|>"},
      {"llama3_2_instruct", "", "<|begin_of_text|>", "<|eot_id|>"},
      {"qwen2_instruct", "", "", "<|im_end|>"},
      {"qwen2_5_instruct", "", "", "<|im_end|>"},
      {"qwen3", "", "", "<|im_end|>"},
      {"qwq_32b", "", "", "<|im_end|>"},
      {"mistral_instruct_v0_2_legacy", "", "<s>", "</s>"},
      {"mistral_instruct_v0_2", "", "<s>", "</s>"},
      {"mistral_instruct_v0_3", "", "<s>", "</s>"},
      {"mistral_nemo_instruct_2407", "", "<s>", "</s>"},
  };
  for (auto& x : t) x.source = read_text(dir + x.name + ".jinja");
  if (test::have_shared())
    t.push_back({"tiny_llama_fixture", read_text(test::shared_path("fixtures/tiny-llama/hf/chat_template.jinja")),
                 "<s>", "</s>"});
  return t;
}

ojson message_json(const ChatMessage& m) {
  ojson j = {{"role", m.role}, {"content", m.content}};
  for (auto it = m.extra.begin(); it != m.extra.end(); ++it) j[it.key()] = it.value();
  return j;
}

class ChatTemplateOracle : public ::testing::Test {
 protected:
  void SetUp() override {
    if (reference_python().empty()) GTEST_SKIP() << "no Python with jinja2 >= 3.1 (set TRELLIS_PYTHON)";
  }
};

TEST_F(ChatTemplateOracle, ModelTemplatesMatchJinja2) {
  const auto tmpls = templates();
  const auto convs = conversations();
  ojson requests = ojson::array();
  struct Item {
    const TemplateUnderTest* t;
    const Conversation* c;
    bool gen;
  };
  std::vector<Item> items;
  for (const auto& t : tmpls) {
    for (const auto& c : convs) {
      for (bool gen : {false, true}) {
        ojson extra = c.extra;
        extra["date_string"] = "26 Jul 2024";  // Llama 3.2 would otherwise print today's date
        ojson msgs = ojson::array();
        for (const auto& m : c.messages) msgs.push_back(message_json(m));
        requests.push_back({{"template", t.source}, {"mode", "apply"}, {"messages", msgs},
                            {"add_generation_prompt", gen}, {"bos_token", t.bos}, {"eos_token", t.eos},
                            {"extra", extra}});
        items.push_back({&t, &c, gen});
      }
    }
  }
  const nlohmann::json results = run_reference(requests);
  ASSERT_EQ(results.size(), items.size());
  int matched = 0, both_failed = 0;
  std::map<const TemplateUnderTest*, ChatTemplate> parsed;
  for (const auto& t : tmpls) parsed.emplace(&t, ChatTemplate::parse(t.source));
  for (size_t i = 0; i < items.size(); ++i) {
    const Item& it = items[i];
    SCOPED_TRACE(it.t->name + " / " + it.c->name + (it.gen ? " / generation prompt" : ""));
    const nlohmann::json& ref = results[i];
    ojson extra = it.c->extra;
    extra["date_string"] = "26 Jul 2024";
    std::optional<std::string> ours;
    std::string our_error;
    try {
      ours = parsed.at(it.t).apply(it.c->messages, it.gen, it.t->bos, it.t->eos, extra);
    } catch (const Error& e) {
      our_error = e.what();
    }
    if (ref["ok"].get<bool>()) {
      const std::string expected = ref["output"].get<std::string>();
      if (!ours) {
        ADD_FAILURE() << "trellis failed: " << our_error << "\njinja2 rendered: " << expected;
        continue;
      }
      if (*ours != expected) {
        ADD_FAILURE() << first_difference(*ours, expected);
        continue;
      }
      ++matched;
    } else {
      const std::string ref_error = ref["error"].get<std::string>();
      if (ours) {
        ADD_FAILURE() << "jinja2 failed (" << ref["error_type"].get<std::string>() << ": " << ref_error
                      << ") but trellis rendered: " << nlohmann::json(*ours).dump();
        continue;
      }
      if (ref["error_type"] == "TemplateError") {  // raise_exception: the message must come through
        EXPECT_NE(our_error.find(ref_error), std::string::npos) << our_error << " vs " << ref_error;
      }
      ++both_failed;
    }
  }
  std::printf("[oracle] %d renders byte-identical, %d failed in both engines\n", matched, both_failed);
  EXPECT_GT(matched, 200);
}

TEST_F(ChatTemplateOracle, InterpreterCasesMatchJinja2) {
  ojson requests = ojson::array();
  for (const auto& c : test::kJinjaCases)
    requests.push_back({{"template", c.source}, {"mode", "render"}, {"context", ojson::parse(c.context)}});
  for (const auto& c : test::kJinjaErrorCases)
    requests.push_back({{"template", c.source}, {"mode", "render"}, {"context", ojson::parse(c.context)}});
  const nlohmann::json results = run_reference(requests);
  size_t i = 0;
  for (const auto& c : test::kJinjaCases) {
    SCOPED_TRACE(c.name);
    const nlohmann::json& r = results[i++];
    ASSERT_TRUE(r["ok"].get<bool>()) << r.dump();
    EXPECT_EQ(r["output"].get<std::string>(), c.expected) << "jinja2 disagrees with the table for: " << c.source;
  }
  for (const auto& c : test::kJinjaErrorCases) {
    SCOPED_TRACE(c.name);
    const nlohmann::json& r = results[i++];
    EXPECT_EQ(!r["ok"].get<bool>(), c.python_fails) << r.dump();
  }
}

TEST_F(ChatTemplateOracle, StrftimeNowMatches) {
  const std::string source = "{{ strftime_now('%d %b %Y %A %B %j') }}";
  const nlohmann::json r = run_reference(ojson::array({{{"template", source}, {"mode", "render"}, {"context", ojson::object()}}}));
  const std::string ours = ChatTemplate::parse(source).render(ojson::object());
  if (ours != r[0]["output"].get<std::string>()) {
    // The day may have changed between the two renders; try once more.
    const nlohmann::json again =
        run_reference(ojson::array({{{"template", source}, {"mode", "render"}, {"context", ojson::object()}}}));
    EXPECT_EQ(ChatTemplate::parse(source).render(ojson::object()), again[0]["output"].get<std::string>());
  }
}

}  // namespace
}  // namespace trellis
