#!/usr/bin/env bash
# bench/gpu_acceptance.sh: the GPU acceptance run of the CUDA and Vulkan backends (issues 5 and 6)
# in one command, so that every number of the report comes from the same machine and run.
#
# Usage: bench/gpu_acceptance.sh BIN_DIR OUT_DIR [--quick] [--only STEP[,STEP...]]
#   BIN_DIR  a build's bin directory (trellis, trellis_tests, trellis_bench_model, and
#            trellis_bench_cuda_exl3 / trellis_bench_vulkan_exl3 where built)
#   OUT_DIR  created if missing; receives every log and JSON file, and report.md
#            (bench/acceptance_report.py OUT_DIR renders it again)
#   --quick  small shapes, 2 ppl / 1 kld chunks, a 2-layer SmolLM2-shaped model: checks the
#            script and the report end to end in minutes (on lavapipe, say); numbers mean nothing
#   --only   run only these steps: devices, tests, cli, gemv, models, memory, ab, profile, srcprof, timeline
# Steps, each on every backend `trellis devices` lists (CUDA and Vulkan device 0; the CPU as the
# reference where one is needed):
#   tests    trellis_tests '*Cuda*' and '*Vulkan*' (gtest XML); TRELLIS_TESTS_FILTER=F runs filter F only
#   cli      run (greedy) / ppl / kld / logits on the tiny-llama fixture with --device auto, cpu,
#            cuda, vulkan: text, perplexity and logits compared with the CPU's in the report
#   gemv     EXL3 GEMV for K = 1..8 x 3 codebooks on the four shapes of issue 5 (CUDA next to
#            cuBLAS fp16, Vulkan next to its dense fp16 GEMV; Vulkan as the median of
#            $TRELLIS_VULKAN_GEMV_ROUNDS sweeps, default 3)
#   models   Llama-3.1-8B-shaped MCG models at K = 2, 3, 4 (bench/make_random_model.py, written
#            to $TRELLIS_MODELS, default /dev/shm/trellis-models: ~3.5 GB each) and the
#            SmolLM2-135M-shaped 3 bpw one: prefill and decode at contexts 1, 256 and 2048
#   memory   peak GPU memory (nvidia-smi, every 0.2 s) of the 3 bpw 8B model with an 8K context
#   ab       every switch named in $TRELLIS_AB (default: the CUDA and Vulkan GEMV variants not
#            yet measured on a GPU, one at a time and two together; A+B sets both; VAR=a/b
#            compares two values of a knob; @DIR runs another build's binaries from DIR as "0"
#            against BIN_DIR's as "1") at 0 and 1 alternately, in $TRELLIS_AB_ROUNDS rounds
#            (default 2): for TRELLIS_CUDA_* the CUDA GEMV (not with TRELLIS_AB_GEMV=0) at
#            K = 2, 3 x MCG, MUL1 on the four shapes, and the 3 bpw 8B model's decode at context
#            256 (TRELLIS_AB_PROMPT) on the backend the switch belongs to (CUDA for @DIR;
#            TRELLIS_AB_DEVICE overrides it); the report gives the ratios (roughly 1.5 minutes
#            per switch on an H200, an estimate: name three or four in TRELLIS_AB per 10-minute
#            call)
#   timeline (only when named) per-block phase times of decode GEMV launches, from a
#            -DTRELLIS_CUDA_GEMV_TIMELINE build (bench/gemv_timeline.py): timeline/report.md
#   srcprof  (only when named) Nsight Compute's per-instruction warp-state samples of one decode
#            layer's four GEMV launches (the 3 bpw 8B model, context 256): srcprof/report.md
#            (bench/srcprof_report.py) and srcprof/sass.csv
#   profile  (only when named) Nsight Compute on the CUDA backend: the 3 bpw 8B model's decode
#            step at context 256, GPU time per kernel (bench/profile_report.py), and the
#            scheduler, warp-state, pipe and occupancy sections of the K = 3 MCG GEMV on
#            8192x28672 in six variants (the fused default, halves, unfused, the unfused
#            occupancy build, weights-as-A with pairs and with halves); a few minutes on an H200 (an estimate)
# Every step runs even when an earlier one failed; the exit status is non-zero if any failed.
# TRELLIS_SHARED points at the shared fixtures (default: ../shared of the source tree); the Vulkan
# loader must find the GPU's driver (e.g. VK_DRIVER_FILES=/path/to/nvidia_icd.json).
# In full it takes about 25 minutes on an H200; where one command may run 10 minutes, split it
# (e.g. --only devices,tests,cli,gemv, then --only models,memory, then --only ab with three or
# four switches in TRELLIS_AB per call) into the same OUT_DIR, or merge the directories
# afterwards (each call writes its own steps_*.txt), and run bench/acceptance_report.py OUT_DIR
# once more.
set -uo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
if [ $# -lt 2 ]; then
  sed -n '2,36p' "$0" >&2
  exit 2
fi
bin=$(cd "$1" && pwd) || exit 2
out=$2
shift 2
quick=0
only=devices,tests,cli,gemv,models,memory,ab
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1 ;;
    --only) only=$2; shift ;;
    *) echo "gpu_acceptance.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$out" || exit 2
