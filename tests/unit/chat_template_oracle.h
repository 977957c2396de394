// tests/unit/chat_template_oracle.h: running Python jinja2 (scripts/chat_template_reference.py) as
// the reference for the chat-template tests.
//
// Python is found as $TRELLIS_PYTHON, else <source>/.cache/venv/bin/python, else python3; callers
// skip when none of them has jinja2 >= 3.1.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "test_util.h"

namespace trellis::test {

inline std::string source_dir() {
  return std::filesystem::path(__FILE__).parent_path().parent_path().parent_path().string();
}

inline std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

inline std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// The first Python with jinja2 >= 3.1, or "" when there is none.
inline const std::string& reference_python() {
  static const std::string python = [] {
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("TRELLIS_PYTHON"); env && *env) candidates.push_back(env);
    candidates.push_back(source_dir() + "/.cache/venv/bin/python");
    candidates.push_back("python3");
    for (const std::string& c : candidates) {
      if (c.find('/') != std::string::npos && !std::filesystem::exists(c)) continue;
      std::string out;
      const int rc = run_command(
          shell_quote(c) +
              " -c 'import jinja2,sys; v=tuple(int(x) for x in jinja2.__version__.split(\".\")[:2]); "
              "sys.exit(0 if v >= (3, 1) else 1)' 2>&1",
          &out);
      if (rc == 0) return c;
    }
    return std::string();
  }();
  return python;
}

// Runs the reference renderer over `requests`; returns its results (one per request).
inline nlohmann::json run_reference(const nlohmann::ordered_json& requests) {
  TempDir dir;
  {
    std::ofstream f(dir.file("requests.json"), std::ios::binary);
    f << requests.dump();
  }
  std::string out;
  const std::string cmd = shell_quote(reference_python()) + " " +
                          shell_quote(source_dir() + "/scripts/chat_template_reference.py") + " " +
                          shell_quote(dir.file("requests.json")) + " " + shell_quote(dir.file("results.json")) +
                          " 2>&1";
  const int rc = run_command(cmd, &out);
  if (rc != 0) throw std::runtime_error("reference renderer failed: " + out);
  return nlohmann::json::parse(read_text(dir.file("results.json")));
}

inline std::string first_difference(const std::string& a, const std::string& b) {
  size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  auto around = [&](const std::string& s) {
    const size_t from = i > 40 ? i - 40 : 0;
    return nlohmann::json(s.substr(from, 80)).dump();
  };
  return "first difference at byte " + std::to_string(i) + "\n  trellis: " + around(a) + "\n  jinja2:  " + around(b);
}

}  // namespace trellis::test
