#include "trellis/settings.h"

#include "core/log.h"
#include "core/progress.h"
#include "core/thread_pool.h"

namespace trellis {

void set_num_threads(size_t threads) { ThreadPool::set_default_threads(threads); }

void set_verbosity(int level) {
  static const LogLevel kLevels[] = {LogLevel::kError, LogLevel::kWarn, LogLevel::kInfo, LogLevel::kDebug};
  set_log_level(kLevels[level < 0 ? 0 : level > 3 ? 3 : level]);
  ProgressBar::set_enabled(level >= 1);
}

const char* version_string() { return TRELLIS_VERSION; }

}  // namespace trellis
