// tests/unit/tokenizer_test_util.h: helpers for the tokenizer tests: the source tree, the
// Python oracle (Hugging Face `tokenizers` in .cache/venv or $TRELLIS_PYTHON), binary id files
// and the "@@@"-separated case files of tests/data.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace trellis::test {

// The repository root, from this header's own path.
inline std::string tokenizer_source_root() {
  return std::filesystem::path(__FILE__).parent_path().parent_path().parent_path().string();
}

inline std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

// A Python interpreter that can import `tokenizers`, or "" when there is none:
// $TRELLIS_PYTHON, else .cache/venv/bin/python under the source root.
inline std::string tokenizer_python() {
  static const std::string python = [] {
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("TRELLIS_PYTHON")) candidates.push_back(env);
    candidates.push_back(tokenizer_source_root() + "/.cache/venv/bin/python");
    for (const auto& c : candidates) {
      std::string out;
      if (std::filesystem::exists(c) &&
          run_command(shell_quote(c) + " -c 'import tokenizers'", &out) == 0) {
        return c;
      }
    }
    return std::string();
  }();
  return python;
}

inline std::string read_file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void write_file_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Texts separated by "\n@@@\n" (a trailing separator ends the last one).
inline std::vector<std::string> split_cases(std::string data) {
  const std::string sep = "\n@@@\n";
  if (data.size() >= sep.size() && data.compare(data.size() - sep.size(), sep.size(), sep) == 0) {
    data.resize(data.size() - sep.size());
  }
  std::vector<std::string> out;
  size_t pos = 0;
  while (true) {
    const size_t next = data.find(sep, pos);
    if (next == std::string::npos) {
      out.push_back(data.substr(pos));
      break;
    }
    out.push_back(data.substr(pos, next - pos));
    pos = next + sep.size();
  }
  return out;
}

inline std::string pack_ids(const std::vector<int32_t>& ids) {
  return std::string(reinterpret_cast<const char*>(ids.data()), ids.size() * sizeof(int32_t));
}

inline std::string pack_cases(const std::vector<std::vector<int32_t>>& cases) {
  std::string out;
  for (const auto& ids : cases) {
    const uint32_t n = static_cast<uint32_t>(ids.size());
    out.append(reinterpret_cast<const char*>(&n), 4);
    out += pack_ids(ids);
  }
  return out;
}

inline std::vector<int32_t> unpack_ids(const std::string& bytes) {
  std::vector<int32_t> ids(bytes.size() / 4);
  std::memcpy(ids.data(), bytes.data(), ids.size() * 4);
  return ids;
}

inline std::vector<std::vector<int32_t>> unpack_cases(const std::string& bytes) {
  std::vector<std::vector<int32_t>> out;
  size_t pos = 0;
  while (pos + 4 <= bytes.size()) {
    uint32_t n;
    std::memcpy(&n, bytes.data() + pos, 4);
    pos += 4;
    std::vector<int32_t> ids(n);
    std::memcpy(ids.data(), bytes.data() + pos, n * 4);
    pos += n * 4;
    out.push_back(std::move(ids));
  }
  return out;
}

inline std::vector<std::string> unpack_texts(const std::string& bytes) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos + 4 <= bytes.size()) {
    uint32_t n;
    std::memcpy(&n, bytes.data() + pos, 4);
    pos += 4;
    out.push_back(bytes.substr(pos, n));
    pos += n;
  }
  return out;
}

// Printable form of `s` for failure messages (non-ASCII and control bytes escaped).
inline std::string escape_text(const std::string& s, size_t max = 200) {
  std::string out;
  for (size_t i = 0; i < s.size() && out.size() < max; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7F && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02X", c);
      out += buf;
    }
  }
  return out;
}

}  // namespace trellis::test
