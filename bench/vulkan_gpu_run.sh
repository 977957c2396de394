#!/usr/bin/env bash
# bench/vulkan_gpu_run.sh: the Vulkan backend's first-run checklist on a GPU host, as JSON.
#
# Usage: bench/vulkan_gpu_run.sh BIN_DIR OUT_DIR [MODEL_DIR] [DEVICE_INDEX]
#   BIN_DIR    a build's bin directory (trellis, trellis_tests, trellis_bench_vulkan_exl3,
#              trellis_bench_model), e.g. build-vk/bin
#   OUT_DIR    created if missing; receives devices.txt, tests.xml + tests.log, gemv.json +
#              gemv.log, gemv_shared.json (shared-memory reductions forced), gemm.json (prefill
#              GEMM paths at 2048 rows), model_*.json (incl. prefill without cooperative
#              matrices and decode without fusions)
#   MODEL_DIR  optional: an EXL3 model directory (e.g. Llama-3.1-8B-shaped 3 bpw) for
#              trellis_bench_model at context 256 (decode) and 2048-token prefill
#   DEVICE_INDEX  Vulkan device index (default 0; see devices.txt)
# Each step runs even when an earlier one failed; the exit status is non-zero if any failed.
# TRELLIS_SHARED points the tests at the shared fixtures (default: ../shared of the source tree).
set -uo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,14p' "$0" >&2
  exit 2
fi
bin=$(cd "$1" && pwd) || exit 2
out=$2
model=${3:-}
dev=${4:-0}
mkdir -p "$out" || exit 2
out=$(cd "$out" && pwd)
status=0
step() {  # step NAME COMMAND...: runs, logs the exit status
  echo "== $1" >&2
  shift
  "$@"
  local rc=$?
  [ $rc -eq 0 ] || { echo "   failed with status $rc" >&2; status=1; }
}

step devices bash -c "'$bin/trellis' devices > '$out/devices.txt' 2>&1"
step tests bash -c "'$bin/trellis_tests' --gtest_filter='*Vulkan*' --gtest_output=xml:'$out/tests.xml' > '$out/tests.log' 2>&1"

shapes=(4096x4096 4096x14336 14336x4096 8192x28672)
step gemv bash -c "'$bin/trellis_bench_vulkan_exl3' --device $dev --K 2 3 4 5 6 7 8 --codebooks mcg mul1 \
  --shapes ${shapes[*]} > '$out/gemv.json' 2> '$out/gemv.log'"
# Prefill GEMM at 2048 rows through every path the device has (tiled, coop_khr, coop_nv).
step gemm bash -c "'$bin/trellis_bench_vulkan_exl3' --device $dev --K 3 --codebooks mcg \
  --shapes 4096x4096 4096x14336 14336x4096 --gemm-m 2048 --reps 5 > '$out/gemm.json' 2> '$out/gemm.log'"
# The shared-memory fallback on the same device (what devices without subgroup shuffles run).
step gemv_shared bash -c "TRELLIS_VULKAN_SUBGROUP=0 '$bin/trellis_bench_vulkan_exl3' --device $dev --K 3 \
  --codebooks mcg --shapes ${shapes[*]} > '$out/gemv_shared.json' 2> '$out/gemv_shared.log'"

if [ -n "$model" ]; then
  # Decode at context 256 (256-token prompt, 128 generated), prefill of 2048 tokens.
  step model_decode bash -c "'$bin/trellis_bench_model' -m '$model' --device vulkan:$dev --prompt 256 --gen 128 \
    --reps 3 > '$out/model_decode.json' 2> '$out/model_decode.log'"
  step model_prefill bash -c "'$bin/trellis_bench_model' -m '$model' --device vulkan:$dev --prompt 2048 --gen 16 \
    --reps 3 > '$out/model_prefill.json' 2> '$out/model_prefill.log'"
  # Prefill without cooperative matrices, decode without the fusions (before/after of this round).
  step model_prefill_nocoop bash -c "TRELLIS_VULKAN_COOPMAT=0 '$bin/trellis_bench_model' -m '$model' \
    --device vulkan:$dev --prompt 2048 --gen 16 --reps 3 > '$out/model_prefill_nocoop.json' \
    2> '$out/model_prefill_nocoop.log'"
  step model_decode_nofuse bash -c "TRELLIS_VULKAN_FUSE=0 '$bin/trellis_bench_model' -m '$model' \
    --device vulkan:$dev --prompt 256 --gen 128 --reps 3 > '$out/model_decode_nofuse.json' \
    2> '$out/model_decode_nofuse.log'"
  # Replay off (every segment recorded afresh) and a per-pipeline profile of decode.
  step model_noreplay bash -c "TRELLIS_VULKAN_REPLAY=0 '$bin/trellis_bench_model' -m '$model' --device vulkan:$dev \
    --prompt 256 --gen 64 --reps 1 > '$out/model_noreplay.json' 2> '$out/model_noreplay.log'"
  step model_profile bash -c "TRELLIS_VULKAN_PROFILE=1 '$bin/trellis_bench_model' -m '$model' --device vulkan:$dev \
    --prompt 256 --gen 32 --reps 1 > '$out/model_profile.json' 2> '$out/model_profile.log'"
fi
echo "results in $out" >&2
exit $status
