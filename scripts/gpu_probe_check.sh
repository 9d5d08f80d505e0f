#!/usr/bin/env bash
# On a GPU machine without the project's build dependencies: builds the CUDA backend module alone
# with nvcc and loads it the way the engine does (dlopen, entry point, API version, probe).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out="${OUT:-/tmp/gpu-probe}"
mkdir -p "$out"
nvcc -std=c++17 -shared -Xcompiler -fPIC -I "$root/engine/src" -gencode arch=compute_90,code=sm_90 \
  "$root"/engine/cuda/*.cu -o "$out/libmlmamba-cuda.so" -lcublasLt
cat > "$out/load.cpp" <<'CPP'
#include <dlfcn.h>
#include <cstdio>
#include "backend_module.h"
int main(int argc, char** argv) {
  void* h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!h) { std::printf("dlopen failed: %s\n", dlerror()); return 1; }
  auto entry = reinterpret_cast<mlmamba_backend_entry_fn>(dlsym(h, MLMAMBA_BACKEND_ENTRY));
  const mlmamba_backend_header* hd = entry ? entry() : nullptr;
  if (!hd || hd->api_version != MLMAMBA_BACKEND_API_VERSION) { std::printf("bad entry or version\n"); return 1; }
  const mlmamba_backend* t = reinterpret_cast<const mlmamba_backend*>(hd);
  mlmamba_device_info d[16] = {};
  char err[512] = {0};
  const int n = t->probe(d, 16, err, sizeof err);
  if (n <= 0) { std::printf("no device: %s\n", err); return 1; }
  for (int i = 0; i < n && i < 16; ++i)
    std::printf("device %d: %s, compute %d.%d, %.1f GiB total, %.1f GiB free\n", d[i].index, d[i].name,
                d[i].compute_major, d[i].compute_minor, d[i].total_memory / 1073741824.0,
                d[i].free_memory / 1073741824.0);
  return 0;
}
CPP
g++ -std=c++17 -I "$root/engine/src" "$out/load.cpp" -o "$out/load" -ldl
"$out/load" "$out/libmlmamba-cuda.so"
