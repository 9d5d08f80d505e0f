#include "cpu_ops.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <thread>

namespace mlmamba::cpu {
namespace {
int g_threads = 0;
}

void set_threads(int n) {
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  g_threads = n;
  omp_set_num_threads(n);
  // One thread pool, not two: OpenMP's threads spin-wait between regions, and a second pool inside
  // OpenBLAS then fights them for the cores (measured: decode 3-6x slower, most time in the
  // kernel). So BLAS runs single-threaded and linear() splits its work over OpenMP threads itself.
  openblas_set_num_threads(1);
}

int threads() {
  if (g_threads == 0) set_threads(0);
  return g_threads;
}

void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void linear(const float* x, int rows, int in, const float* weight, const float* bias, int out,
            float* y) {
  // Each thread owns a slice of the output features: its rows of W are read by it alone, which
  // splits the weight traffic (the whole cost of one token) evenly across cores.
  const int nt = std::max(1, std::min(threads(), out / 64));
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), n = omp_get_num_threads();
    const int per = (out + n - 1) / n;
    const int o0 = std::min(out, t * per), o1 = std::min(out, o0 + per);
    if (o1 > o0) {
      const float* w = weight + static_cast<size_t>(o0) * in;
      if (rows == 1) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, o1 - o0, in, 1.0f, w, in, x, 1, 0.0f, y + o0, 1);
      } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, o1 - o0, in, 1.0f, x, in, w, in,
                    0.0f, y + o0, out);
      }
    }
  }
  if (bias) {
    for (int r = 0; r < rows; ++r) {
      float* yr = y + static_cast<size_t>(r) * out;
      for (int j = 0; j < out; ++j) yr[j] += bias[j];
    }
  }
}

void rmsnorm(const float* x, const float* weight, int n, float eps, float* y) {
  // Accumulate in double: the sum of squares of thousands of values loses digits in fp32 and the
  // reference it is compared with computes in higher precision.
  double ss = 0;
  for (int i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float inv = static_cast<float>(1.0 / std::sqrt(ss / n + eps));
  for (int i = 0; i < n; ++i) y[i] = x[i] * inv * weight[i];
}

void layernorm(const float* x, const float* weight, const float* bias, int n, float eps, float* y) {
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += x[i];
  const double mean = sum / n;
  double var = 0;
  for (int i = 0; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
  const float inv = static_cast<float>(1.0 / std::sqrt(var / n + eps));
  const float m = static_cast<float>(mean);
  for (int i = 0; i < n; ++i) y[i] = (x[i] - m) * inv * weight[i] + (bias ? bias[i] : 0.0f);
}

void gelu(float* x, size_t n) {
  constexpr float kInvSqrt2 = 0.70710678118654752f;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (size_t i = 0; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * kInvSqrt2));
}

}  // namespace mlmamba::cpu
