#include "embedding.cuh"

namespace mlmamba::cuda {
namespace {

__global__ void embedding_gather_kernel(EmbeddingGather p) {
  const int t = blockIdx.x;
  const bf16* row = p.table + static_cast<size_t>(p.ids[t]) * p.d_model;
  float* o = p.out + static_cast<size_t>(t) * p.d_model;
  for (int i = threadIdx.x; i < p.d_model; i += blockDim.x) o[i] = __bfloat162float(row[i]);
}

}  // namespace

Status embedding_gather(const EmbeddingGather& p, cudaStream_t stream) {
  if (p.T <= 0) return {};
  embedding_gather_kernel<<<p.T, 256, 0, stream>>>(p);
  MLM_LAUNCH_CHECK("embedding_gather_kernel");
  return {};
}

}  // namespace mlmamba::cuda
