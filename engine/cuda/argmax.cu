#include "argmax.cuh"

namespace mlmamba::cuda {
namespace {

constexpr int kThreads = 1024;

__device__ __forceinline__ bool better(float v, int i, float bv, int bi) {
  const bool vn = isnan(v), bn = isnan(bv);
  if (vn || bn) return vn && (!bn || i < bi);
  return v > bv || (v == bv && i < bi);
}

// One block: a 50k vocabulary is 200 KB, read once; a second pass over blocks would cost more in
// launch latency than it saves.
__global__ void argmax_kernel(Argmax p) {
  float best = -INFINITY;
  int best_i = 0x7fffffff;
  for (int i = threadIdx.x; i < p.n; i += blockDim.x) {
    const float v = p.logits[i];
    if (better(v, i, best, best_i)) {
      best = v;
      best_i = i;
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float v = __shfl_xor_sync(0xffffffffu, best, o);
    const int i = __shfl_xor_sync(0xffffffffu, best_i, o);
    if (better(v, i, best, best_i)) {
      best = v;
      best_i = i;
    }
  }
  __shared__ float sv[kThreads / 32];
  __shared__ int si[kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    sv[warp] = best;
    si[warp] = best_i;
  }
  __syncthreads();
  if (warp == 0) {
    const int warps = blockDim.x >> 5;
    best = lane < warps ? sv[lane] : -INFINITY;
    best_i = lane < warps ? si[lane] : 0x7fffffff;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float v = __shfl_xor_sync(0xffffffffu, best, o);
      const int i = __shfl_xor_sync(0xffffffffu, best_i, o);
      if (better(v, i, best, best_i)) {
        best = v;
        best_i = i;
      }
    }
    if (lane == 0) *p.out = best_i;
  }
}

}  // namespace

Status argmax(const Argmax& p, cudaStream_t stream) {
  argmax_kernel<<<1, kThreads, 0, stream>>>(p);
  MLM_LAUNCH_CHECK("argmax_kernel");
  return {};
}

}  // namespace mlmamba::cuda