out=$(cd "$out" && pwd)
export TRELLIS_SHARED=${TRELLIS_SHARED:-$src/../shared}
models=${TRELLIS_MODELS:-/dev/shm/trellis-models}
py=${PYTHON:-${TRELLIS_PYTHON:-python3}}  # needs numpy (scripts/python_env.sh's venv has it)
tiny=$TRELLIS_SHARED/fixtures/tiny-llama
wiki=$TRELLIS_SHARED/data/wikitext-2/wiki.test.raw
status=0
steps=$out/steps_$(date -u +%Y%m%d%H%M%S).txt
wants() { [[ ",$only," == *",$1,"* ]]; }
step() {  # step NAME COMMAND...: runs it, logs the exit status
  echo "== $1 ($(date -u +%H:%M:%S))" >&2
  local name=$1
  shift
  "$@"
  local rc=$?
  echo "$name $rc" >> "$steps"
  [ $rc -eq 0 ] || { echo "   failed with status $rc" >&2; status=1; }
}

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "commit: $(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  [ -f "$bin/../build-info.txt" ] && echo "binaries: $(cat "$bin/../build-info.txt")"
  echo "host: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
  command -v nvidia-smi > /dev/null &&
    echo "gpu: $(nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader | head -1)"
  echo "quick: $quick"
} > "$out/env.txt"
: > "$steps"

"$bin/trellis" devices --json > "$out/devices.json" 2> "$out/devices.log"
has() { grep -q "\"backend\": \"$1\"" "$out/devices.json"; }
devs=()
has cuda && devs+=(cuda:0)
has vulkan && devs+=(vulkan:0)
echo "GPU devices: ${devs[*]:-none}" >&2

if wants tests; then
  # TRELLIS_TESTS_FILTER narrows the run to one gtest filter (one step, tests_filtered).
  backends=(Cuda Vulkan)
  [ -n "${TRELLIS_TESTS_FILTER:-}" ] && backends=(filtered)
  for b in "${backends[@]}"; do
    filter="*$b*"
    [ "$b" = filtered ] && { filter=$TRELLIS_TESTS_FILTER; echo "$filter" > "$out/tests_filtered.filter"; }
    step "tests_$b" bash -c "'$bin/trellis_tests' --gtest_filter='$filter' --gtest_output=xml:'$out/tests_$b.xml' \
      > '$out/tests_$b.log' 2>&1"
  done
fi

if wants cli; then
  mkdir -p "$out/cli"
  ppl_chunks=16; kld_chunks=8
  [ $quick = 1 ] && { ppl_chunks=2; kld_chunks=1; }  # lavapipe: ~7 s per 512-token chunk and model
  for d in cpu auto "${devs[@]}"; do
    f=$out/cli/${d%%:*}
    [ "$d" = auto ] && f=$out/cli/auto
    v=; [ "$d" = auto ] && v=-v  # -v logs the device auto chose
    step "run_$d" bash -c "'$bin/trellis' $v run -m '$tiny/exl3-q3_mcg' --device $d -p 'The capital of France is' \
      -n 24 -t 0 > '$f.run.txt' 2> '$f.run.log'"
    [ "$d" = auto ] && continue
    step "ppl_$d" bash -c "'$bin/trellis' ppl -m '$tiny/exl3-q3_mcg' -f '$wiki' --device $d --ctx 512 \
      --chunks $ppl_chunks --json > '$f.ppl.json' 2> '$f.ppl.log'"
    step "kld_$d" bash -c "'$bin/trellis' kld -m '$tiny/exl3-q3_mcg' --ref '$tiny/hf' -f '$wiki' --device $d \
      --ctx 512 --chunks $kld_chunks --json > '$f.kld.json' 2> '$f.kld.log'"
    step "logits_$d" bash -c "'$bin/trellis' logits -m '$tiny/exl3-q3_mcg' -f '$wiki' --device $d --tokens 128 \
      -o '$f.logits.safetensors' > /dev/null 2> '$f.logits.log'"
  done
