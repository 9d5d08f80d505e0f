#include "gemm.cuh"

namespace mlmamba::cuda {
namespace {

Status lt_status(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return {};
  const int code = s == CUBLAS_STATUS_ALLOC_FAILED    ? MLMAMBA_ERR_OUT_OF_MEMORY
                   : s == CUBLAS_STATUS_NOT_SUPPORTED ? MLMAMBA_ERR_UNSUPPORTED
                                                      : MLMAMBA_ERR_DEVICE;
  return fail(code, std::string("cuBLASLt ") + what + ": " + cublasLtGetStatusName(s) + " (" +
                        cublasLtGetStatusString(s) + ")");
}

#define MLM_LT_TRY(call, what) MLM_STATUS_TRY(lt_status((call), what))

__global__ void add_bias_kernel(float* y, const float* bias, int T, int n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < static_cast<int64_t>(T) * n) y[i] += bias[i % n];
}

}  // namespace

Gemm::~Gemm() {
  for (Plan& p : plans_) {
    cublasLtMatrixLayoutDestroy(p.a);
    cublasLtMatrixLayoutDestroy(p.b);
    cublasLtMatrixLayoutDestroy(p.c);
  }
  if (op_) cublasLtMatmulDescDestroy(op_);
  if (handle_) cublasLtDestroy(handle_);
}

Status Gemm::init(void* workspace, size_t workspace_bytes) {
  workspace_ = workspace;
  workspace_bytes_ = workspace_bytes;
  MLM_LT_TRY(cublasLtCreate(&handle_), "handle");
  MLM_LT_TRY(cublasLtMatmulDescCreate(&op_, CUBLAS_COMPUTE_32F, CUDA_R_32F), "matmul descriptor");
  // Column-major view of the row-major product: Y^T [n, T] = W [n, k] . X^T [k, T], where the
  // row-major W [n, k] is a column-major [k, n] matrix used transposed.
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  MLM_LT_TRY(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta),
             "transa");
  MLM_LT_TRY(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb),
             "transb");
  return {};
}

Status Gemm::plan_for(int T, int n, int k, const Plan** out) {
  for (const Plan& p : plans_) {
    if (p.T == T && p.n == n && p.k == k) {
      *out = &p;
      return {};
    }
  }
  Plan p{T, n, k, nullptr, nullptr, nullptr, {}};
  auto release = [&p] {
    if (p.a) cublasLtMatrixLayoutDestroy(p.a);
    if (p.b) cublasLtMatrixLayoutDestroy(p.b);
    if (p.c) cublasLtMatrixLayoutDestroy(p.c);
  };
  Status s = lt_status(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, k, n, k), "layout of W");
  if (s.ok()) s = lt_status(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, k, T, k), "layout of X");
  if (s.ok()) s = lt_status(cublasLtMatrixLayoutCreate(&p.c, CUDA_R_32F, n, T, n), "layout of Y");
  cublasLtMatmulPreference_t pref = nullptr;
  if (s.ok()) s = lt_status(cublasLtMatmulPreferenceCreate(&pref), "preference");
  if (s.ok()) {
    s = lt_status(
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                             &workspace_bytes_, sizeof workspace_bytes_),
        "workspace preference");
  }
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  if (s.ok()) {
    s = lt_status(
        cublasLtMatmulAlgoGetHeuristic(handle_, op_, p.a, p.b, p.c, p.c, pref, 1, &result, &found),
        "algorithm search");
  }
  if (pref) cublasLtMatmulPreferenceDestroy(pref);
  if (s.ok() && found == 0) {
    s = fail(MLMAMBA_ERR_UNSUPPORTED, "cuBLASLt has no bf16 algorithm for a [" + std::to_string(T) +
                                          " x " + std::to_string(k) + "] . [" + std::to_string(k) +
                                          " x " + std::to_string(n) + "] product");
  }
  if (!s.ok()) {
    release();
    return s;
  }
  p.algo = result.algo;
  plans_.push_back(p);
  *out = &plans_.back();
  return {};
}

Status Gemm::linear(const bf16* x, const bf16* w, int T, int n, int k, float* y,
                    cudaStream_t stream) {
  if (T <= 0) return {};
  const Plan* p = nullptr;
  MLM_STATUS_TRY(plan_for(T, n, k, &p));
  const float alpha = 1.0f, beta = 0.0f;
  MLM_LT_TRY(cublasLtMatmul(handle_, op_, &alpha, w, p->a, x, p->b, &beta, y, p->c, y, p->c,
                            &p->algo, workspace_, workspace_bytes_, stream),
             "matmul");
  return {};
}

Status add_bias(float* y, const float* bias, int T, int n, cudaStream_t stream) {
  if (!bias || T <= 0) return {};
  const int64_t total = static_cast<int64_t>(T) * n;
  add_bias_kernel<<<ceil_div(total, 256), 256, 0, stream>>>(y, bias, T, n);
  MLM_LAUNCH_CHECK("add_bias_kernel");
  return {};
}

}  // namespace mlmamba::cuda
