#include "conv1d.cuh"

namespace mlmamba::cuda {
namespace {

__device__ __forceinline__ float conv_input(const Conv1d& p, int j, int c) {
  const int H = p.d_conv - 1;
  return j >= 0 ? p.xbc[static_cast<size_t>(j) * p.stride + c]
                : p.conv_state[static_cast<size_t>(H + j) * p.conv_dim + c];
}

__global__ void conv1d_silu_kernel(Conv1d p) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  const int t = blockIdx.y;
  if (c >= p.conv_dim) return;
  const int H = p.d_conv - 1;
  const float* w = p.weight + static_cast<size_t>(c) * p.d_conv;
  float acc = p.bias ? p.bias[c] : 0.0f;
  for (int k = 0; k < p.d_conv; ++k) acc += w[k] * conv_input(p, t - H + k, c);
  p.out[static_cast<size_t>(t) * p.conv_dim + c] = silu(acc);
}

// Runs after conv1d_silu_kernel (same stream). One thread owns a channel and rewrites its rows in
// ascending order: row r reads old row r+T (> r), which no earlier step has overwritten.
__global__ void conv_state_advance_kernel(Conv1d p) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= p.conv_dim) return;
  const int H = p.d_conv - 1;
  for (int r = 0; r < H; ++r) {
    const float v = conv_input(p, p.T - H + r, c);
    p.conv_state[static_cast<size_t>(r) * p.conv_dim + c] = v;
  }
}

__global__ void conv1d_silu_step_kernel(Conv1d p) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= p.conv_dim) return;
  const int H = p.d_conv - 1;
  const float* w = p.weight + static_cast<size_t>(c) * p.d_conv;
  const float x = p.xbc[c];
  float acc = p.bias ? p.bias[c] : 0.0f;
  for (int k = 0; k < H; ++k) acc += w[k] * p.conv_state[static_cast<size_t>(k) * p.conv_dim + c];
  acc += w[H] * x;
  for (int k = 0; k + 1 < H; ++k)
    p.conv_state[static_cast<size_t>(k) * p.conv_dim + c] =
        p.conv_state[static_cast<size_t>(k + 1) * p.conv_dim + c];
  if (H > 0) p.conv_state[static_cast<size_t>(H - 1) * p.conv_dim + c] = x;
  p.out[c] = silu(acc);
}

}  // namespace

Status conv1d_silu(const Conv1d& p, cudaStream_t stream) {
  if (p.T <= 0) return {};
  const int threads = 256;
  conv1d_silu_kernel<<<dim3(ceil_div(p.conv_dim, threads), p.T), threads, 0, stream>>>(p);
  MLM_LAUNCH_CHECK("conv1d_silu_kernel");
  if (p.d_conv > 1) {
    conv_state_advance_kernel<<<ceil_div(p.conv_dim, threads), threads, 0, stream>>>(p);
    MLM_LAUNCH_CHECK("conv_state_advance_kernel");
  }
  return {};
}

Status conv1d_silu_step(const Conv1d& p, cudaStream_t stream) {
  const int threads = 256;
  conv1d_silu_step_kernel<<<ceil_div(p.conv_dim, threads), threads, 0, stream>>>(p);
  MLM_LAUNCH_CHECK("conv1d_silu_step_kernel");
  return {};
}

}  // namespace mlmamba::cuda
