#include "core/progress.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>

#include <fmt/format.h>

namespace trellis {

namespace {
std::atomic<bool> g_enabled{true};

std::string format_duration(double seconds) {
  if (seconds < 0 || seconds > 360000) return "--:--";
  const int s = static_cast<int>(seconds + 0.5);
  if (s >= 3600) return fmt::format("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60);
  return fmt::format("{:02}:{:02}", s / 60, s % 60);
}
}  // namespace

void ProgressBar::set_enabled(bool enabled) { g_enabled = enabled; }

ProgressBar::ProgressBar(std::string label, uint64_t total, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total),
      start_(std::chrono::steady_clock::now()), last_draw_(start_) {
  tty_ = ::isatty(STDERR_FILENO) == 1;
}

ProgressBar::~ProgressBar() {
  if (!finished_ && tty_ && g_enabled) std::fputs("\n", stderr);
}

void ProgressBar::update(uint64_t done, const std::string& note) {
  done_ = done;
  note_ = note;
  draw(false);
}

void ProgressBar::finish(const std::string& note) {
  done_ = total_;
  if (!note.empty()) note_ = note;
  draw(true);
  finished_ = true;
}

void ProgressBar::draw(bool final) {
  if (!g_enabled) return;
  const auto now = std::chrono::steady_clock::now();
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double since_draw = std::chrono::duration<double>(now - last_draw_).count();
  const double frac = total_ ? static_cast<double>(done_) / static_cast<double>(total_) : 1.0;
  const int decile = static_cast<int>(frac * 10);
  if (!final) {
    if (tty_ && since_draw < 0.1) return;
    if (!tty_ && decile == last_decile_ && since_draw < 5.0) return;
  }
  last_draw_ = now;
  last_decile_ = decile;
  const double rate = elapsed > 0 ? static_cast<double>(done_) / elapsed : 0;
  const double eta = rate > 0 ? static_cast<double>(total_ - done_) / rate : -1;
  const std::string rate_text = unit_.empty() ? "" : fmt::format(" {:.1f} {}/s", rate, unit_);
  const std::string time_text =
      final ? fmt::format(" in {}", format_duration(elapsed)) : fmt::format(" ETA {}", format_duration(eta));
  if (tty_) {
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(frac * kWidth);
    std::string bar(static_cast<size_t>(filled), '#');
    bar.append(static_cast<size_t>(kWidth - filled), '.');
    std::string note = note_;
    if (note.size() > 40) note = "..." + note.substr(note.size() - 37);
    std::fprintf(stderr, "\r\033[K%s [%s] %3.0f%% %llu/%llu%s%s %s", label_.c_str(), bar.c_str(), frac * 100,
                 static_cast<unsigned long long>(done_), static_cast<unsigned long long>(total_),
                 rate_text.c_str(), time_text.c_str(), note.c_str());
    if (final) std::fputs("\n", stderr);
  } else {
    std::fprintf(stderr, "%s: %3.0f%% (%llu/%llu)%s%s%s%s\n", label_.c_str(), frac * 100,
                 static_cast<unsigned long long>(done_), static_cast<unsigned long long>(total_),
                 rate_text.c_str(), time_text.c_str(), note_.empty() ? "" : " ", note_.c_str());
  }
  std::fflush(stderr);
}

}  // namespace trellis
