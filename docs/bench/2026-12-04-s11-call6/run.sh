#!/bin/bash
# Session 11, call 6: the cooperative-matrix decode GEMV (TRELLIS_VULKAN_GEMV_COOP=1) against the FMA GEMV: tests, driver IR, kernel bench, 8B decode A/B.
D=$PWD/.dv29; B=$D/bin; rm -rf $B; mkdir -p $B; python3 -c "import tarfile; tarfile.open('$D/bins.tar.xz').extractall('$B')"
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export TRELLIS_SHARED=$PWD/.devbin/shared LD_LIBRARY_PATH=$D/lib:$LD_LIBRARY_PATH
ICD=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json; [ -f $ICD ] && export VK_DRIVER_FILES=$ICD
( python3 bench/make_random_model.py --preset llama3-8b --bits 3 --codebook mcg --out /dev/shm/l8b3 > /dev/null 2>&1 ) &
GEN=$!
TRELLIS_VULKAN_GEMV_COOP=1 timeout 100 $B/trellis_tests --gtest_filter='VulkanExl3*:*VulkanModel*:VulkanFusion*' > $OUT/vt_coop.txt 2>&1; echo "vulkan tests, coop gemv on: rc=$?"; grep -E "^\[  (FAILED|PASSED|SKIPPED)|tests ran|rel_rms" $OUT/vt_coop.txt | head; grep -B3 -A12 "Failure" $OUT/vt_coop.txt | head -30
timeout 100 $B/trellis_tests --gtest_filter='*Vulkan*' > $OUT/vt.txt 2>&1; echo "vulkan tests rc=$?"; grep -E "^\[  (FAILED|PASSED|SKIPPED)|tests ran" $OUT/vt.txt | head -3; grep -B3 -A12 "Failure" $OUT/vt.txt | head -30
for c in 0 1; do TRELLIS_VULKAN_PIPELINE_STATS=2 TRELLIS_VULKAN_GEMV_COOP=$c TRELLIS_VULKAN_GEMV_HIN=0 timeout 60 $B/trellis_bench_vulkan_exl3 --K 3 --codebooks mcg --shapes 4096x4096 --reps 3 --warmup 1 > /dev/null 2> $OUT/ir_coop$c.txt; done
grep "pipeline stats: exl3_gemv" $OUT/ir_coop*.txt | sed 's/Local Memory Size=[0-9]*; //' | cut -c1-220; grep -c "" $OUT/ir_coop*.txt; grep "pipeline ir" $OUT/ir_coop1.txt | head -5
gv() { timeout 100 env $1 $B/trellis_bench_vulkan_exl3 --K 3 4 --codebooks mcg --shapes 4096x1024 4096x4096 4096x14336 14336x4096 8192x28672 > /tmp/g.json 2>/tmp/g.err; echo "== vk $1 rc=$?"; grep -E "K=" /tmp/g.err | grep -v 4096x1024 | cut -c1-110; grep -i "error\|warn" /tmp/g.err | head -3; }
timeout 100 $B/trellis_bench_cuda_exl3 --K 3 4 --codebooks mcg > /tmp/c.json 2>/tmp/c.err; echo "== cuda rc=$?"; grep -E "K=" /tmp/c.err | cut -c1-130
gv X=1; gv TRELLIS_VULKAN_GEMV_COOP=1
wait $GEN
bm() { timeout 100 env $1 $B/trellis_bench_model -m /dev/shm/l8b3 --device $2 --prompt $3 --gen $4 --reps $5 > /tmp/m.json 2>/tmp/m.err; echo "$1 $2 p$3 g$4 rc=$? $(python3 -c "import json;d=json.load(open('/tmp/m.json'));print(round(d['prefill_tok_s']), round(d['decode_tok_s'],1))" 2>&1 | tail -1)"; grep -i "error\|warn" /tmp/m.err | head -3; }
bm X=1 cuda:0 256 128 5
for r in 1 2 3; do bm X=1 vulkan:0 256 64 5; bm TRELLIS_VULKAN_GEMV_COOP=1 vulkan:0 256 64 5; done
bm X=1 cuda:0 256 128 5