fi

if wants gemv; then
  if [ $quick = 1 ]; then
    ks=(2 3); shapes=(256x256 512x256); extra=(--reps 3 --warmup 1)
  else
    ks=(1 2 3 4 5 6 7 8); shapes=(4096x4096 4096x14336 14336x4096 8192x28672); extra=()
  fi
  for d in "${devs[@]}"; do
    b=${d%%:*}
    [ -x "$bin/trellis_bench_${b}_exl3" ] || { echo "no trellis_bench_${b}_exl3 in $bin" >&2; status=1; continue; }
    # Vulkan: the median of $TRELLIS_VULKAN_GEMV_ROUNDS sweeps (default 3; single shapes moved 2x
    # between runs on the H100, docs/BENCHMARKS.md session 25).
    rounds=()
    [ "$b" = vulkan ] && [ $quick = 0 ] && rounds=(--rounds "${TRELLIS_VULKAN_GEMV_ROUNDS:-3}")
    step "gemv_$b" bash -c "'$bin/trellis_bench_${b}_exl3' --K ${ks[*]} --codebooks 3inst mcg mul1 \
      --shapes ${shapes[*]} ${extra[*]} ${rounds[*]} > '$out/gemv_$b.json' 2> '$out/gemv_$b.log'"
  done
fi

gen() {  # gen NAME ARGS...: writes a random model once
  [ -f "$models/$1/config.json" ] && return 0
  local name=$1
  shift
  "$py" "$src/bench/make_random_model.py" "$@" --out "$models/$name.tmp" > /dev/null &&
    mv "$models/$name.tmp" "$models/$name" &&
    { [ ! -d "$TRELLIS_SHARED/tokenizers/smollm2-135m" ] || [[ $name != smol* ]] ||
      cp -n "$TRELLIS_SHARED/tokenizers/smollm2-135m/"* "$models/$name/"; }
}

if wants models; then
  mkdir -p "$models" "$out/models"
  if [ $quick = 1 ]; then
    set_models=(smol3q); prompts=(1 16 64); gen_tokens=8; reps=1
    step gen_smol3q gen smol3q --preset smollm2-135m --bits 3 --codebook mcg --layers 2
    run_devs=("${devs[@]}" cpu)
  else
    set_models=(l8b3 l8b2 l8b4 smol3); prompts=(1 256 2048); gen_tokens=128; reps=3
    for k in 2 3 4; do step "gen_l8b$k" gen "l8b$k" --preset llama3-8b --bits $k --codebook mcg & done
    step gen_smol3 gen smol3 --preset smollm2-135m --bits 3 --codebook mcg
    wait  # the background steps record their status in the steps file
    run_devs=("${devs[@]}")
  fi
  for m in "${set_models[@]}"; do
    for p in "${prompts[@]}"; do
      for d in "${run_devs[@]}"; do
        step "model_${m}_${d%%:*}_p$p" bash -c "timeout 300 '$bin/trellis_bench_model' -m '$models/$m' --device $d \
          --prompt $p --gen $gen_tokens --reps $reps > '$out/models/${m}_${d%%:*}_p$p.json' \
          2> '$out/models/${m}_${d%%:*}_p$p.log'"
      done
    done
  done
fi

if wants memory && command -v nvidia-smi > /dev/null && [ $quick = 0 ]; then
  for d in "${devs[@]}"; do
    idle=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
    (while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1; sleep 0.2; done) \
      > "$out/memory_${d%%:*}.samples" &
    sampler=$!
    step "memory_${d%%:*}" bash -c "'$bin/trellis_bench_model' -m '$models/l8b3' --device $d --prompt 2048 \
      --gen 64 --reps 1 --ctx 8192 > '$out/memory_${d%%:*}.json' 2> '$out/memory_${d%%:*}.log'"
    kill $sampler
    echo "{\"idle_mib\": $idle, \"peak_mib\": $(sort -n "$out/memory_${d%%:*}.samples" | tail -1)}" \
      > "$out/memory_${d%%:*}.peak.json"
  done
