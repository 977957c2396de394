#!/usr/bin/env bash
# bench/stage_gpu_run.sh: prepares the GPU acceptance run (bench/gpu_acceptance.sh) for a lent GPU
# machine that receives this working tree but not ../shared, and builds nothing itself: binaries
# for sm_90 built here, stripped, with the shared libraries a stock Ubuntu host may lack, and the
# shared fixtures, packed into STAGE_DIR; the Vulkan loader packages into .gl (the device tool's
# README explains why); and STAGE_DIR/run.sh, the command to run there.
#
# Usage (here):  bench/stage_gpu_run.sh [STAGE_DIR]      default STAGE_DIR .gpurun
#   BUILD_DIR    the build to use (default build-gpu, configured for CUDA sm_90 when new)
#   AB_BUILDS    other builds (e.g. one configured with -DCMAKE_CUDA_FLAGS=-DTRELLIS_CUDA_PAIR_PRMT)
#                whose bench binaries the ab step compares ('@/tmp/NAME', bench/gpu_session.sh)
#   TRELLIS_SHARED  the shared fixtures (default ../shared)
# Then (there), with STAGE_DIR and .gl carried:
#   bash .gpurun/run.sh --only devices,tests,cli,gemv       (results under $OUT/acceptance)
# run.sh passes its arguments to gpu_acceptance.sh after BIN_DIR and OUT_DIR; the environment
# (TRELLIS_AB, TRELLIS_MODELS, ...) passes through. Both directories are added to
# .git/info/exclude, so they travel only when named in the call's carry list.
set -euo pipefail
cd "$(dirname "$0")/.."
stage=${1:-.gpurun}
build=${BUILD_DIR:-build-gpu}
shared=${TRELLIS_SHARED:-../shared}
[ -d "$shared/fixtures" ] || { echo "stage_gpu_run: no shared fixtures at $shared" >&2; exit 1; }
for d in "$stage" .gl; do
  grep -qxF "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >> .git/info/exclude
done

if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 > /dev/null
fi
grep -q "^CMAKE_CUDA_ARCHITECTURES:.*90" "$build/CMakeCache.txt" ||
  echo "stage_gpu_run: warning: $build is not configured for sm_90" >&2
bins=(trellis trellis_tests trellis_bench_model trellis_bench_cuda_exl3 trellis_bench_vulkan_exl3)
cmake --build "$build" -j "$(nproc)" --target "${bins[@]}"

rm -rf "$stage"
pack=$stage/pack
mkdir -p "$pack/bin" "$pack/lib"
for b in "${bins[@]}"; do
  cp "$build/bin/$b" "$pack/bin/"
  strip "$pack/bin/$b"
done
# Libraries from Debian packages that the host's Ubuntu may not have (fmt, Highway, PCRE2, ...):
# everything the binaries link outside the C/C++ runtime, CUDA and the Vulkan loader.
ldd "${pack}"/bin/* | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u |
  grep -Ev '/(libc|libm|libpthread|libdl|librt|libstdc\+\+|libgcc_s|ld-linux[^/]*|libcuda|libcudart|libcublas[^/]*|libvulkan)\.so' |
  while read -r lib; do cp -L "$lib" "$pack/lib/"; done
cp -r "$shared" "$pack/shared"
# What the binaries were built from (the device's copy of the tree may carry an older .git).
dirty=$(git status --porcelain --untracked-files=no | head -1)
echo "$(git rev-parse --short HEAD)${dirty:+ with uncommitted changes}, staged $(date -u '+%Y-%m-%d %H:%M UTC')" \
  > "$pack/build-info.txt"
# One xz stream with a dictionary larger than the binaries: trellis, trellis_tests and
# trellis_bench_model each hold the same CUDA fatbins, which then compress once (26 instead of
# 47 MiB; the device call's working tree may be 64 MiB in all). Unpacking needs ~260 MiB.
tar cf - -C "$pack" . | xz -T1 --lzma2=preset=9,dict=256MiB > "$stage/pack.tar.xz"
rm -rf "$pack"

# Other builds for the ab step's '@DIR' entries (AB_BUILDS="build-prmt ..."): their two bench
# binaries as STAGE_DIR/NAME.tar.xz, which bench/gpu_session.sh unpacks into /tmp/NAME.
for extra in ${AB_BUILDS:-}; do
  name=$(basename "$extra")
  # A build without CUDA (-DTRELLIS_CUDA=OFF) has no CUDA bench: its model bench alone, for
  # TRELLIS_AB_DEVICE=vulkan:0.
  targets=(trellis_bench_model)
  grep -q 'TRELLIS_CUDA:STRING=OFF' "$extra/CMakeCache.txt" 2> /dev/null || targets+=(trellis_bench_cuda_exl3)
  cmake --build "$extra" -j "$(nproc)" --target "${targets[@]}"
  rm -rf "/tmp/stage-$name" && mkdir -p "/tmp/stage-$name/$name"
  for t in "${targets[@]}"; do cp "$extra/bin/$t" "/tmp/stage-$name/$name/"; done
  strip "/tmp/stage-$name/$name/"*
  tar cf - -C "/tmp/stage-$name" "$name" | xz -T1 --lzma2=preset=9,dict=64MiB > "$stage/$name.tar.xz"
  rm -rf "/tmp/stage-$name"
done

if ! ls .gl/libglvnd0_*.deb > /dev/null 2>&1; then
  mkdir -p .gl /tmp/amd64/partial
  o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64)
  apt-get "${o[@]}" update > /dev/null
  # The loader and the GL vendor-neutral libraries the NVIDIA ICD loads (the device README's list).
  (cd .gl && apt-get "${o[@]}" download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 > /dev/null)
fi

cat > "$stage/run.sh" << 'EOF'
#!/usr/bin/env bash
# Written by bench/stage_gpu_run.sh: unpacks the staged binaries and fixtures on the GPU host and
# runs bench/gpu_acceptance.sh BIN_DIR $OUT/acceptance "$@".
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
root=/tmp/gpurun
rm -rf "$root" && mkdir -p "$root" && tar xJf "$here/pack.tar.xz" -C "$root" || exit 1
export LD_LIBRARY_PATH=$root/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
# cuBLAS from the host's CUDA, else from a pip-installed copy (PyTorch's).
if ! ldconfig -p | grep -q 'libcublas.so.13' && [ ! -e /usr/local/cuda/lib64/libcublas.so.13 ]; then
  lib=$(find / -name 'libcublas.so.13' -not -path '/proc/*' 2> /dev/null | head -1)
  [ -n "$lib" ] && LD_LIBRARY_PATH=$(dirname "$lib"):$LD_LIBRARY_PATH
fi
export TRELLIS_SHARED=$root/shared TRELLIS_BIN_DIR=$root/bin
export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
export __EGL_VENDOR_LIBRARY_FILENAMES=${__EGL_VENDOR_LIBRARY_FILENAMES:-/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json}
out=${OUT:-/tmp/out}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
"$root/bin/trellis" devices || true
bash bench/gpu_acceptance.sh "$root/bin" "$out/acceptance" "$@"
EOF
chmod +x "$stage/run.sh"
du -sh "$stage" .gl | sed 's/^/stage_gpu_run: /'
total=$(du -sm "$stage" .gl | awk '{s += $1} END {print s}')
[ "$total" -le 60 ] || echo "stage_gpu_run: warning: $total MiB to carry (the device tool takes 64 MiB)" >&2
echo "carry: [\"$stage\", \".gl\"]; command: bash $stage/run.sh --only devices,tests,cli,gemv"
