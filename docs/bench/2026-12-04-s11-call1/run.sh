#!/bin/bash
# Session 11, call 1: GEMV prefetch / tiles / groups A/B (micro + model), fused input transform A/B, pipeline stats.
D=$PWD/.dv23; B=$D/bin; rm -rf $B; mkdir -p $B; python3 -c "import tarfile; tarfile.open('$D/bins.tar.xz').extractall('$B')"
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export TRELLIS_SHARED=$PWD/.devbin/shared LD_LIBRARY_PATH=$D/lib:$LD_LIBRARY_PATH
ICD=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json; [ -f $ICD ] && export VK_DRIVER_FILES=$ICD
( python3 bench/make_random_model.py --preset llama3-8b --bits 3 --codebook mcg --out /dev/shm/l8b3 > /dev/null 2>&1 ) &
GEN=$!
SH="4096x4096 4096x14336 14336x4096 8192x28672"
# pipeline statistics (registers etc.) of the GEMV variants
TRELLIS_VULKAN_PIPELINE_STATS=1 timeout 60 $B/trellis_bench_vulkan_exl3 --K 3 --codebooks mcg --shapes 4096x4096 --reps 3 --warmup 1 > /dev/null 2> $OUT/stats.txt
TRELLIS_VULKAN_PIPELINE_STATS=1 TRELLIS_VULKAN_GEMV_PREFETCH=0 timeout 60 $B/trellis_bench_vulkan_exl3 --K 3 --codebooks mcg --shapes 4096x4096 --reps 3 --warmup 1 > /dev/null 2>> $OUT/stats.txt
TRELLIS_VULKAN_PIPELINE_STATS=1 TRELLIS_VULKAN_GEMV_TILES=8 timeout 60 $B/trellis_bench_vulkan_exl3 --K 3 --codebooks mcg --shapes 4096x4096 --reps 3 --warmup 1 > /dev/null 2>> $OUT/stats.txt
grep -c "pipeline stats" $OUT/stats.txt; grep "exl3_gemv" $OUT/stats.txt | cut -c1-400 | head -8
gv() { timeout 120 env $1 $B/trellis_bench_vulkan_exl3 --K 3 4 --codebooks mcg --shapes 4096x1024 $SH > /tmp/g.json 2>/tmp/g.err; echo "== vk $1 rc=$?"; grep -E "K=" /tmp/g.err /tmp/g.json | grep -v 4096x1024 | sed 's/^.*://' | cut -c1-110; }
timeout 120 $B/trellis_bench_cuda_exl3 --K 3 4 --codebooks mcg > /tmp/c.json 2>/tmp/c.err; echo "== cuda rc=$?"; grep -E "K=" /tmp/c.err /tmp/c.json | sed 's/^.*://' | cut -c1-130
gv X=1; gv TRELLIS_VULKAN_GEMV_PREFETCH=0; gv TRELLIS_VULKAN_GEMV_TILES=8; gv TRELLIS_VULKAN_GEMV_TILES=2; gv TRELLIS_VULKAN_GEMV_GROUPS=1024; gv TRELLIS_VULKAN_GEMV_GROUPS=2048
timeout 150 $B/trellis_tests --gtest_filter='VulkanExl3*:VulkanOps.*Exl3*:*VulkanModel*' > $OUT/vt.txt 2>&1; echo "vulkan tests rc=$?"; grep -E "^\[  (FAILED|PASSED|SKIPPED)|tests ran" $OUT/vt.txt | head; grep -B3 -A12 "Failure" $OUT/vt.txt | head -40
wait $GEN
bm() { timeout 100 env $1 $B/trellis_bench_model -m /dev/shm/l8b3 --device $2 --prompt $3 --gen $4 --reps $5 > /tmp/m.json 2>/tmp/m.err; echo "$1 $2 p$3 g$4 rc=$? $(python3 -c "import json;d=json.load(open('/tmp/m.json'));print(round(d['prefill_tok_s']), round(d['decode_tok_s'],1))" 2>&1 | tail -1)"; grep -i "error\|warn" /tmp/m.err | head -3; }
bm X=1 cuda:0 256 128 5
for r in 1 2; do
bm X=1 vulkan:0 256 64 5; bm TRELLIS_VULKAN_GEMV_HIN=0 vulkan:0 256 64 5; bm TRELLIS_VULKAN_GEMV_PREFETCH=0 vulkan:0 256 64 5
bm TRELLIS_VULKAN_GEMV_TILES=8 vulkan:0 256 64 5; bm TRELLIS_VULKAN_GEMV_GROUPS=1024 vulkan:0 256 64 5
done
bm X=1 cuda:0 256 128 5
pf() { timeout 150 env TRELLIS_VULKAN_PROFILE=3 $B/trellis_bench_model -m /dev/shm/l8b3 --device vulkan:0 --prompt $1 --gen $2 --reps 1 --warmup 0 > /dev/null 2> $OUT/prof_$1_$2.txt; echo "profile p$1 g$2 rc=$?"; }
pf 256 1; pf 256 33
python3 - <<PY
import re
def load(f):
    d={}
    for l in open(f):
        m=re.match(r'.*Vulkan profile: (\S+)\s+([\d.]+) ms\s+(\d+) dispatches', l)
        if m and m.group(1)!='(total)': d[m.group(1)]=(float(m.group(2)), int(m.group(3)))
    return d
a=load('$OUT/prof_256_1.txt'); b=load('$OUT/prof_256_33.txt')
dd={k:(b[k][0]-a.get(k,(0,0))[0], b[k][1]-a.get(k,(0,0))[1]) for k in b}
tot=sum(v[0] for v in dd.values())/32
print("stream profile, decode per token (ctx 256..288) GPU ms", round(tot,3))
for k,v in sorted(dd.items(), key=lambda x:-x[1][0])[:22]: print(f"  {v[0]/32*1e3:9.1f} us/tok {v[1]/32:6.1f}/tok  {k}")
PY
