// The chunked SSD form of the scan, a straightforward version on the CUDA cores (the matrix units
// come later): with a = dt*A and cs its running sum inside a chunk of Q tokens,
//   intra-chunk:  y_l  = sum_{s<=l} (C_l . B_s) exp(cs_l - cs_s) dt_s x_s
//   chunk state:  S_c  = sum_s exp(cs_end - cs_s) dt_s x_s (outer) B_s
//   passing:      S_in[c+1] = exp(cs_end[c]) S_in[c] + S_c    (S_in[0]: the conversation's state)
//   carried in:   y_l += exp(cs_l) C_l . S_in[c]
// Decays are always exp of a difference of running sums, never a ratio of exps: cs spans hundreds
// inside a chunk and exp(-cs) alone would overflow.
#include <algorithm>

#include "ssm_scan.cuh"

namespace mlmamba::cuda {
namespace {

struct Layout {
  int P, N, H, G, Q, d_inner, conv_dim, chunks;
  __host__ __device__ explicit Layout(const SsmScan& p)
      : P(p.headdim),
        N(p.d_state),
        H(p.nheads),
        G(p.ngroups),
        Q(p.chunk_size),
        d_inner(p.nheads * p.headdim),
        conv_dim(p.nheads * p.headdim + 2 * p.ngroups * p.d_state),
        chunks((p.T + p.chunk_size - 1) / p.chunk_size) {}
  __device__ int chunk_len(int c, int T) const { return min(Q, T - c * Q); }
  __device__ const float* B(const float* xbc, int t, int g) const {
    return xbc + static_cast<size_t>(t) * conv_dim + d_inner + g * N;
  }
  __device__ const float* C(const float* xbc, int t, int g) const {
    return xbc + static_cast<size_t>(t) * conv_dim + d_inner + G * N + g * N;
  }
  __device__ float x(const float* xbc, int t, int h, int p) const {
    return xbc[static_cast<size_t>(t) * conv_dim + h * P + p];
  }
};

// dt after softplus, and its running sum times A inside each chunk. One thread per (chunk, head).
__global__ void ssd_dt_cumsum_kernel(SsmScan p) {
  const Layout s(p);
  const int c = blockIdx.x;
  const int L = s.chunk_len(c, p.T);
  for (int h = threadIdx.x; h < s.H; h += blockDim.x) {
    const float A = -expf(p.A_log[h]);
    const float bias = p.dt_bias[h];
    float run = 0.0f;
    for (int l = 0; l < L; ++l) {
      const int t = c * s.Q + l;
      const float d = softplus(p.dt_raw[static_cast<size_t>(t) * p.dt_stride + h] + bias);
      p.dt[static_cast<size_t>(t) * s.H + h] = d;
      run += d * A;
      p.cs[static_cast<size_t>(t) * s.H + h] = run;
    }
  }
}

// cb[c, g, l, s] = C_l . B_s for s <= l: 16x16 tiles over d_state; tiles wholly above the
// diagonal are skipped (never read).
constexpr int kTile = 16;
__global__ void ssd_cb_kernel(SsmScan p) {
  const Layout s(p);
  const int c = blockIdx.z / s.G, g = blockIdx.z % s.G;
  const int L = s.chunk_len(c, p.T);
  const int l0 = blockIdx.y * kTile, s0 = blockIdx.x * kTile;
  if (s0 > l0 + kTile - 1 || l0 >= L || s0 >= L) return;  // the same for the whole block
  __shared__ float Cs[kTile][kTile + 1];
  __shared__ float Bs[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  float acc = 0.0f;
  for (int n0 = 0; n0 < s.N; n0 += kTile) {
    const int n = n0 + tx;
    const int lr = l0 + ty, sr = s0 + ty;
    Cs[ty][tx] = (lr < L && n < s.N) ? s.C(p.xbc, c * s.Q + lr, g)[n] : 0.0f;
    Bs[ty][tx] = (sr < L && n < s.N) ? s.B(p.xbc, c * s.Q + sr, g)[n] : 0.0f;
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kTile; ++k) acc += Cs[ty][k] * Bs[tx][k];
    __syncthreads();
  }
  const int l = l0 + ty, sc = s0 + tx;
  if (l < L && sc <= l) p.cb[((static_cast<size_t>(c) * s.G + g) * s.Q + l) * s.Q + sc] = acc;
}

// chunk_states[c, h] = (w o X)^T B over the chunk's tokens, w_s = exp(cs_end - cs_s) dt_s.
// A block computes kOutPerThread * blockDim.x outputs of the [P, N] matrix; rows of X and B are
// staged in shared memory kRows at a time.
constexpr int kStateThreads = 256;
constexpr int kOutPerThread = 8;
constexpr int kRows = 16;
__global__ void ssd_chunk_state_kernel(SsmScan p) {
  const Layout s(p);
  const int c = blockIdx.x, h = blockIdx.y;
  const int g = h / (s.H / s.G);
  const int L = s.chunk_len(c, p.T);
  extern __shared__ float smem[];
  float* xs = smem;                // [kRows, P]
  float* bs = smem + kRows * s.P;  // [kRows, N]
  const float last = p.cs[static_cast<size_t>(c * s.Q + L - 1) * s.H + h];
  const int PN = s.P * s.N;
  const int base = blockIdx.z * kOutPerThread * kStateThreads + threadIdx.x;
  float acc[kOutPerThread];
#pragma unroll
  for (int j = 0; j < kOutPerThread; ++j) acc[j] = 0.0f;
  for (int r0 = 0; r0 < L; r0 += kRows) {
    const int rows = min(kRows, L - r0);
    for (int i = threadIdx.x; i < kRows * s.P; i += blockDim.x) {
      const int r = i / s.P, pp = i % s.P;
      float v = 0.0f;
      if (r < rows) {
        const int t = c * s.Q + r0 + r;
        const size_t th = static_cast<size_t>(t) * s.H + h;
        v = expf(last - p.cs[th]) * p.dt[th] * s.x(p.xbc, t, h, pp);
      }
      xs[i] = v;
    }
    for (int i = threadIdx.x; i < kRows * s.N; i += blockDim.x) {
      const int r = i / s.N, n = i % s.N;
      bs[i] = r < rows ? s.B(p.xbc, c * s.Q + r0 + r, g)[n] : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < kOutPerThread; ++j) {
      const int o = base + j * kStateThreads;
      if (o < PN) {
        const int pp = o / s.N, n = o % s.N;
        float a = acc[j];
        for (int r = 0; r < rows; ++r) a += xs[r * s.P + pp] * bs[r * s.N + n];
        acc[j] = a;
      }
    }
    __syncthreads();
  }
  float* out = p.chunk_states + (static_cast<size_t>(c) * s.H + h) * PN;
#pragma unroll
  for (int j = 0; j < kOutPerThread; ++j) {
    const int o = base + j * kStateThreads;
    if (o < PN) out[o] = acc[j];
  }
}

// The inter-chunk recurrence, one thread per state element; writes the state entering each chunk
// transposed ([N, P]) so that the output kernel reads it along headdim, and leaves the final
// state in ssm_state.
__global__ void ssd_state_passing_kernel(SsmScan p) {
  const Layout s(p);
  const int PN = s.P * s.N;
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= static_cast<int64_t>(s.H) * PN) return;
  const int h = static_cast<int>(e / PN), rem = static_cast<int>(e % PN);
  const int pp = rem / s.N, n = rem % s.N;
  float S = p.ssm_state[e];
  for (int c = 0; c < s.chunks; ++c) {
    const int L = s.chunk_len(c, p.T);
    const float decay = expf(p.cs[static_cast<size_t>(c * s.Q + L - 1) * s.H + h]);
    p.states_in[((static_cast<size_t>(c) * s.H + h) * s.N + n) * s.P + pp] = S;
    S = decay * S + p.chunk_states[(static_cast<size_t>(c) * s.H + h) * PN + rem];
  }
  p.ssm_state[e] = S;
}

// y for R rows of one chunk and head: thread (p, r). The block first builds the decay-weighted
// row of cb for its rows in shared memory, so the exps are computed once per (l, s), not per p.
__global__ void ssd_output_kernel(SsmScan p, int R) {
  const Layout s(p);
  const int c = blockIdx.x, h = blockIdx.y;
  const int g = h / (s.H / s.G);
  const int L = s.chunk_len(c, p.T);
  const int l0 = blockIdx.z * R;
  extern __shared__ float wts[];  // [R, Q]
  const int tid = threadIdx.y * blockDim.x + threadIdx.x;
  const int nthreads = blockDim.x * blockDim.y;
  const size_t cs_base = static_cast<size_t>(c) * s.Q;
  for (int i = tid; i < R * s.Q; i += nthreads) {
    const int r = i / s.Q, sc = i % s.Q, l = l0 + r;
    float v = 0.0f;
    if (l < L && sc <= l) {
      const float cb = p.cb[((static_cast<size_t>(c) * s.G + g) * s.Q + l) * s.Q + sc];
      const float cs_l = p.cs[(cs_base + l) * s.H + h];
      const size_t ts = (cs_base + sc) * s.H + h;
      v = cb * expf(cs_l - p.cs[ts]) * p.dt[ts];
    }
    wts[i] = v;
  }
  __syncthreads();
  const int l = l0 + threadIdx.y, pp = threadIdx.x;
  if (l >= L || pp >= s.P) return;
  const int t = c * s.Q + l;
  const float* w = wts + threadIdx.y * s.Q;
  float acc = 0.0f;
  for (int sc = 0; sc <= l; ++sc) acc += w[sc] * s.x(p.xbc, c * s.Q + sc, h, pp);
  const float* Ct = s.C(p.xbc, t, g);
  const float* Sin = p.states_in + (static_cast<size_t>(c) * s.H + h) * s.N * s.P;
  float inter = 0.0f;
  for (int n = 0; n < s.N; ++n) inter += Ct[n] * Sin[static_cast<size_t>(n) * s.P + pp];
  const float cs_l = p.cs[static_cast<size_t>(t) * s.H + h];
  const float xl = s.x(p.xbc, t, h, pp);
  p.y[static_cast<size_t>(t) * s.d_inner + h * s.P + pp] = acc + expf(cs_l) * inter + p.D[h] * xl;
}

}  // namespace

