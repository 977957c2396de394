#!/usr/bin/env bash
# bench/gpu_session.sh: one device call's worth of bench/gpu_acceptance.sh steps, each under its
# own time limit, with the results packed into $OUT/acc.tgz after every step, so that a step cut
# off by its limit (or the call cut off by the session's device budget) loses only itself.
#
# Usage (on the GPU host, after bench/stage_gpu_run.sh here; carry .gpurun and .gl):
#   bash bench/gpu_session.sh 'STEPS:SECONDS[:VAR=value;VAR=value...]' ...
# e.g.
#   bash bench/gpu_session.sh 'tests:100:TRELLIS_TESTS_FILTER=CudaExl3.*:*CudaModel*' 'profile:200' \
#        'ab:170:TRELLIS_AB=@/tmp/prmt TRELLIS_CUDA_GEMV_WEIGHTS_A'
# STEPS is gpu_acceptance.sh's --only list (tests, cli, gemv, models, memory, ab, profile);
# everything after the second ':' is split on ';' into VAR=value assignments for that step (values
# may hold ':' and spaces).
# Every other .gpurun/*.tar.xz than pack.tar.xz (e.g. another build's binaries for an ab '@DIR'
# entry) is unpacked into /tmp first. Logs: $OUT/session_N.log; results: $OUT/acceptance, packed
# into $OUT/acc.tgz (the device tool brings back few files, not folder trees).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/out}
mkdir -p "$out"
for t in .gpurun/*.tar.xz; do
  [ "$(basename "$t")" = pack.tar.xz ] || tar xJf "$t" -C /tmp
done
pack() { (cd "$out" && tar czf acc.tgz acceptance session_*.log 2> /dev/null); }
# limit SECONDS CMD...: runs CMD in its own process group and kills the whole group (ncu, the
# benches) when the time is up.
limit() {
  local t=$1
  shift
  setsid "$@" &
  local pid=$!
  (sleep "$t"; kill -- -"$pid" 2> /dev/null) &
  local watcher=$!
  wait "$pid"
  local rc=$?
  kill "$watcher" 2> /dev/null
  return $rc
}
n=0
status=0
for spec in "$@"; do
  n=$((n + 1))
  steps=${spec%%:*}
  rest=${spec#*:}
  secs=${rest%%:*}
  envs=()
  [ "$rest" != "$secs" ] && IFS=';' read -r -a envs <<< "${rest#*:}"
  echo "== $steps (limit ${secs}s, ${envs[*]:-no extra environment}) $(date -u +%H:%M:%S)" | tee -a "$out/session_$n.log"
  limit "$secs" env "${envs[@]}" bash .gpurun/run.sh --only "$steps" >> "$out/session_$n.log" 2>&1
  rc=$?
  [ $rc -eq 0 ] || status=1
  echo "== $steps done, status $rc $(date -u +%H:%M:%S)" >> "$out/session_$n.log"
  pack
  tail -3 "$out/session_$n.log"
done
exit $status
