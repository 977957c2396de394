// core/progress.h: a progress bar for long jobs (dequantize, quantize, perplexity).
//
// On a terminal it redraws one line on stderr: label, bar, done/total, rate and ETA. When stderr
// is not a terminal (CI, pipes) it prints a plain line at most every 10% (or every few seconds),
// so logs stay readable. Silent when log level is above info-level output (quiet mode).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace trellis {

class ProgressBar {
 public:
  ProgressBar(std::string label, uint64_t total, std::string unit = "");
  ~ProgressBar();

  // Sets the absolute amount done and an optional note (e.g. the current tensor name).
  void update(uint64_t done, const std::string& note = "");
  void finish(const std::string& note = "");

  static void set_enabled(bool enabled);

 private:
  void draw(bool final);

  std::string label_, unit_, note_;
  uint64_t total_ = 0, done_ = 0;
  std::chrono::steady_clock::time_point start_, last_draw_;
  int last_decile_ = -1;
  bool tty_ = false, finished_ = false;
};

}  // namespace trellis
