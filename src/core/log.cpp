#include "core/log.h"

#include <atomic>
#include <cstdio>
#include <mutex>
#include <set>
#include <string>

namespace trellis {

namespace {
std::atomic<LogLevel> g_level{LogLevel::kWarn};
std::mutex g_mutex;
}  // namespace

void set_log_level(LogLevel level) { g_level = level; }
LogLevel log_level() { return g_level; }

void log_message(LogLevel level, std::string_view message) {
  static const char* kPrefix[] = {"debug: ", "", "warning: ", "error: ", ""};
  std::lock_guard<std::mutex> lock(g_mutex);
  std::fprintf(stderr, "%s%.*s\n", kPrefix[static_cast<int>(level)], static_cast<int>(message.size()),
               message.data());
}

void log_warn_once(std::string_view key, std::string_view message) {
  static std::set<std::string, std::less<>> seen;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (!seen.insert(std::string(key)).second) return;
  }
  if (log_level() <= LogLevel::kWarn) log_message(LogLevel::kWarn, message);
}

}  // namespace trellis