// Rows per block of the output kernel: about 256 threads, and its weights within 48 KB of
// shared memory (the default limit, so no attribute is needed for any chunk size <= 12288).
int ssd_output_rows(int headdim, int chunk_size) {
  return std::max(1, std::min(256 / std::max(1, headdim), 12288 / chunk_size));
}

size_t ssd_chunk_state_smem(int headdim, int d_state) {
  return sizeof(float) * kRows * (headdim + d_state);
}

Status ssd_chunked(const SsmScan& p, cudaStream_t stream) {
  if (p.T <= 0) return {};
  const Layout s(p);
  ssd_dt_cumsum_kernel<<<s.chunks, 128, 0, stream>>>(p);
  MLM_LAUNCH_CHECK("ssd_dt_cumsum_kernel");
  const int tiles = ceil_div(s.Q, kTile);
  ssd_cb_kernel<<<dim3(tiles, tiles, s.chunks * s.G), dim3(kTile, kTile), 0, stream>>>(p);
  MLM_LAUNCH_CHECK("ssd_cb_kernel");
  const int z = ceil_div(static_cast<int64_t>(s.P) * s.N, kOutPerThread * kStateThreads);
  ssd_chunk_state_kernel<<<dim3(s.chunks, s.H, z), kStateThreads, ssd_chunk_state_smem(s.P, s.N),
                           stream>>>(p);
  MLM_LAUNCH_CHECK("ssd_chunk_state_kernel");
  const int64_t elems = static_cast<int64_t>(s.H) * s.P * s.N;
  ssd_state_passing_kernel<<<ceil_div(elems, 256), 256, 0, stream>>>(p);
  MLM_LAUNCH_CHECK("ssd_state_passing_kernel");
  const int R = ssd_output_rows(s.P, s.Q);
  ssd_output_kernel<<<dim3(s.chunks, s.H, ceil_div(s.Q, R)), dim3(s.P, R), sizeof(float) * R * s.Q,
                      stream>>>(p, R);
  MLM_LAUNCH_CHECK("ssd_output_kernel");
  return {};
}

}  // namespace mlmamba::cuda
