// runtime/chat_template.cpp: the chat-template API over the Jinja2 interpreter (see chat_template.h).
#include "runtime/chat_template.h"

#include <fstream>
#include <sstream>

#include "core/error.h"
#include "runtime/jinja_ast.h"
#include "runtime/jinja_interpreter.h"
#include "runtime/jinja_json.h"

namespace trellis {
namespace {

constexpr const char* kReasoningFields[] = {"reasoning_content", "thinking", "reasoning"};

std::string render_value(const jinja::Body& body, const jinja::Value& context) {
  if (!context.is_dict()) fail(ErrorKind::kInvalidArgument, "chat template context must be a JSON object");
  for (const auto& [k, v] : context.as_dict().entries)
    if (!k.is_string()) fail(ErrorKind::kInvalidArgument, "chat template context keys must be strings");
  jinja::Interpreter interpreter(context);
  return interpreter.render(body);
}

// transformers' message preparation: drop None-valued keys, then alias the reasoning fields.
jinja::Value prepare_message(const ChatMessage& m) {
  jinja::Value raw = jinja::Value::dict();
  raw.mutable_dict().set(jinja::Value("role"), jinja::Value(m.role));
  raw.mutable_dict().set(jinja::Value("content"), jinja::Value(m.content));
  if (!m.extra.is_object()) fail(ErrorKind::kInvalidArgument, "ChatMessage::extra must be a JSON object");
  for (auto it = m.extra.begin(); it != m.extra.end(); ++it)
    raw.mutable_dict().set(jinja::Value(it.key()), jinja::value_from_json(it.value()));
  jinja::Value message = jinja::Value::dict();
  for (const auto& [k, v] : raw.as_dict().entries)
    if (!v.is_none()) message.mutable_dict().entries.emplace_back(k, v);
  const jinja::Value* reasoning = nullptr;
  for (const char* field : kReasoningFields) {
    if ((reasoning = message.as_dict().get(field))) break;
  }
  if (!reasoning) return message;
  const jinja::Value r = *reasoning;
  jinja::Value aliased = jinja::Value::dict();
  aliased.mutable_dict().set(jinja::Value("thinking"), r);
  for (const auto& [k, v] : message.as_dict().entries) aliased.mutable_dict().set(k, v);
  aliased.mutable_dict().set(jinja::Value("reasoning_content"), r);
  return aliased;
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(ErrorKind::kIo, "cannot open {}", path.string());
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) fail(ErrorKind::kIo, "cannot read {}", path.string());
  return ss.str();
}

nlohmann::json read_json(const std::filesystem::path& path) {
  const std::string text = read_file(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(ErrorKind::kFormat, "{}: not valid JSON: {}", path.string(), e.what());
  }
}

// transformers' template field: a string, or [{"name": ..., "template": ...}] where "default" wins.
std::string template_from_field(const nlohmann::json& field, const std::filesystem::path& path) {
  if (field.is_string()) return field.get<std::string>();
  if (field.is_array()) {
    for (const auto& entry : field) {
      if (!entry.is_object() || !entry.contains("name") || !entry.contains("template") ||
          !entry["name"].is_string() || !entry["template"].is_string())
        fail(ErrorKind::kFormat, "{}: chat_template list entries must be {{\"name\": str, \"template\": str}}",
             path.string());
      if (entry["name"] == "default") return entry["template"].get<std::string>();
    }
    fail(ErrorKind::kFormat, "{}: chat_template lists several templates but none named \"default\"", path.string());
  }
  fail(ErrorKind::kFormat, "{}: chat_template must be a string or a list of named templates", path.string());
}

// A special token in tokenizer_config.json: a string, or an AddedToken object with "content".
std::string special_token(const nlohmann::json& config, const char* key) {
  if (!config.contains(key)) return "";
  const auto& t = config[key];
  if (t.is_string()) return t.get<std::string>();
  if (t.is_object() && t.contains("content") && t["content"].is_string()) return t["content"].get<std::string>();
  return "";
}

}  // namespace

ChatTemplate ChatTemplate::parse(std::string source) {
  ChatTemplate t;
  t.body_ = std::make_shared<const jinja::Body>(jinja::parse_template(source));
  t.source_ = std::move(source);
  return t;
}

std::string ChatTemplate::render(const nlohmann::json& context) const {
  return render_value(*body_, jinja::value_from_json(context));
}

std::string ChatTemplate::render(const nlohmann::ordered_json& context) const {
  return render_value(*body_, jinja::value_from_json(context));
}

std::string ChatTemplate::apply(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                const std::string& bos_token, const std::string& eos_token,
                                const nlohmann::ordered_json& extra_context) const {
  if (!extra_context.is_object())
    fail(ErrorKind::kInvalidArgument, "chat template extra context must be a JSON object");
  std::vector<jinja::Value> prepared;
  prepared.reserve(messages.size());
  for (const ChatMessage& m : messages) prepared.push_back(prepare_message(m));
  jinja::Value context = jinja::Value::dict();
  jinja::Dict& d = context.mutable_dict();
  d.set(jinja::Value("bos_token"), jinja::Value(bos_token));
  d.set(jinja::Value("eos_token"), jinja::Value(eos_token));
  d.set(jinja::Value("tools"), jinja::Value::none());
  d.set(jinja::Value("documents"), jinja::Value::none());
  for (auto it = extra_context.begin(); it != extra_context.end(); ++it)
    d.set(jinja::Value(it.key()), jinja::value_from_json(it.value()));
  d.set(jinja::Value("messages"), jinja::Value::list(std::move(prepared)));
  d.set(jinja::Value("add_generation_prompt"), jinja::Value(add_generation_prompt));
  return render_value(*body_, context);
}

ModelChatTemplate load_model_chat_template(const std::filesystem::path& model_dir) {
  ModelChatTemplate out;
  const std::filesystem::path config_path = model_dir / "tokenizer_config.json";
  nlohmann::json config = nlohmann::json::object();
  const bool have_config = std::filesystem::exists(config_path);
  if (have_config) {
    config = read_json(config_path);
    if (!config.is_object()) fail(ErrorKind::kFormat, "{}: expected a JSON object", config_path.string());
    out.bos_token = special_token(config, "bos_token");
    out.eos_token = special_token(config, "eos_token");
  }
  const std::filesystem::path jinja_path = model_dir / "chat_template.jinja";
  if (std::filesystem::exists(jinja_path)) {
    out.source = read_file(jinja_path);
    out.origin = jinja_path.string();
    return out;
  }
  const std::filesystem::path json_path = model_dir / "chat_template.json";
  if (std::filesystem::exists(json_path)) {
    const nlohmann::json j = read_json(json_path);
    if (!j.is_object() || !j.contains("chat_template"))
      fail(ErrorKind::kFormat, "{}: expected an object with a \"chat_template\" field", json_path.string());
    out.source = template_from_field(j["chat_template"], json_path);
    out.origin = json_path.string();
    return out;
  }
  if (have_config && config.contains("chat_template") && !config["chat_template"].is_null()) {
    out.source = template_from_field(config["chat_template"], config_path);
    out.origin = config_path.string();
    return out;
  }
  fail(ErrorKind::kFormat,
       "{}: no chat template (looked for chat_template.jinja, chat_template.json and the "
       "\"chat_template\" field of tokenizer_config.json)",
       model_dir.string());
}

}  // namespace trellis
