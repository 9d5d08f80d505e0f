// What every kernel file of the CUDA backend shares: status values instead of aborts, checked
// launches, carving one device allocation, bf16 conversions and warp / block reductions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "backend_module.h"

namespace mlmamba::cuda {

using bf16 = __nv_bfloat16;

struct Status {
  int code = MLMAMBA_OK;
  std::string message;
  bool ok() const { return code == MLMAMBA_OK; }
};

inline Status ok_status() {
  return {};
}
inline Status fail(int code, std::string message) {
  return Status{code, std::move(message)};
}

// A failed allocation is not sticky: the runtime stays usable, so it is reported as its own code.
inline Status cuda_status(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return {};
  const int code = e == cudaErrorMemoryAllocation ? MLMAMBA_ERR_OUT_OF_MEMORY : MLMAMBA_ERR_DEVICE;
  return fail(code, std::string(what) + ": " + cudaGetErrorString(e) + " (CUDA error " +
                        std::to_string(static_cast<int>(e)) + ")");
}

#define MLM_CUDA_TRY(call)                                                         \
  do {                                                                             \
    const cudaError_t mlm_e_ = (call);                                             \
    if (mlm_e_ != cudaSuccess) return ::mlmamba::cuda::cuda_status(mlm_e_, #call); \
  } while (0)

// After a kernel launch: a bad configuration shows here, a fault at the next synchronisation.
#define MLM_LAUNCH_CHECK(name)                                                                 \
  do {                                                                                         \
    const cudaError_t mlm_e_ = cudaGetLastError();                                             \
    if (mlm_e_ != cudaSuccess) return ::mlmamba::cuda::cuda_status(mlm_e_, "launch of " name); \
  } while (0)

#define MLM_STATUS_TRY(expr)                 \
  do {                                       \
    ::mlmamba::cuda::Status mlm_s_ = (expr); \
    if (!mlm_s_.ok()) return mlm_s_;         \
  } while (0)

// Sizes in messages about memory.
inline std::string mib(size_t bytes) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return b;
}

// Hands out 256-byte aligned pieces of one allocation. Run once without a base to size the pool.
class Carver {
 public:
  explicit Carver(void* base) : base_(reinterpret_cast<uintptr_t>(base)) {}
  template <class T>
  T* take(size_t count) {
    off_ = (off_ + 255) & ~size_t{255};
    T* p = reinterpret_cast<T*>(base_ + off_);
    off_ += count * sizeof(T);
    return p;
  }
  size_t used() const { return off_; }

 private:
  uintptr_t base_;
  size_t off_ = 0;
};

inline int ceil_div(int64_t a, int64_t b) {
  return static_cast<int>((a + b - 1) / b);
}

__device__ __forceinline__ float silu(float x) {
  return x / (1.0f + expf(-x));
}

// PyTorch's threshold: above 20 softplus(x) equals x in fp32.
__device__ __forceinline__ float softplus(float x) {
  return x > 20.0f ? x : log1pf(expf(x));
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float partial[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // `partial` may still be read by a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) >> 5;
  float t = lane < warps ? partial[lane] : 0.0f;
  return warp_sum(t);
}

}  // namespace mlmamba::cuda
