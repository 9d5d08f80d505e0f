# shellcheck shell=bash disable=SC2154
# Sourced by the scripts that build the engine on the GPU machine (cuda_engine_check.sh,
# gpu_bench.sh): that machine lacks the engine's development packages, so they come from the pack
# scripts/make_device_deps.sh makes here (.devdeps/engine-deps.tar.xz, carried along), and the
# engine is built without Qt or OpenCV by tools/cuda/engine-tests. Expects `root`, `deps` and
# `build` to be set.

# Unpacks the pack into $deps and puts its libraries on the search path.
device_engine_unpack() {
  tar -C "$deps" -xJf "$root/.devdeps/engine-deps.tar.xz" || return
  local lib="$deps/usr/lib/x86_64-linux-gnu"
  export LD_LIBRARY_PATH="$lib:$lib/openblas-pthread:${LD_LIBRARY_PATH:-}"
}

# device_engine_build CONFIGURE_SECONDS BUILD_SECONDS TARGET...: configures (sm_90, Release) and
# builds the targets in $build, each step within its time limit.
device_engine_build() {
  local configure_s=$1 build_s=$2
  shift 2
  timeout "$configure_s" cmake -S "$root/tools/cuda/engine-tests" -B "$build" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_PREFIX_PATH="$deps/usr" \
    -DICU_ROOT="$deps/usr" -DCBLAS_INCLUDE_DIR="$deps/usr/include/x86_64-linux-gnu/openblas-pthread" &&
    timeout "$build_s" cmake --build "$build" -j "$(nproc)" --target "$@"
}
