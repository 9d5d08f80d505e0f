// The BLAS-backed and vectorised primitives against plain double loops on fresh random inputs.
#include "cpu_ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

namespace mlmamba {
namespace {

std::vector<float> randn(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0, 1);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

TEST(CpuOps, LinearMatchesDoubleLoopsForMatrixAndVector) {
  for (int rows : {1, 3, 37}) {
    const int in = 65, out = 33;
    const auto x = randn(static_cast<size_t>(rows) * in, rows);
    const auto w = randn(static_cast<size_t>(out) * in, 100 + rows);
    const auto b = randn(out, 200 + rows);
    std::vector<float> y(static_cast<size_t>(rows) * out, NAN);
    cpu::linear(x.data(), rows, in, w.data(), b.data(), out, y.data());
    for (int r = 0; r < rows; ++r)
      for (int o = 0; o < out; ++o) {
        double s = b[o];
        for (int i = 0; i < in; ++i) s += double(x[r * in + i]) * w[o * in + i];
        ASSERT_NEAR(y[r * out + o], s, 1e-4 * (1 + std::fabs(s))) << r << "," << o;
      }
  }
}

TEST(CpuOps, RmsNormMatchesDefinition) {
  const int n = 777;
  const auto x = randn(n, 1), w = randn(n, 2);
  std::vector<float> y(n, NAN);
  cpu::rmsnorm(x.data(), w.data(), n, 1e-5f, y.data());
  double ss = 0;
  for (float v : x) ss += double(v) * v;
  const double inv = 1 / std::sqrt(ss / n + 1e-5);
  for (int i = 0; i < n; ++i)
    ASSERT_NEAR(y[i], x[i] * inv * w[i], 1e-6 * (1 + std::fabs(x[i] * inv * w[i])));
  // In place, as the gated norm uses it.
  std::vector<float> z = x;
  cpu::rmsnorm(z.data(), w.data(), n, 1e-5f, z.data());
  for (int i = 0; i < n; ++i) ASSERT_FLOAT_EQ(z[i], y[i]);
}

TEST(CpuOps, SoftplusAndSiluMatchPyTorchDefinitions) {
  for (double v : {-30.0, -5.0, -0.1, 0.0, 0.3, 5.0, 19.9, 20.1, 50.0}) {
    const double sp = v > 20 ? v : std::log1p(std::exp(v));
    EXPECT_NEAR(cpu::softplus(static_cast<float>(v)), sp, 1e-6 * (1 + std::fabs(sp))) << v;
    const double si = v / (1 + std::exp(-v));
    EXPECT_NEAR(cpu::silu(static_cast<float>(v)), si, 1e-6 * (1 + std::fabs(si))) << v;
  }
}

TEST(CpuOps, GemmHonoursTransposesAndLeadingDimensions) {
  const int m = 5, n = 7, k = 9, lda = 12, ldb = 11, ldc = 10;
  const auto a = randn(static_cast<size_t>(k) * lda, 3);  // A^T stored: [k, lda]
  const auto b = randn(static_cast<size_t>(n) * ldb, 4);  // B^T stored: [n, ldb]
  std::vector<float> c(static_cast<size_t>(m) * ldc, 1.0f);
  cpu::gemm(true, true, m, n, k, 2.0f, a.data(), lda, b.data(), ldb, 1.0f, c.data(), ldc);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      double s = 0;
      for (int p = 0; p < k; ++p) s += double(a[p * lda + i]) * b[j * ldb + p];
      ASSERT_NEAR(c[i * ldc + j], 1.0 + 2.0 * s, 1e-4);
    }
}

}  // namespace
}  // namespace mlmamba
