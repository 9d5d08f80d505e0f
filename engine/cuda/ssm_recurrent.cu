// The per-token recurrence. A warp owns one row p of one head's state and keeps its d_state values
// in registers for the whole sequence; lanes split d_state and a warp sum gives y.
#include "ssm_scan.cuh"

namespace mlmamba::cuda {
namespace {

constexpr int kWarps = 4;

__global__ void ssm_recurrent_kernel(SsmScan p) {
  const int h = blockIdx.x;
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.y * kWarps + (threadIdx.x >> 5);
  if (row >= p.headdim) return;
  const int P = p.headdim, N = p.d_state, H = p.nheads;
  const int g = h / (H / p.ngroups);
  const int d_inner = H * P;
  const int conv_dim = d_inner + 2 * p.ngroups * N;
  const float A = -expf(p.A_log[h]);
  const float Dh = p.D[h];
  const float bias = p.dt_bias[h];
  float* state = p.ssm_state + (static_cast<size_t>(h) * P + row) * N;
  float S[kMaxStatePerLane];
#pragma unroll
  for (int k = 0; k < kMaxStatePerLane; ++k) {
    const int n = lane + 32 * k;
    S[k] = n < N ? state[n] : 0.0f;
  }
  for (int t = 0; t < p.T; ++t) {
    const float* xt = p.xbc + static_cast<size_t>(t) * conv_dim;
    const float* Bt = xt + d_inner + g * N;
    const float* Ct = xt + d_inner + p.ngroups * N + g * N;
    const float dt = softplus(p.dt_raw[static_cast<size_t>(t) * p.dt_stride + h] + bias);
    const float decay = expf(dt * A);
    const float x = xt[h * P + row];
    const float dx = dt * x;
    float acc = 0.0f;
#pragma unroll
    for (int k = 0; k < kMaxStatePerLane; ++k) {
      const int n = lane + 32 * k;
      if (n < N) {
        S[k] = decay * S[k] + dx * Bt[n];
        acc += S[k] * Ct[n];
      }
    }
    acc = warp_sum(acc);
    if (lane == 0) p.y[static_cast<size_t>(t) * d_inner + h * P + row] = acc + Dh * x;
  }
#pragma unroll
  for (int k = 0; k < kMaxStatePerLane; ++k) {
    const int n = lane + 32 * k;
    if (n < N) state[n] = S[k];
  }
}

}  // namespace

Status ssm_recurrent(const SsmScan& p, cudaStream_t stream) {
  if (p.T <= 0) return {};
  ssm_recurrent_kernel<<<dim3(p.nheads, ceil_div(p.headdim, kWarps)), 32 * kWarps, 0, stream>>>(p);
  MLM_LAUNCH_CHECK("ssm_recurrent_kernel");
  return {};
}

}  // namespace mlmamba::cuda
