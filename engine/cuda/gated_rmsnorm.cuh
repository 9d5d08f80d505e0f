// Gated RMSNorm, gate before the norm (docs/MODEL.md §3.4): g = y * silu(z), normalised over
// groups of `group_size` channels (the whole d_inner, or d_inner / ngroups for mamba_ssm
// checkpoints), times norm.weight, rounded to bf16 as out_proj's input.
#pragma once

#include "common.cuh"

namespace mlmamba::cuda {

struct GatedRmsNorm {
  const float* y;  // [T, d_inner]
  const float* z;  // [T, d_inner] with row stride z_stride (a view into in_proj's output)
  int z_stride;
  const float* weight;  // [d_inner]
  int T;
  int d_inner;
  int group_size;
  float eps;
  bf16* out;  // [T, d_inner]
};
Status gated_rmsnorm(const GatedRmsNorm& p, cudaStream_t stream);

}  // namespace mlmamba::cuda
