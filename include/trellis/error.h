// trellis/error.h: the one error type every trellis function throws.
//
// Goals: a bad file, a bad argument or an unsupported model never aborts the process; it
// surfaces as trellis::Error with a category and a message that names the file, tensor or
// field and says what was expected. Asserts are reserved for our own invariants.
#pragma once

#include <stdexcept>
#include <string>

namespace trellis {

enum class ErrorKind {
  kInvalidArgument,  // caller passed something unusable (bad option, wrong shape)
  kIo,               // open/read/write/rename failed, disk full
  kFormat,           // malformed file contents (safetensors header, config.json, EXL3 tensors)
  kUnsupported,      // well-formed but outside what trellis handles (architecture, dtype)
  kOutOfMemory,      // an allocation the user can influence failed
  kInternal,         // a broken invariant of our own
};

const char* error_kind_name(ErrorKind kind);

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

}  // namespace trellis
