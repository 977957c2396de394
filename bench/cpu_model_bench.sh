#!/usr/bin/env bash
# Runs trellis_bench_model on SmolLM2-135M-shaped random models (fp16 and EXL3 at K = 4, 3, 2) and
# prints one line per run; the JSON of each run goes to OUT_DIR. Needs python3 with numpy (for
# bench/make_random_model.py) and a built trellis_bench_model.
# Usage: bench/cpu_model_bench.sh [BENCH_BINARY] [OUT_DIR] [THREADS...]
#   defaults: build/bin/trellis_bench_model, ./bench-out, all hardware threads
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-$here/../build/bin/trellis_bench_model}"
out="${2:-bench-out}"
shift $(( $# > 2 ? 2 : $# ))
threads=("$@")
[ ${#threads[@]} -gt 0 ] || threads=(0)
mkdir -p "$out"
models="$(mktemp -d)"
trap 'rm -rf "$models"' EXIT
for spec in "fp16 16 mcg" "k4_mcg 4 mcg" "k3_mul1 3 mul1" "k2_3inst 2 3inst"; do
  set -- $spec
  python3 "$here/make_random_model.py" --preset smollm2-135m --bits "$2" --codebook "$3" --out "$models/$1" >/dev/null
done
for t in "${threads[@]}"; do
  for m in fp16 k4_mcg k3_mul1 k2_3inst; do
    f="$out/smollm2_${m}_t$t.json"
    if timeout 120 "$bin" -m "$models/$m" --threads "$t" --prompt 256 --gen 64 --reps 3 >"$f"; then
      python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2], 'threads', d['threads'], 'prefill %.1f tok/s, decode %.1f tok/s, roofline %.1f tok/s (%.2f)' % (d['prefill_tok_s'], d['decode_tok_s'], d['roofline_decode_tok_s'], d['decode_fraction_of_roofline']))" "$f" "$m"
    else
      echo "$m threads $t: failed or timed out (rc $?)"
    fi
  done
done
