#!/usr/bin/env bash
# On the GPU machine, in one command: builds the CUDA backend module alone (nvcc + cmake; none of
# the engine's other dependencies), checks its Mamba-2 language model against the PyTorch
# reference (tools/cuda/check_lm.py) and times a 130M-shape and a 2.7B-shape model, then checks
# its vision half (encoders, connector, projector) against tools/train/model.py and times one
# full-size 384 px picture (tools/cuda/check_vision.py).
# Results in $OUT (or /tmp/cuda-check): build.log, ptxas.txt, check.log, cuda_check.json,
# cuda_check.md, vision.log, vision_check.json, vision_check.md. Exit status: 1 if any check of
# either failed. About 3-5 minutes on an H200.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out="${OUT:-/tmp/cuda-check}"
build="${MLMAMBA_CUDA_BUILD_DIR:-/tmp/mlmamba-cuda-build}"
mkdir -p "$out"
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH="/usr/local/cuda/bin:$PATH"; fi
t0=$(date +%s)

echo "== build (sm_90)"
{
  nvcc --version | tail -2
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv || true
  cmake -S "$root/engine/cuda" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90
  cmake --build "$build" -j "$(nproc)"
} >"$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 2; }
tail -3 "$out/build.log"

# Registers, shared memory and spills of every kernel (no device time needed, kept for the log).
ls "$root"/engine/cuda/*.cu | xargs -P "$(nproc)" -I{} sh -c \
  'nvcc -std=c++17 -O3 -I "$0/engine/src" -gencode arch=compute_90,code=sm_90 -Xptxas -v -c {} -o /dev/null 2>&1 | grep -E "Compiling entry|registers|spill" | sed "s|^|$(basename {}): |"' \
  "$root" >"$out/ptxas.txt" 2>&1 || true

echo "== check and timing ($(($(date +%s) - t0)) s so far)"
set +e
PYTHONUNBUFFERED=1 timeout 420 "${PYTHON:-python3}" "$root/tools/cuda/check_lm.py" \
  --module "$build/lib/libmlmamba-cuda.so" --out "$out" 2>&1 | tee "$out/check.log" | grep -v "^  \[ok  \]"
status=${PIPESTATUS[0]}
echo "== vision check and timing ($(($(date +%s) - t0)) s so far)"
PYTHONUNBUFFERED=1 timeout 240 "${PYTHON:-python3}" "$root/tools/cuda/check_vision.py" \
  --module "$build/lib/libmlmamba-cuda.so" --out "$out" 2>&1 | tee "$out/vision.log" | grep -v "^  \[ok  \]"
vision_status=${PIPESTATUS[0]}
if [ "$status" -eq 0 ]; then status=$vision_status; fi
set -e
echo "== done in $(($(date +%s) - t0)) s, status $status; results in $out (cuda_check.md, vision_check.md)"
exit "$status"
