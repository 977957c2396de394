#!/bin/bash
# Session 11, call 5: exl3_out_add_norm with the row staged in shared memory, and exl3_out_silu, each switchable (.dv28), against the call-1 binary (.dv28/old), alternating.
for D in $PWD/.dv28/old $PWD/.dv28; do rm -rf $D/bin; mkdir -p $D/bin; python3 -c "import tarfile; tarfile.open('$D/bins.tar.xz').extractall('$D/bin')"; done
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export TRELLIS_SHARED=$PWD/.devbin/shared LD_LIBRARY_PATH=$PWD/.dv28/lib:$LD_LIBRARY_PATH
ICD=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json; [ -f $ICD ] && export VK_DRIVER_FILES=$ICD
( python3 bench/make_random_model.py --preset llama3-8b --bits 3 --codebook mcg --out /dev/shm/l8b3 > /dev/null 2>&1 ) &
GEN=$!
B=$PWD/.dv28/bin
timeout 100 $B/trellis_tests --gtest_filter='VulkanFusion.*:*VulkanModel*' > $OUT/vt.txt 2>&1; echo "vulkan tests rc=$?"; grep -E "^\[  (FAILED|PASSED|SKIPPED)|tests ran" $OUT/vt.txt | head; grep -B3 -A12 "Failure" $OUT/vt.txt | head -40
wait $GEN
bm() { timeout 100 env $1 $PWD/.dv$6/bin/trellis_bench_model -m /dev/shm/l8b3 --device $2 --prompt $3 --gen $4 --reps $5 > /tmp/m.json 2>/tmp/m.err; echo "bin$6 $1 $2 p$3 g$4 rc=$? $(python3 -c "import json;d=json.load(open('/tmp/m.json'));print(round(d['prefill_tok_s']), round(d['decode_tok_s'],1))" 2>&1 | tail -1)"; grep -i "error\|warn" /tmp/m.err | head -3; }
bm X=1 cuda:0 256 128 5 28
for r in 1 2; do bm X=1 vulkan:0 256 64 5 28/old; bm X=1 vulkan:0 256 64 5 28; bm TRELLIS_VULKAN_FUSE_NORM=0 vulkan:0 256 64 5 28; bm TRELLIS_VULKAN_FUSE_SILU=0 vulkan:0 256 64 5 28; bm "TRELLIS_VULKAN_FUSE_SILU=0 TRELLIS_VULKAN_FUSE_NORM=0" vulkan:0 256 64 5 28; done
bm X=1 cuda:0 256 128 5 28
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
for k,v in sorted(dd.items(), key=lambda x:-x[1][0])[:12]: print(f"  {v[0]/32*1e3:9.1f} us/tok {v[1]/32:6.1f}/tok  {k}")
PY
