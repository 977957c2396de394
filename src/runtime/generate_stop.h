// runtime/generate_stop.h: stop strings over streamed text.
//
// Goals: generation stops at the first occurrence of any stop string in the generated text; the
// stop string and whatever follows it never reach the output, and a streaming consumer never sees
// part of one: text is held back while its tail could still grow into a stop string.
// Text is matched as bytes; pieces pushed are whole UTF-8 characters (StreamDecoder guarantees
// it) and a held-back tail always starts where a stop string would, so every piece emitted is
// whole characters too.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace trellis {

class StopStringFilter {
 public:
  // kInvalidArgument for an empty stop string.
  explicit StopStringFilter(std::vector<std::string> stops);

  // Appends generated text; returns the part now safe to emit. When the text completes a stop
  // string, stopped() becomes true and the return value ends just before the earliest match;
  // later calls return nothing.
  std::string push(std::string_view text);
  // Releases the held-back tail (generation ended for another reason); nothing after stopped().
  std::string flush();

  bool stopped() const { return stopped_; }
  // The stop string that matched (the one starting earliest; the longest of those).
  const std::string& matched() const { return matched_; }

 private:
  size_t held_suffix() const;

  std::vector<std::string> stops_;
  std::string pending_;  // pushed but not yet emitted: only a possible stop-string prefix
  bool stopped_ = false;
  std::string matched_;
};

}  // namespace trellis
