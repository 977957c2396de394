#!/usr/bin/env bash
# scripts/fuzz.sh [SECONDS_PER_TARGET]: build the libFuzzer targets with clang and run each one.
#
# Configures build-fuzz (clang, ASan + UBSan + libFuzzer, no GPU backends, no tests/bench),
# builds only the fuzz targets, then runs every target for SECONDS_PER_TARGET (default 30) on a
# fresh copy of its seed corpus under build-fuzz/fuzz-work/<target>/ (the committed corpus in
# fuzz/corpus/ is never modified). Prints one summary line per target and exits non-zero if a
# target crashed, leaked, timed out or could not run. Crash inputs are kept in
# build-fuzz/fuzz-work/<target>/artifacts/, the full log in .../log.txt.
#
# Environment: JOBS (build parallelism, default 2), FUZZ_JOBS (targets run at once, default: the
# number of cores), FUZZ_TARGETS (space-separated subset), FUZZ_ARGS (extra libFuzzer flags).
set -uo pipefail

seconds="${1:-30}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "usage: $0 [SECONDS_PER_TARGET]" >&2
  exit 2
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build-fuzz"
targets="${FUZZ_TARGETS:-fuzz_safetensors fuzz_safetensors_index fuzz_config}"

dict_for() {
  case "$1" in
    fuzz_safetensors) echo "$root/fuzz/dict/safetensors.dict" ;;
    fuzz_safetensors_index) echo "$root/fuzz/dict/index.dict" ;;
    fuzz_config) echo "$root/fuzz/dict/config.dict" ;;
  esac
}

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
mkdir -p "$build"
if [ ! -f "$build/CMakeCache.txt" ] || ! grep -q '^TRELLIS_FUZZ:BOOL=ON' "$build/CMakeCache.txt"; then
  cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang -DTRELLIS_FUZZ=ON -DTRELLIS_CUDA=OFF \
    -DTRELLIS_VULKAN=OFF -DTRELLIS_BUILD_TESTS=OFF -DTRELLIS_BUILD_BENCH=OFF >"$build/configure.log" 2>&1 || {
    cat "$build/configure.log" >&2
    echo "fuzz: cmake configure failed" >&2
    exit 1
  }
fi
# shellcheck disable=SC2086
cmake --build "$build" --parallel "${JOBS:-2}" --target $targets || {
  echo "fuzz: build failed" >&2
  exit 1
}

# One target: fresh corpus copy, the run, and its summary line in $work/summary.txt.
fuzz_one() {
  local t=$1
  local work="$build/fuzz-work/$t"
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/artifacts"
  cp -r "$root/fuzz/corpus/$t/." "$work/corpus/"
  local seeds dict start rc elapsed execs last cov ft corp crashes status
  seeds=$(find "$work/corpus" -type f | wc -l)
  dict="$(dict_for "$t")"
  local dict_arg=()
  [ -n "$dict" ] && [ -f "$dict" ] && dict_arg=("-dict=$dict")
  start=$(date +%s)
  # shellcheck disable=SC2086
  "$build/bin/$t" "$work/corpus" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 \
    -print_final_stats=1 -artifact_prefix="$work/artifacts/" "${dict_arg[@]}" ${FUZZ_ARGS:-} \
    >"$work/log.txt" 2>&1
  rc=$?
  elapsed=$(( $(date +%s) - start ))
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/log.txt" | grep -o '[0-9]*$' | tail -1)
  last=$(grep -E '^#[0-9]+' "$work/log.txt" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(find "$work/corpus" -type f | wc -l)
  crashes=$(find "$work/artifacts" -type f | wc -l)
  status=OK
  if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
    status="FAIL(rc=$rc)"
  fi
  printf '%s: %s execs=%s time=%ss exec/s=%s cov=%s ft=%s corpus=%s->%s artifacts=%s log=%s\n' \
    "$t" "$status" "${execs:-?}" "$elapsed" "$(( ${execs:-0} / (elapsed > 0 ? elapsed : 1) ))" \
    "${cov:-?}" "${ft:-?}" "$seeds" "$corp" "$crashes" "$work/log.txt" >"$work/summary.txt"
}

# Each target is one single-threaded process, so targets run side by side, one per core
# (FUZZ_JOBS, default: the number of cores): each still gets SECONDS_PER_TARGET on a core of its
# own, and the whole run takes that per round of targets instead of per target.
jobs="${FUZZ_JOBS:-$(nproc)}"
running=0
for t in $targets; do
  fuzz_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n
    running=$((running - 1))
  fi
done
wait
failed=0
for t in $targets; do
  summary="$build/fuzz-work/$t/summary.txt"
  if [ -f "$summary" ]; then
    cat "$summary"
    grep -q "^$t: OK " "$summary" || failed=1
  else
    echo "$t: FAIL (no summary: the run did not finish)"
    failed=1
  fi
done
exit "$failed"
