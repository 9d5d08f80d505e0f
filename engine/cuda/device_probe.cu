// Device discovery for the CUDA backend module. Every CUDA call is checked and turned into a
// message; nothing here aborts the process.
#include <cuda_runtime.h>

#include <cstdio>

#include "device_probe.cuh"

namespace mlmamba::cuda {
namespace {

void set_error(char* err, size_t len, const char* what, cudaError_t e) {
  if (err && len)
    std::snprintf(err, len, "%s: %s (CUDA error %d)", what, cudaGetErrorString(e),
                  static_cast<int>(e));
}

}  // namespace

int probe(mlmamba_device_info* out, int max, char* err, size_t err_len) {
  // Left untouched by the runtime when no driver answers: initialise it.
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    set_error(err, err_len, "no usable CUDA device", e);
    cudaGetLastError();  // clear the sticky error so later calls report their own
    return -1;
  }
  for (int i = 0; i < count && i < max; ++i) {
    cudaDeviceProp prop{};
    e = cudaGetDeviceProperties(&prop, i);
    if (e != cudaSuccess) {
      set_error(err, err_len, "cannot read the device's properties", e);
      return -1;
    }
    mlmamba_device_info& d = out[i];
    d.index = i;
    std::snprintf(d.name, sizeof d.name, "%s", prop.name);
    d.compute_major = prop.major;
    d.compute_minor = prop.minor;
    d.total_memory = prop.totalGlobalMem;
    d.free_memory = 0;
    if (cudaSetDevice(i) == cudaSuccess) {
      size_t free_b = 0, total_b = 0;
      if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) d.free_memory = free_b;
    }
  }
  return count;
}

}  // namespace mlmamba::cuda
