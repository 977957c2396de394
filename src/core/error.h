// core/error.h: helpers to raise trellis::Error with a formatted message.
#pragma once

#include <fmt/format.h>

#include "trellis/error.h"

namespace trellis {

template <typename... Args>
[[noreturn]] void fail(ErrorKind kind, fmt::format_string<Args...> format, Args&&... args) {
  throw Error(kind, fmt::format(format, std::forward<Args>(args)...));
}

// TRELLIS_CHECK is for our own invariants only (never for validating input).
#define TRELLIS_CHECK(cond)                                                                  \
  do {                                                                                       \
    if (!(cond))                                                                             \
      ::trellis::fail(::trellis::ErrorKind::kInternal, "internal check failed: {} ({}:{})", \
                      #cond, __FILE__, __LINE__);                                            \
  } while (0)

}  // namespace trellis
