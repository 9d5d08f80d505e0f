// CPU building blocks in fp32. Matrix products go to OpenBLAS; element-wise loops are plain C++
// that the compiler vectorises, spread over OpenMP threads where the work is large enough.
#pragma once

#include <cmath>
#include <cstddef>

namespace mlmamba::cpu {

void set_threads(int threads);  // 0: one per hardware core
int threads();

// y[rows, out] = x[rows, in] . W[out, in]^T (+ bias). W is a PyTorch Linear weight.
void linear(const float* x, int rows, int in, const float* weight, const float* bias, int out,
            float* y);

// y = x / sqrt(mean(x^2) + eps) * weight, over `n` values.
void rmsnorm(const float* x, const float* weight, int n, float eps, float* y);

// C[m,n] (+)= alpha * op(A) . op(B), row-major, with leading dimensions (BLAS sgemm).
void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc);

// y = (x - mean) / sqrt(var + eps) * weight + bias over `n` values (biased variance, as PyTorch).
void layernorm(const float* x, const float* weight, const float* bias, int n, float eps, float* y);

// Exact GELU, 0.5 x (1 + erf(x / sqrt 2)), in place over n values (PyTorch's nn.GELU default).
void gelu(float* x, size_t n);

inline float silu(float x) {
  return x / (1.0f + std::exp(-x));
}
// Same threshold as PyTorch's softplus: above 20 the result equals x in fp32.
inline float softplus(float x) {
  return x > 20.0f ? x : std::log1p(std::exp(x));
}

}  // namespace mlmamba::cpu
