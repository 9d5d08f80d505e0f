// The matrix products of the language model through cuBLASLt: in_proj, out_proj and the tied
// head, Y[T, n] = X[T, k] . W[n, k]^T with bf16 operands and fp32 accumulation and output.
#pragma once

#include <cublasLt.h>

#include <vector>

#include "common.cuh"

namespace mlmamba::cuda {

class Gemm {
 public:
  Gemm() = default;
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;
  ~Gemm();

  // `workspace` lives on the device for as long as this object (taken from the model's pool).
  Status init(void* workspace, size_t workspace_bytes);
  // Makes the plan of a shape ahead of use (host work kept out of graph capture).
  Status prepare(int T, int n, int k) {
    const Plan* p = nullptr;
    return plan_for(T, n, k, &p);
  }
  Status linear(const bf16* x, const bf16* w, int T, int n, int k, float* y, cudaStream_t stream);

 private:
  struct Plan {
    int T, n, k;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
  };
  Status plan_for(int T, int n, int k, const Plan** out);

  cublasLtHandle_t handle_ = nullptr;
  cublasLtMatmulDesc_t op_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::vector<Plan> plans_;  // a handful of shapes: prompt lengths and one row
};

// y[T, n] += bias[n].
Status add_bias(float* y, const float* bias, int T, int n, cudaStream_t stream);

}  // namespace mlmamba::cuda
