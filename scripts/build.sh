#!/usr/bin/env bash
# Installs dependencies and builds trellis (Release) into build/. The CLI is build/bin/trellis.
# Usage: scripts/build.sh [extra cmake -D options]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
cmake --preset default "$@" >/dev/null
cmake --build --preset default -j "$(nproc)"