fi

if wants ab && [ ${#devs[@]} -gt 0 ]; then
  mkdir -p "$out/ab" "$models"
  if [ $quick = 1 ]; then
    ab_shapes=(256x256); ab_ks=(3); ab_model=smol3q; ab_prompt=1; ab_extra=(--reps 3 --warmup 1); ab_run=(8 1)
    step gen_smol3q gen smol3q --preset smollm2-135m --bits 3 --codebook mcg --layers 2
  else
    ab_shapes=(4096x4096 4096x14336 14336x4096 8192x28672); ab_ks=(2 3); ab_model=l8b3; ab_prompt=${TRELLIS_AB_PROMPT:-256}; ab_extra=()
    ab_run=(64 3)  # decoded tokens, reps
    step gen_l8b3 gen l8b3 --preset llama3-8b --bits 3 --codebook mcg
  fi
  # The opt-in variants still undecided (session 13 measured the others: docs/CUDA.md, VULKAN.md);
  # the occupancy build replaces the unfused kernel only, hence FUSED_IN=0 beside it. A switch
  # written VAR=a/b runs VAR=a in the "0" role and VAR=b in the "1" role (a knob, not an on/off
  # switch); its label in file names and the report is VAR=a-b.
  # (Weights as A became the default in session 17, so HALVES runs on top of it.)
  ab_default="TRELLIS_CUDA_GEMV_HALVES TRELLIS_CUDA_GEMV_BLOCKS_PER_SM=12/8"
  [ -z "${TRELLIS_AB:-}" ] && [ "${TRELLIS_CUDA_GEMV_FUSED_IN:-}" = 0 ] && ab_default+=" TRELLIS_CUDA_GEMV_OCCUPANCY"
  for spec in ${TRELLIS_AB:-$ab_default}; do
    sw=$spec values=(0 1) bins=("$bin" "$bin")
    if [[ $spec == @* ]]; then  # @DIR: role 0 runs DIR's binaries (another build), role 1 BIN_DIR's
      bins=("${spec#@}" "$bin")
      sw=BUILD_$(basename "${spec#@}")
      label=$sw
    elif [[ $spec == *=*/* ]]; then
      sw=${spec%%=*}
      values=("${spec#*=}")
      values=("${values[0]%%/*}" "${values[0]#*/}")
      label="$sw=${values[0]}-${values[1]}"
    else
      label=$sw
    fi
    [ "$ab_prompt" = 256 ] || [ $quick = 1 ] || label+="@ctx$ab_prompt"
    ab_dev=cuda:0
    [[ $sw == TRELLIS_VULKAN_* ]] && ab_dev=vulkan:0
    # TRELLIS_AB_DEVICE: the device for every switch (e.g. vulkan:0 for an @DIR build comparison,
    # which otherwise runs on CUDA).
    ab_dev=${TRELLIS_AB_DEVICE:-$ab_dev}
    [[ " ${devs[*]} " == *" $ab_dev "* ]] || { echo "ab: $sw needs $ab_dev" >&2; continue; }
    for r in $(seq 1 "${TRELLIS_AB_ROUNDS:-2}"); do
      for v in 0 1; do
        set_env=""
        [[ $sw == BUILD_* ]] || for part in ${sw//+/ }; do set_env+="$part=${values[$v]} "; done
        b=${bins[$v]}
        [ $ab_dev = cuda:0 ] && [ "${TRELLIS_AB_GEMV:-1}" != 0 ] &&
          step "ab_gemv_${label}_${v}_r$r" bash -c "$set_env '$b/trellis_bench_cuda_exl3' --K ${ab_ks[*]} \
            --codebooks mcg mul1 --shapes ${ab_shapes[*]} ${ab_extra[*]} > '$out/ab/gemv_${label}_${v}_r$r.json' \
            2> '$out/ab/gemv_${label}_${v}_r$r.log'"
        step "ab_model_${label}_${v}_r$r" bash -c "$set_env timeout 300 '$b/trellis_bench_model' \
          -m '$models/$ab_model' --device $ab_dev --prompt $ab_prompt --gen ${ab_run[0]} --reps ${ab_run[1]} \
          > '$out/ab/model_${label}_${v}_r$r.json' 2> '$out/ab/model_${label}_${v}_r$r.log'"
      done
    done
  done
fi

# find_ncu STEP: sets ncu to Nsight Compute's CLI, or logs STEP_ncu as failed and returns 1.
find_ncu() {
  ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2> /dev/null | head -1)
  [ -n "$ncu" ] && return 0
  echo "$1: no ncu (Nsight Compute) on this machine" >&2
  echo "$1_ncu 1" >> "$steps"
  status=1
  return 1
}

if wants profile && [[ " ${devs[*]} " == *" cuda:0 "* ]] && find_ncu profile; then
  mkdir -p "$out/profile" "$models"
  step gen_l8b3 gen l8b3 --preset llama3-8b --bits 3 --codebook mcg
  # The decode without the profiler, then the same decode under it with 2 and 6 steps: the
  # difference is four steady-state steps (profile_report.py).
  step profile_decode_wall bash -c "'$bin/trellis_bench_model' -m '$models/l8b3' --device cuda:0 --prompt 256 \
    --gen 64 --reps 3 > '$out/profile/decode_wall.json' 2> '$out/profile/decode_wall.log'"
  for g in 2 6; do
    step "profile_decode_g$g" bash -c "'$ncu' --clock-control none --cache-control none --csv --print-units base \
      --kernel-name-base demangled \
      --metrics gpu__time_duration.sum --log-file '$out/profile/decode_g$g.csv' '$bin/trellis_bench_model' \
      -m '$models/l8b3' --device cuda:0 --prompt 256 --gen $g --reps 1 --warmup 0 > /dev/null \
      2> '$out/profile/decode_g$g.log'"
  done
  wall=$("$py" -c "import json,sys; print(json.load(open(sys.argv[1]))['decode_tok_s'])" \
    "$out/profile/decode_wall.json" 2> /dev/null || echo 0)
  step profile_decode_report bash -c "'$py' '$src/bench/profile_report.py' '$out/profile/decode_g2.csv' 2 \
    '$out/profile/decode_g6.csv' 6 --wall-tok-s $wall > '$out/profile/decode.md'"
  # The GEMV's limiter: NAME|the kernel's template arguments after <K, CB, (Mode, Fuse, MinBlocks)|ENV.
  # The bench times the product kernel alone (Fuse 0) and then the whole forward (fused default: Fuse 2).
  # ncu's demangled names spell template arguments "(int)3", hence the regex built from NAME's list.
  variants=("fused|0, 2, 1|TRELLIS_CUDA_GEMV_WEIGHTS_A=0"
    "halves|1, 2, 1|TRELLIS_CUDA_GEMV_HALVES=1 TRELLIS_CUDA_GEMV_WEIGHTS_A=0"
    "unfused|0, 0, 1|TRELLIS_CUDA_GEMV_FUSED_IN=0 TRELLIS_CUDA_GEMV_WEIGHTS_A=0"
    "occupancy|0, 0, 10|TRELLIS_CUDA_GEMV_FUSED_IN=0 TRELLIS_CUDA_GEMV_OCCUPANCY=1 TRELLIS_CUDA_GEMV_WEIGHTS_A=0"
    "weightsA|2, 2, 1|TRELLIS_CUDA_GEMV_WEIGHTS_A=1"
    "halvesWA|3, 2, 1|TRELLIS_CUDA_GEMV_HALVES=1 TRELLIS_CUDA_GEMV_WEIGHTS_A=1")
  for v in "${variants[@]}"; do
    IFS='|' read -r name targs env_set <<< "$v"
    kre=$(sed 's/\([0-9][0-9]*\)/\\(int\\)\1/g' <<< "3, 1, $targs")
    step "profile_gemv_$name" bash -c "$env_set '$ncu' --clock-control none --kernel-name-base demangled \
      -k 'regex:gemv_kernel<$kre>' --launch-skip 2 --launch-count 1 --section SpeedOfLight \
      --section Occupancy --section LaunchStats --section SchedulerStats --section WarpStateStats \
      --section ComputeWorkloadAnalysis --section InstructionStats --section MemoryWorkloadAnalysis \
      --log-file '$out/profile/gemv_$name.txt' '$bin/trellis_bench_cuda_exl3' --K 3 --codebooks mcg \
      --shapes 8192x28672 --reps 2 --warmup 0 > /dev/null 2> '$out/profile/gemv_$name.log'"
  done
fi

if wants srcprof && [[ " ${devs[*]} " == *" cuda:0 "* ]] && find_ncu srcprof; then
  # Where the decode GEMVs' warps wait, instruction by instruction: Nsight Compute's source
  # counters (warp-state samples per SASS instruction) of one layer's four K = 3 GEMV launches
  # (q/k/v, o, gate/up, down) in the second decode step of the 8B model at context 256. The
  # launches skipped are the first decode step's (TRELLIS_SRCPROF_SKIP, default 128).
  # TRELLIS_SRCPROF_KERNEL (an ncu name regex) and TRELLIS_SRCPROF_COUNT pick other launches, e.g.
  # attention_decode_kernel, skip 32, count 2: the second decode step's first two layers.
  mkdir -p "$out/srcprof" "$models"
  step gen_l8b3 gen l8b3 --preset llama3-8b --bits 3 --codebook mcg
  step srcprof_layer bash -c "'$ncu' --clock-control none --kernel-name-base demangled \
    -k 'regex:${TRELLIS_SRCPROF_KERNEL:-gemv_kernel<\\(int\\)3}' --launch-skip ${TRELLIS_SRCPROF_SKIP:-128} \
    --launch-count ${TRELLIS_SRCPROF_COUNT:-4} \
    --section SpeedOfLight --section LaunchStats --section Occupancy --section SchedulerStats \
    --section WarpStateStats --section SourceCounters --import-source no -f -o '$out/srcprof/layer' \
    '$bin/trellis_bench_model' -m '$models/l8b3' --device cuda:0 --prompt 256 --gen 3 --reps 1 --warmup 0 \
    > '$out/srcprof/layer.log' 2>&1"
  step srcprof_details bash -c "'$ncu' -i '$out/srcprof/layer.ncu-rep' --print-units base > '$out/srcprof/details.txt' 2>&1"
  step srcprof_sass bash -c "'$ncu' -i '$out/srcprof/layer.ncu-rep' --page source --csv --print-source sass \
    > '$out/srcprof/sass.csv' 2> '$out/srcprof/sass.log'"
  step srcprof_report bash -c "'$py' '$src/bench/srcprof_report.py' '$out/srcprof/sass.csv' > '$out/srcprof/report.md'"
fi

if wants timeline && [[ " ${devs[*]} " == *" cuda:0 "* ]]; then
  # Per-block phase times of eight decode GEMV launches (two layers of the second decode step of
  # the 3 bpw 8B model at context 256), from a -DTRELLIS_CUDA_GEMV_TIMELINE build's bench binary
  # in $TRELLIS_TIMELINE_BIN (default /tmp/tl: stage_gpu_run.sh's AB_BUILDS entry named tl).
  tl_bin=${TRELLIS_TIMELINE_BIN:-/tmp/tl}
  mkdir -p "$out/timeline" "$models"
  step gen_l8b3 gen l8b3 --preset llama3-8b --bits 3 --codebook mcg
  step timeline_run bash -c "TRELLIS_GEMV_TIMELINE_OUT='$out/timeline/records.txt' \
    TRELLIS_GEMV_TIMELINE_FIRST=${TRELLIS_TIMELINE_FIRST:-129} '$tl_bin/trellis_bench_model' -m '$models/l8b3' \
    --device cuda:0 --prompt 256 --gen 16 --reps 1 --warmup 0 > '$out/timeline/bench.json' 2> '$out/timeline/stderr.log'"
  step timeline_report bash -c "'$py' '$src/bench/gemv_timeline.py' '$out/timeline/records.txt' \
    '$out/timeline/stderr.log' > '$out/timeline/report.md'"
fi

# The report compares the logits files once (cli/logits_compare.json) and they go: 16+ MB each.
"$py" "$src/bench/acceptance_report.py" "$out" > "$out/report.md" || status=1
rm -f "$out"/cli/*.logits.safetensors
grep -qv ' 0$' "$steps" && status=1
echo "report: $out/report.md" >&2
exit $status
