// core/env.cpp: see env.h.
#include "core/env.h"

#include <cerrno>
#include <cstdlib>

#include "core/error.h"

namespace trellis {

int64_t env_int(const char* name, int64_t fallback, int64_t lo, int64_t hi) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(v, &end, 10);
  if (errno != 0 || *end != '\0' || x < lo || x > hi)
    fail(ErrorKind::kInvalidArgument, "{}={}: expected an integer in [{}, {}]", name, v, lo, hi);
  return x;
}

}  // namespace trellis
