// The residual stream's step between layers, fused: residual += hidden, then
// RMSNorm(residual) * weight rounded to bf16 (the next matrix product's input). Also the final
// norm_f before the head.
#pragma once

#include "common.cuh"

namespace mlmamba::cuda {

struct AddRmsNorm {
  float* residual;      // [T, d] fp32, updated in place
  const float* hidden;  // [T, d] or null (the first layer has nothing to add)
  const float* weight;  // [d]
  int T;
  int d;
  float eps;
  bf16* out;  // [T, d]
};
Status add_rmsnorm(const AddRmsNorm& p, cudaStream_t stream);

}  // namespace mlmamba::cuda
