#!/usr/bin/env bash
# On the GPU machine, in one command (carry .devdeps): the whole ML-Mamba pipeline timed with the
# engine against transformers on the same GPU, both against the floors measured in the same run.
#   scripts/gpu_bench.sh [--preset full|tiny] [--set SECTION.FIELD=VALUE ...] [--skip-baseline]
# Steps, each under its own time limit inside one overall deadline (GPU_BENCH_DEADLINE_S, default
# 520 s, so the whole command ends inside 9 minutes):
#   1. the random package (tools/make_random_package.py, bf16) written to /tmp in the background,
#      unless it is already there: one CPU core, 1.5-2.5 minutes for the full 7.15 GB preset;
#   2. the engine, the CUDA module and mlmamba-cli built as scripts/cuda_engine_check.sh builds them
#      (same dependency pack, same CMake project and build folder, so either script reuses the
#      other's build);
#   3. floors (copy bandwidth, bf16 GEMM), then the transformers baseline: while the package is
#      still being written, so that the GPU is busy with one thing at a time;
#   4. the engine (`bench`, `chat`, `generate --json`) once the package is complete;
#   5. the report: gpu_bench.json and gpu_bench.md.
# Results in $OUT (or /tmp/gpu-bench), eight files: gpu_bench.md, gpu_bench.json, floors.json,
# baseline.json, ours.json, ours.log, build.log, package.log (the picture and package.json go to
# /tmp/gpu-bench-work). Exit status 0 when the report was written.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out="${OUT:-/tmp/gpu-bench}"
deps="${MLMAMBA_DEVDEPS_DIR:-/tmp/mlmamba-devdeps}"
build="${MLMAMBA_ENGINE_BUILD_DIR:-/tmp/mlmamba-engine-build}"
preset=full
sets=()
skip_baseline=0
while [ $# -gt 0 ]; do
  case "$1" in
    --preset) preset="$2"; shift 2 ;;
    --set) sets+=(--set "$2"); shift 2 ;;
    --skip-baseline) skip_baseline=1; shift ;;
    *) echo "usage: $0 [--preset full|tiny] [--set PATH=VALUE ...] [--skip-baseline]" >&2; exit 2 ;;
  esac
done
package="${GPU_BENCH_PACKAGE:-/tmp/mlmamba-bench-$preset}"
work="${GPU_BENCH_WORK:-/tmp/gpu-bench-work}"
mkdir -p "$out" "$deps" "$work"
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH="/usr/local/cuda/bin:$PATH"; fi
export PYTHONUNBUFFERED=1
t0=$(date +%s)
deadline=$((t0 + ${GPU_BENCH_DEADLINE_S:-520}))
# Seconds a step may take: its own maximum, or what is left before the deadline less the report's
# reserve, whichever is smaller (at least 1).
limit() { local l=$((deadline - $(date +%s) - 20)); [ "$l" -gt "$1" ] && l=$1; [ "$l" -lt 1 ] && l=1; echo "$l"; }
say() { echo "== [$(($(date +%s) - t0)) s] $*"; }
bench=(python3 "$root/tools/bench/gpu_bench.py")

# 1. The package, in the background: the longest step, and it needs only one CPU core.
pkg_pid=
if [ -f "$package/config.json" ]; then
  say "package: $package already there"
  echo '{"reused": true}' >"$work/package.json"
else
  say "package: writing $package ($preset, bf16) in the background"
  rm -rf "$package"
  (
    s=$(date +%s)
    timeout 400 python3 "$root/tools/make_random_package.py" --preset "$preset" ${sets[@]+"${sets[@]}"} \
      --dtype bf16 --out "$package" >"$out/package.log" 2>&1
    rc=$?
    echo "{\"status\": $rc, \"seconds\": $(($(date +%s) - s)), \"preset\": \"$preset\"}" >"$work/package.json"
  ) &
  pkg_pid=$!
fi

# 2. Build: the program alone (scripts/device_engine.sh, as scripts/cuda_engine_check.sh).
say "build"
cli="$build/bin/mlmamba-cli"
# shellcheck source=scripts/device_engine.sh
. "$root/scripts/device_engine.sh"
if device_engine_unpack; then
  device_engine_build "$(limit 60)" "$(limit 200)" mlmamba-cli >"$out/build.log" 2>&1
  rc=$?
else
  echo "could not unpack $root/.devdeps/engine-deps.tar.xz (carry .devdeps)" >"$out/build.log"
  rc=2
fi
say "build: status $rc"
[ $rc = 0 ] || grep -E "error|Error|FAILED" "$out/build.log" | head -20

# 3. Floors, then the baseline, while the package is being written.
say "floors"
timeout "$(limit 60)" "${bench[@]}" floors --out "$out" 2>&1 | tail -3
if [ $skip_baseline = 0 ]; then
  l=$(limit 200)
  say "baseline (limit $l s)"
  # The part's own budget ends before its time limit, so it saves what it measured.
  timeout "$l" "${bench[@]}" baseline --preset "$preset" ${sets[@]+"${sets[@]}"} --out "$out" \
    --budget-s $((l > 30 ? l - 25 : 5)) 2>&1 | tail -3
fi

# 4. The engine, once the package is complete.
if [ -n "$pkg_pid" ]; then
  say "waiting for the package"
  while kill -0 "$pkg_pid" 2>/dev/null && [ "$(date +%s)" -lt $((deadline - 60)) ]; do sleep 2; done
  kill -0 "$pkg_pid" 2>/dev/null && kill "$pkg_pid"
  wait "$pkg_pid" 2>/dev/null
  tail -2 "$out/package.log"
fi
if [ ! -f "$package/config.json" ]; then
  say "package not complete: the engine is not measured (package.log; a smaller --preset or --set fits)"
elif [ ! -x "$cli" ]; then
  say "mlmamba-cli was not built: the engine is not measured (build.log)"
else
  l=$(limit 300)
  say "engine (limit $l s)"
  timeout "$l" "${bench[@]}" ours --cli "$cli" --package "$package" --out "$out" --work "$work" \
    --budget-s $((l > 30 ? l - 10 : 5)) 2>&1 | tail -3
fi

# 5. The report, whatever ran.
say "report"
timeout 30 "${bench[@]}" report --preset "$preset" ${sets[@]+"${sets[@]}"} --package "$package" --out "$out" --work "$work"
rc=$?
say "done"
exit $rc
