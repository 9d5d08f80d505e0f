#!/usr/bin/env bash
# On the GPU machine, in one command: the engine itself with its language model on the GPU.
# Unpacks the dependency pack (.devdeps/engine-deps.tar.xz, made here by
# scripts/make_device_deps.sh and carried along) into /tmp, builds the engine without OpenCV
# (MLMAMBA_WITH_OPENCV=OFF), the CUDA backend module (sm_90), the command-line program and the
# engine tests of tools/cuda/engine-tests, runs the `cuda`-labelled tests and test_session, then
# the demo model's held-out set (pictures pre-decoded to PPM in the pack) on the GPU and on the CPU
# and compares the answers. Results in $OUT (or /tmp/cuda-engine-check): summary.md, build.log,
# ctest.log, eval_gpu.json, eval_cpu.json, predictions_gpu.jsonl, predictions_cpu.jsonl.
# Exit status: 0 when everything that ran passed. Each step has its own time limit.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out="${OUT:-/tmp/cuda-engine-check}"
deps="${MLMAMBA_DEVDEPS_DIR:-/tmp/mlmamba-devdeps}"
build="${MLMAMBA_ENGINE_BUILD_DIR:-/tmp/mlmamba-engine-build}"
mkdir -p "$out" "$deps"
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH="/usr/local/cuda/bin:$PATH"; fi
t0=$(date +%s)
status=0
summary="$out/summary.md"
note() { echo "$*" | tee -a "$summary"; }
: >"$summary"
note "# Engine on the GPU: $(date -u +%F) $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"

# shellcheck source=scripts/device_engine.sh
. "$root/scripts/device_engine.sh"
device_engine_unpack || { note "- pack: could not unpack"; exit 2; }

echo "== build ($(($(date +%s) - t0)) s)"
{
  g++ --version | head -1
  nvcc --version | tail -1
  cmake --version | head -1
  device_engine_build 60 150 test_backend test_cuda_lm test_cuda_vision test_session
} >"$out/build.log" 2>&1
rc=$?
note "- build (engine, module, tests): $([ $rc = 0 ] && echo ok || echo "FAILED (status $rc)") in $(($(date +%s) - t0)) s"
if [ $rc != 0 ]; then
  grep -E "error|Error|FAILED" "$out/build.log" | head -30
  exit 2
fi

echo "== tests ($(($(date +%s) - t0)) s)"
(cd "$build" && timeout 60 ctest -V -j 1 --timeout 50) >"$out/ctest.log" 2>&1
rc=$?
[ $rc = 0 ] || status=1
note "- ctest (labels cuda + engine.test_session): $(grep -E 'tests passed|tests failed' "$out/ctest.log" | tail -1)"
grep -E "^[0-9]+/[0-9]+ Test|^[0-9]+: \[  (PASSED|FAILED) |^[0-9]+: \[  SKIPPED \] [0-9]+ test" "$out/ctest.log" |
  sed 's/^/    /' | tee -a "$summary"
grep -E "^[0-9]+: \[  FAILED  \] [A-Za-z]" "$out/ctest.log" | sort -u | sed 's/^/    /' | tee -a "$summary"

echo "== demo model, held-out set ($(($(date +%s) - t0)) s)"
# The program after the tests: a failure to build it does not hold them back.
timeout 60 cmake --build "$build" -j "$(nproc)" --target mlmamba-cli >>"$out/build.log" 2>&1 ||
  { note "- mlmamba-cli: build FAILED (build.log)"; status=1; }
cli="$build/bin/mlmamba-cli"
model="$root/resources/models/shapes-demo"
data="$deps/shapes_eval/eval.jsonl"
timeout 20 "$cli" info --model "$model" --device cuda --json >"$out/info_gpu.json" 2>&1
note "- info --device cuda: $(head -c 600 "$out/info_gpu.json" | tr '\n' ' ')"
for dev in cuda cpu; do
  s0=$(date +%s)
  # On the GPU with the vision half there too (opt-in in the engine until this comparison holds).
  MLMAMBA_GPU_VISION=$([ "$dev" = cuda ] && echo 1 || echo 0) OMP_NUM_THREADS=8 \
    timeout 120 "$cli" eval --model "$model" --data "$data" --device "$dev" \
    --predictions "$out/predictions_$dev.jsonl" --json >"$out/eval_$dev.json" 2>&1
  rc=$?
  overall=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["overall"])' \
    "$out/eval_$dev.json" 2>/dev/null || head -c 300 "$out/eval_$dev.json")
  note "- eval --device $dev: status $rc, $(($(date +%s) - s0)) s, $overall"
done
python3 - "$out" <<'PY' | tee -a "$summary"
import json, sys
out = sys.argv[1]
def load(dev):
    try:
        return [json.loads(l) for l in open(f"{out}/predictions_{dev}.jsonl")]
    except OSError:
        return []
g, c = load("cuda"), load("cpu")
n = min(len(g), len(c))
same = sum(1 for a, b in zip(g, c) if a.get("prediction") == b.get("prediction"))
print(f"- held-out answers, GPU vs CPU: {same}/{n} identical "
      f"(GPU correct {sum(bool(a.get('correct')) for a in g)}/{len(g)}, "
      f"CPU correct {sum(bool(b.get('correct')) for b in c)}/{len(c)})")
for a, b in [(a, b) for a, b in zip(g, c) if a.get("prediction") != b.get("prediction")][:5]:
    print(f"    {a.get('image')} {a.get('question')!r}: GPU {a.get('prediction')!r} CPU {b.get('prediction')!r}")
PY
note "- done in $(($(date +%s) - t0)) s, status $status"
exit $status
