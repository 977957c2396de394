#!/usr/bin/env bash
# The whole test suite: installs dependencies, builds, runs every test (unit, ops, golden, e2e)
# and a short fuzz run of every parser. GPU tests skip cleanly without a GPU.
# Usage: scripts/test.sh            (FUZZ_SECONDS=N to change the per-target fuzz time; 0 skips)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
fuzz_seconds=${FUZZ_SECONDS:-20}
if [ "$fuzz_seconds" != 0 ] && [ -x scripts/fuzz.sh ]; then
  echo "== fuzz: ${fuzz_seconds}s per target"
  scripts/fuzz.sh "$fuzz_seconds"
fi
echo "== tests"
ctest --preset default -j "$(nproc)"
