#include "vision.cuh"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>

#include "conv1d.cuh"
#include "ssm_scan.cuh"
#include "weights.cuh"

mlmamba_vision::~mlmamba_vision() {
  cudaSetDevice(device);
  if (stream) cudaStreamSynchronize(stream);
  if (start) cudaEventDestroy(start);
  if (stop) cudaEventDestroy(stop);
  if (stream) cudaStreamDestroy(stream);
  if (pinned_rgb) cudaFreeHost(pinned_rgb);
  if (pool) cudaFree(pool);
}

namespace mlmamba::cuda {
namespace {

constexpr size_t kWorkspaceBytes = size_t{32} << 20;
constexpr int kMaxHeadDim = 128;  // the attention kernel keeps 4 output values per lane
constexpr int kAttnRows = 16;     // query rows per attention block: 2 per warp of 8
constexpr int kKeyTile = 32;      // keys per shared-memory tile: one per lane

// ---------------------------------------------------------------------------------------------
// Kernels

struct Normalise {
  float mean[3], std[3];
};

// Unfolds the picture into patch rows in the conv weight's (c, y, x) order, normalised exactly as
// the CPU does it (x / 255 in fp32, then (x - mean) / std), rounded to bf16 as patch_embed's input.
__global__ void patch_unfold_kernel(const uint8_t* rgb, int S, int P, int G, Normalise n,
                                    bf16* out) {
  const int K = 3 * P * P;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(G) * G * K) return;
  const int r = static_cast<int>(i / K), k = static_cast<int>(i % K);
  const int ch = k / (P * P), y = (k / P) % P, x = k % P;
  const int py = (r / G) * P + y, px = (r % G) * P + x;
  const float v = static_cast<float>(rgb[(static_cast<size_t>(py) * S + px) * 3 + ch]);
  out[i] = __float2bfloat16_rn((v / 255.0f - n.mean[ch]) / n.std[ch]);
}

// Rows [prefix, N) get patch_embed's product plus its bias, then pos_embed. Rows [0, prefix) get
// the class and register tokens, which carry no position embedding. (The product is written to its
// own buffer rather than in place at row `prefix`: cuBLASLt's heuristics assume aligned outputs.)
__global__ void embed_kernel(float* x, const float* patch_out, int prefix, int R, int D,
                             const float* patch_b, const float* pos, const float* cls,
                             const float* reg) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(prefix + R) * D) return;
  const int t = static_cast<int>(i / D), k = static_cast<int>(i % D);
  if (t >= prefix) {
    const size_t j = static_cast<size_t>(t - prefix) * D + k;
    x[i] = (patch_out[j] + patch_b[k]) + pos[j];
  } else if (cls && t == 0) {
    x[i] = cls[k];
  } else {
    x[i] = reg[static_cast<size_t>(t - (cls ? 1 : 0)) * D + k];
  }
}

// LayerNorm of one row per block; statistics in fp32, output bf16 (a product's input).
__global__ void layernorm_kernel(const float* x, const float* w, const float* b, int n, float eps,
                                 bf16* out) {
  const float* r = x + static_cast<size_t>(blockIdx.x) * n;
  float s = 0.0f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += r[i];
  const float mean = block_sum(s) / static_cast<float>(n);
  float v = 0.0f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) v += (r[i] - mean) * (r[i] - mean);
  const float inv = rsqrtf(block_sum(v) / static_cast<float>(n) + eps);
  bf16* o = out + static_cast<size_t>(blockIdx.x) * n;
  for (int i = threadIdx.x; i < n; i += blockDim.x)
    o[i] = __float2bfloat16_rn((r[i] - mean) * inv * w[i] + b[i]);
}

__device__ __forceinline__ float gelu(float x) {
  return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}

// y + bias, optionally GELU (exact erf form), to fp32 (may be y itself) and/or bf16.
__global__ void bias_act_kernel(const float* y, const float* bias, int T, int n, int gelu_on,
                                float* out_f32, bf16* out_bf16) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(T) * n) return;
  float v = y[i];
  if (bias) v += bias[i % n];
  if (gelu_on) v = gelu(v);
  if (out_f32) out_f32[i] = v;
  if (out_bf16) out_bf16[i] = __float2bfloat16_rn(v);
}

// x += gamma * (branch + bias); gamma (LayerScale) and bias may be absent.
__global__ void residual_kernel(float* x, const float* branch, const float* bias,
                                const float* gamma, int T, int n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(T) * n) return;
  const int k = static_cast<int>(i % n);
  float v = branch[i];
  if (bias) v += bias[k];
  if (gamma) v *= gamma[k];
  x[i] += v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// softmax(scale Q K^T) V for kAttnRows queries of one head, with an online softmax over tiles of
// kKeyTile keys in shared memory: the N x N scores are never stored. Each warp owns two query
// rows; a lane scores one key of the tile and holds up to 4 output channels (head_dim <= 128).
__global__ void __launch_bounds__(256)
    attention_kernel(const float* qkv, int N, int D, int hd, float scale, bf16* out) {
  __shared__ float qs[kAttnRows][kMaxHeadDim];
  __shared__ float ks[kKeyTile][kMaxHeadDim + 1];  // +1: lanes read different rows, no conflicts
  __shared__ float vs[kKeyTile][kMaxHeadDim];
  const int h = blockIdx.y, q0 = blockIdx.x * kAttnRows;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const size_t ld = static_cast<size_t>(3) * D;
  const size_t col = static_cast<size_t>(h) * hd;
  for (int i = tid; i < kAttnRows * hd; i += blockDim.x) {
    const int r = i / hd, d = i % hd;
    qs[r][d] = q0 + r < N ? qkv[(q0 + r) * ld + col + d] : 0.0f;
  }
  float m[2] = {-FLT_MAX, -FLT_MAX}, l[2] = {0.0f, 0.0f};
  float acc[2][4] = {};
  for (int k0 = 0; k0 < N; k0 += kKeyTile) {
    __syncthreads();  // the previous tile is no longer read
    for (int i = tid; i < kKeyTile * hd; i += blockDim.x) {
      const int j = i / hd, d = i % hd, key = k0 + j;
      ks[j][d] = key < N ? qkv[key * ld + D + col + d] : 0.0f;
      vs[j][d] = key < N ? qkv[key * ld + 2 * D + col + d] : 0.0f;
    }
    __syncthreads();
    const int key = k0 + lane;
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      const int r = warp * 2 + rr;
      float s = -FLT_MAX;
      if (key < N) {
        float dot = 0.0f;
        for (int d = 0; d < hd; ++d) dot += qs[r][d] * ks[lane][d];
        s = dot * scale;
      }
      const float new_m = fmaxf(m[rr], warp_max(s));
      const float corr = expf(m[rr] - new_m);
      const float p = key < N ? expf(s - new_m) : 0.0f;
      l[rr] = l[rr] * corr + warp_sum(p);
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[rr][j] *= corr;
      const int valid = min(kKeyTile, N - k0);
      for (int jj = 0; jj < valid; ++jj) {
        const float pj = __shfl_sync(0xffffffffu, p, jj);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int d = lane + 32 * j;
          if (d < hd) acc[rr][j] += pj * vs[jj][d];
        }
      }
      m[rr] = new_m;
    }
  }
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const int row = q0 + warp * 2 + rr;
    if (row >= N) continue;
    const float inv = 1.0f / l[rr];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int d = lane + 32 * j;
      if (d < hd)
        out[static_cast<size_t>(row) * D + col + d] = __float2bfloat16_rn(acc[rr][j] * inv);
    }
  }
}

// The patch rows of one encoder (prefix tokens dropped) into its columns of the features.
__global__ void features_kernel(const float* x, int prefix, int R, int D, int F, int offset,
                                bf16* feats) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(R) * D) return;
  const int r = static_cast<int>(i / D), k = static_cast<int>(i % D);
  feats[static_cast<size_t>(r) * F + offset + k] =
      __float2bfloat16_rn(x[static_cast<size_t>(prefix + r) * D + k]);
}

// The backward direction reads the sequence from its end. The scan kernels walk rows forward, so
// it gets its own copy of in_proj's output with the rows reversed ([T, W] fp32, a few MiB).
__global__ void reverse_rows_kernel(const float* in, int T, int W, float* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(T) * W) return;
  const int t = static_cast<int>(i / W), k = static_cast<int>(i % W);
  out[static_cast<size_t>(T - 1 - t) * W + k] = in[i];
}

// Both directions' gated RMSNorm (gate before the norm, shared weight) and their mean, as
// out_proj's bf16 input. Row t of the forward output pairs with row T-1-t of the backward output
// (which was computed on the reversed sequence); both are gated by z of row t. One block per
// (row, group).
__global__ void bigated_norm_kernel(const float* y_fwd, const float* y_bwd, const float* z,
                                    int z_stride, const float* weight, int T, int d_inner,
                                    int group, float eps, bf16* out) {
  const int t = blockIdx.x, g0 = blockIdx.y * group;
  const float* yf = y_fwd + static_cast<size_t>(t) * d_inner + g0;
  const float* yb = y_bwd + static_cast<size_t>(T - 1 - t) * d_inner + g0;
  const float* zt = z + static_cast<size_t>(t) * z_stride + g0;
  float sf = 0.0f, sb = 0.0f;
  for (int i = threadIdx.x; i < group; i += blockDim.x) {
    const float gz = silu(zt[i]);
    const float a = yf[i] * gz, b = yb[i] * gz;
    sf += a * a;
    sb += b * b;
  }
  const float inv_f = rsqrtf(block_sum(sf) / static_cast<float>(group) + eps);
  const float inv_b = rsqrtf(block_sum(sb) / static_cast<float>(group) + eps);
  bf16* o = out + static_cast<size_t>(t) * d_inner + g0;
  for (int i = threadIdx.x; i < group; i += blockDim.x) {
    const float gz = silu(zt[i]), w = weight[g0 + i];
    const float a = yf[i] * gz * inv_f * w, b = yb[i] * gz * inv_b * w;
    o[i] = __float2bfloat16_rn(0.5f * (a + b));
  }
}

// SwiGLU: silu(a + b1) * (b + b2), as w3's bf16 input.
__global__ void swiglu_kernel(const float* a, const float* b1, const float* b, const float* b2,
                              int T, int n, bf16* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(T) * n) return;
  const int k = static_cast<int>(i % n);
  out[i] = __float2bfloat16_rn(silu(a[i] + b1[k]) * (b[i] + b2[k]));
}

// ---------------------------------------------------------------------------------------------
// Launch helpers

constexpr int kThreads = 256;

int blocks_for(int64_t n) {
  return ceil_div(n, kThreads);
}

Status bias_act(mlmamba_vision* v, const float* y, const float* bias, int T, int n, bool gelu_on,
                float* out_f32, bf16* out_bf16) {
  bias_act_kernel<<<blocks_for(static_cast<int64_t>(T) * n), kThreads, 0, v->stream>>>(
      y, bias, T, n, gelu_on ? 1 : 0, out_f32, out_bf16);
  MLM_LAUNCH_CHECK("bias_act_kernel");
  return {};
}

Status residual(mlmamba_vision* v, float* x, const float* branch, const float* bias,
                const float* gamma, int T, int n) {
  residual_kernel<<<blocks_for(static_cast<int64_t>(T) * n), kThreads, 0, v->stream>>>(
      x, branch, bias, gamma, T, n);
  MLM_LAUNCH_CHECK("residual_kernel");
  return {};
}

Status layernorm(mlmamba_vision* v, const float* x, const float* w, const float* b, int T, int n,
                 float eps, bf16* out) {
  layernorm_kernel<<<T, kThreads, 0, v->stream>>>(x, w, b, n, eps, out);
  MLM_LAUNCH_CHECK("layernorm_kernel");
  return {};
}

// ---------------------------------------------------------------------------------------------
// Description, layout, weights

struct Sizes {
  int S, G, R, F, M, L, PH;
  int n_max, d_max, wide_max, k_max;  // tokens, ViT width, widest row, widest patch row
  int W, CD, I, chunks, Q;
};

Sizes sizes_of(const mlmamba_vision* v) {
  Sizes z{};
  z.S = v->image_size;
  z.G = v->grid;
  z.R = v->rows;
  z.F = v->feature_dim;
  z.M = v->mlp_out;
  z.L = v->llm_d_model;
  z.PH = v->projector_hidden;
  const mlmamba_lm_desc& m = v->msc;
  z.I = m.d_inner;
  z.CD = m.d_inner + 2 * m.ngroups * m.d_state;
  z.W = 2 * m.d_inner + 2 * m.ngroups * m.d_state + m.nheads;
  z.Q = std::max(1, m.chunk_size);  // 0 when there is no MSC layer
  z.chunks = ceil_div(z.R, z.Q);
  z.wide_max = std::max({z.F, z.M, z.L, z.PH, z.W, z.I});
  for (const VitDev& e : v->encoders) {
    z.n_max = std::max(z.n_max, e.tokens);
    z.d_max = std::max(z.d_max, e.c.dim);
    z.k_max = std::max(z.k_max, 3 * e.c.patch_size * e.c.patch_size);
    z.wide_max = std::max({z.wide_max, 3 * e.c.dim, e.c.mlp_hidden});
  }
  z.n_max = std::max(z.n_max, z.R);
  return z;
}

Status check_desc(const mlmamba_vision_desc& in, mlmamba_vision* v) {
  auto bad = [](const std::string& m) { return fail(MLMAMBA_ERR_INVALID, m); };
  if (in.n_encoders <= 0 || in.n_encoders > MLMAMBA_MAX_ENCODERS)
    return bad("the vision half needs 1 to " + std::to_string(MLMAMBA_MAX_ENCODERS) + " encoders");
  if (in.image_size <= 0) return bad("image_size must be positive");
  v->image_size = in.image_size;
  v->feature_dim = 0;
  for (int i = 0; i < in.n_encoders; ++i) {
    const mlmamba_vit_desc& c = in.encoders[i];
    VitDev e;
    e.c = c;
    e.name = c.name ? c.name : "";
    if (e.name.empty()) return bad("encoder " + std::to_string(i) + " has no name");
    if (c.patch_size <= 0 || c.dim <= 0 || c.heads <= 0 || c.mlp_hidden <= 0 ||
        c.feature_layer < 0 || c.register_tokens < 0)
      return bad("encoder " + e.name + " has a size that is not positive");
    if (c.dim % c.heads != 0) return bad("encoder " + e.name + ": dim is not a multiple of heads");
    if (!(c.norm_eps > 0.0f)) return bad("encoder " + e.name + ": norm_eps must be positive");
    for (int k = 0; k < 3; ++k)
      if (!(c.std[k] != 0.0f)) return bad("encoder " + e.name + ": std must not be zero");
    if (c.dim / c.heads > kMaxHeadDim)
      return fail(MLMAMBA_ERR_UNSUPPORTED,
                  "encoder " + e.name + ": head dim " + std::to_string(c.dim / c.heads) +
                      " is above the attention kernel's " + std::to_string(kMaxHeadDim));
    e.grid = in.image_size / c.patch_size;
    if (e.grid <= 0) return bad("encoder " + e.name + ": the patch is larger than the picture");
    if (i > 0 && e.grid != v->grid)
      return bad("every encoder must give the same grid (" + std::to_string(v->grid) + " vs " +
                 std::to_string(e.grid) + ")");
    v->grid = e.grid;
    e.tokens = e.prefix() + e.grid * e.grid;
    e.blocks.assign(static_cast<size_t>(c.feature_layer) + 1, VitBlockDev{});
    v->feature_dim += c.dim;
    v->encoders.push_back(std::move(e));
  }
  v->rows = v->grid * v->grid;
  v->mlp_out = in.mlp_out;
  v->projector_hidden = in.projector_hidden;
  v->llm_d_model = in.llm_d_model;
  v->msc_ln_eps = in.msc_layer_norm_eps;
  v->poison = in.poison != 0;
  if (in.mlp_out <= 0 || in.projector_hidden <= 0 || in.llm_d_model <= 0 || in.msc_layers < 0)
    return bad("mlp_out, projector_hidden and llm_d_model must be positive");
  if (!(in.msc_layer_norm_eps > 0.0f) || !(in.msc_mixer_norm_eps > 0.0f))
    return bad("the connector's norm epsilons must be positive");
  mlmamba_lm_desc& m = v->msc;
  m.d_model = in.mlp_out;
  m.n_layer = in.msc_layers;
  m.d_inner = in.msc_d_inner;
  m.d_state = in.msc_d_state;
  m.headdim = in.msc_headdim;
  m.nheads = in.msc_nheads;
  m.ngroups = in.msc_ngroups;
  m.d_conv = in.msc_d_conv;
  m.chunk_size = in.msc_chunk_size;
  m.norm_group_size = in.msc_norm_group_size;
  m.mixer_norm_eps = in.msc_mixer_norm_eps;
  m.conv_bias = in.msc_conv_bias;
  if (in.msc_layers > 0) {
    if (m.d_inner <= 0 || m.d_state <= 0 || m.headdim <= 0 || m.nheads <= 0 || m.ngroups <= 0 ||
        m.d_conv <= 0 || m.chunk_size <= 0 || m.norm_group_size <= 0)
      return bad("every size of the connector's mixer must be positive");
    if (m.nheads * m.headdim != m.d_inner) return bad("MSC: nheads * headdim must equal d_inner");
    if (m.nheads % m.ngroups != 0) return bad("MSC: nheads must be a multiple of ngroups");
    if (m.d_inner % m.norm_group_size != 0)
      return bad("MSC: d_inner must be a multiple of the norm group");
    if (m.d_state > kMaxDState || m.headdim > 256 || m.chunk_size > 4096 || m.d_conv > 64)
      return fail(MLMAMBA_ERR_UNSUPPORTED,
                  "MSC: d_state above " + std::to_string(kMaxDState) +
                      ", headdim above 256, chunk_size above 4096 or d_conv above 64 has no "
                      "kernel here");
  }
  return {};
}

struct Layout {
  size_t weight_bytes = 0, scratch_bytes = 0;
};

Layout place(mlmamba_vision* v, Carver& c) {
  const Sizes z = sizes_of(v);
  const mlmamba_lm_desc& m = v->msc;
  for (VitDev& e : v->encoders) {
    const size_t D = e.c.dim, H = e.c.mlp_hidden, K = 3 * e.c.patch_size * e.c.patch_size;
    e.patch_w = c.take<bf16>(D * K);
    e.patch_b = c.take<float>(D);
    e.pos_embed = c.take<float>(static_cast<size_t>(z.R) * D);
    e.cls_token = e.c.class_token ? c.take<float>(D) : nullptr;
    e.reg_token = e.c.register_tokens > 0 ? c.take<float>(e.c.register_tokens * D) : nullptr;
    for (VitBlockDev& b : e.blocks) {
      b.norm1_w = c.take<float>(D);
      b.norm1_b = c.take<float>(D);
      b.qkv_w = c.take<bf16>(3 * D * D);
      b.qkv_b = c.take<float>(3 * D);
      b.proj_w = c.take<bf16>(D * D);
      b.proj_b = c.take<float>(D);
      b.norm2_w = c.take<float>(D);
      b.norm2_b = c.take<float>(D);
      b.fc1_w = c.take<bf16>(H * D);
      b.fc1_b = c.take<float>(H);
      b.fc2_w = c.take<bf16>(D * H);
      b.fc2_b = c.take<float>(D);
      b.ls1 = e.c.layer_scale ? c.take<float>(D) : nullptr;
      b.ls2 = e.c.layer_scale ? c.take<float>(D) : nullptr;
    }
  }
  const size_t M = z.M;
  v->mlp_w = c.take<bf16>(M * z.F);
  v->mlp_b = c.take<float>(M);
  v->layers.assign(static_cast<size_t>(m.n_layer), MscLayerDev{});
  for (MscLayerDev& w : v->layers) {
    w.in_proj = c.take<bf16>(static_cast<size_t>(z.W) * M);
    w.out_proj = c.take<bf16>(M * z.I);
    w.norm = c.take<float>(z.I);
    for (MscScanDev* s : {&w.fwd, &w.bwd}) {
      s->conv_w = c.take<float>(static_cast<size_t>(z.CD) * m.d_conv);
      s->conv_b = m.conv_bias ? c.take<float>(z.CD) : nullptr;
      s->dt_bias = c.take<float>(m.nheads);
      s->A_log = c.take<float>(m.nheads);
      s->D = c.take<float>(m.nheads);
    }
    w.ln_w = c.take<float>(M);
    w.ln_b = c.take<float>(M);
    w.w1 = c.take<bf16>(M * M);
    w.b1 = c.take<float>(M);
    w.w2 = c.take<bf16>(M * M);
    w.b2 = c.take<float>(M);
    w.w3 = c.take<bf16>(M * M);
    w.b3 = c.take<float>(M);
  }
  v->norm_f_w = c.take<float>(M);
  v->norm_f_b = c.take<float>(M);
  v->p0_w = c.take<bf16>(static_cast<size_t>(z.PH) * M);
  v->p0_b = c.take<float>(z.PH);
  v->p2_w = c.take<bf16>(static_cast<size_t>(z.L) * z.PH);
  v->p2_b = c.take<float>(z.L);
  v->p4_w = c.take<bf16>(static_cast<size_t>(z.L) * z.L);
  v->p4_b = c.take<float>(z.L);
  Layout l;
  l.weight_bytes = c.used();
  v->scratch_begin = c.take<char>(0);
  const size_t off = c.used();
  VisionScratch& s = v->s;
  const size_t N = z.n_max, R = z.R, WM = z.wide_max;
  const size_t Tq = static_cast<size_t>(z.chunks) * z.Q;  // whole chunks
  const size_t PN = static_cast<size_t>(std::max(1, m.headdim)) * std::max(1, m.d_state);
  s.rgb = c.take<uint8_t>(static_cast<size_t>(3) * z.S * z.S);
  s.patches = c.take<bf16>(R * z.k_max);
  s.x = c.take<float>(N * z.d_max);
  s.normed = c.take<bf16>(N * WM);
  s.wide = c.take<float>(N * WM);
  s.out = c.take<float>(N * WM);
  s.act = c.take<bf16>(N * WM);
  s.feats = c.take<bf16>(R * z.F);
  s.h = c.take<float>(R * M);
  s.reversed = c.take<float>(R * z.W);
  s.xbc = c.take<float>(R * z.CD);
  s.y_fwd = c.take<float>(R * z.I);
  s.y_bwd = c.take<float>(R * z.I);
  s.gate = c.take<float>(R * M);
  s.conv_state = c.take<float>(static_cast<size_t>(std::max(0, m.d_conv - 1)) * z.CD + 1);
  s.ssm_state = c.take<float>(static_cast<size_t>(std::max(0, m.nheads)) * PN);
  s.dt = c.take<float>(Tq * std::max(0, m.nheads));
  s.cs = c.take<float>(Tq * std::max(0, m.nheads));
  s.cb = c.take<float>(static_cast<size_t>(z.chunks) * std::max(0, m.ngroups) * z.Q * z.Q);
  s.chunk_states = c.take<float>(static_cast<size_t>(z.chunks) * std::max(0, m.nheads) * PN);
  s.states_in = c.take<float>(static_cast<size_t>(z.chunks) * std::max(0, m.nheads) * PN);
  s.rows = c.take<float>(R * z.L);
  s.workspace = c.take<char>(kWorkspaceBytes);
  s.workspace_bytes = kWorkspaceBytes;
  l.scratch_bytes = c.used() - off;
  return l;
}

Status upload_weights(mlmamba_vision* v, const mlmamba_vision_desc& desc) {
  const Sizes z = sizes_of(v);
  const mlmamba_lm_desc& m = v->msc;
  const int64_t M = z.M;
  std::map<std::string, ExpectedTensor> want;
  for (const VitDev& e : v->encoders) {
    const std::string p = "vision_backbone." + e.name + ".";
    const int64_t D = e.c.dim, P = e.c.patch_size, H = e.c.mlp_hidden;
    want[p + "patch_embed.proj.weight"] = {{D, 3, P, P}, true, e.patch_w};
    want[p + "patch_embed.proj.bias"] = {{D}, false, e.patch_b};
    want[p + "pos_embed"] = {{1, z.R, D}, false, e.pos_embed};
    if (e.cls_token) want[p + "cls_token"] = {{1, 1, D}, false, e.cls_token};
    if (e.reg_token) want[p + "reg_token"] = {{1, e.c.register_tokens, D}, false, e.reg_token};
    for (size_t j = 0; j < e.blocks.size(); ++j) {
      const VitBlockDev& b = e.blocks[j];
      const std::string q = p + "blocks." + std::to_string(j) + ".";
      want[q + "norm1.weight"] = {{D}, false, b.norm1_w};
      want[q + "norm1.bias"] = {{D}, false, b.norm1_b};
      want[q + "attn.qkv.weight"] = {{3 * D, D}, true, b.qkv_w};
      want[q + "attn.qkv.bias"] = {{3 * D}, false, b.qkv_b};
      want[q + "attn.proj.weight"] = {{D, D}, true, b.proj_w};
      want[q + "attn.proj.bias"] = {{D}, false, b.proj_b};
      want[q + "norm2.weight"] = {{D}, false, b.norm2_w};
      want[q + "norm2.bias"] = {{D}, false, b.norm2_b};
      want[q + "mlp.fc1.weight"] = {{H, D}, true, b.fc1_w};
      want[q + "mlp.fc1.bias"] = {{H}, false, b.fc1_b};
      want[q + "mlp.fc2.weight"] = {{D, H}, true, b.fc2_w};
      want[q + "mlp.fc2.bias"] = {{D}, false, b.fc2_b};
      if (b.ls1) want[q + "ls1.gamma"] = {{D}, false, b.ls1};
      if (b.ls2) want[q + "ls2.gamma"] = {{D}, false, b.ls2};
    }
  }
  want["mlp.0.weight"] = {{M, z.F}, true, v->mlp_w};
  want["mlp.0.bias"] = {{M}, false, v->mlp_b};
  for (size_t l = 0; l < v->layers.size(); ++l) {
    const MscLayerDev& w = v->layers[l];
    const std::string p = "bidirectional_mamba.layers." + std::to_string(l) + ".";
    const std::string mp = p + "mixer.";
    want[mp + "in_proj.weight"] = {{z.W, M}, true, w.in_proj};
    want[mp + "out_proj.weight"] = {{M, z.I}, true, w.out_proj};
    want[mp + "norm.weight"] = {{z.I}, false, w.norm};
    for (int dir = 0; dir < 2; ++dir) {
      const MscScanDev& s = dir == 0 ? w.fwd : w.bwd;
      const std::string sfx = dir == 0 ? "" : "_b";
      want[mp + "conv1d" + sfx + ".weight"] = {{z.CD, 1, m.d_conv}, false, s.conv_w};
      if (s.conv_b) want[mp + "conv1d" + sfx + ".bias"] = {{z.CD}, false, s.conv_b};
      want[mp + "dt_bias" + sfx] = {{m.nheads}, false, s.dt_bias};
      want[mp + "A_log" + sfx] = {{m.nheads}, false, s.A_log};
      want[mp + "D" + sfx] = {{m.nheads}, false, s.D};
    }
    want[p + "norm.weight"] = {{M}, false, w.ln_w};
    want[p + "norm.bias"] = {{M}, false, w.ln_b};
    want[p + "mlp.w1.weight"] = {{M, M}, true, w.w1};
    want[p + "mlp.w1.bias"] = {{M}, false, w.b1};
    want[p + "mlp.w2.weight"] = {{M, M}, true, w.w2};
    want[p + "mlp.w2.bias"] = {{M}, false, w.b2};
    want[p + "mlp.w3.weight"] = {{M, M}, true, w.w3};
    want[p + "mlp.w3.bias"] = {{M}, false, w.b3};
  }
  want["bidirectional_mamba.norm_f.weight"] = {{M}, false, v->norm_f_w};
  want["bidirectional_mamba.norm_f.bias"] = {{M}, false, v->norm_f_b};
  want["projector.projector.0.weight"] = {{z.PH, M}, true, v->p0_w};
  want["projector.projector.0.bias"] = {{z.PH}, false, v->p0_b};
  want["projector.projector.2.weight"] = {{z.L, z.PH}, true, v->p2_w};
  want["projector.projector.2.bias"] = {{z.L}, false, v->p2_b};
  want["projector.projector.4.weight"] = {{z.L, z.L}, true, v->p4_w};
  want["projector.projector.4.bias"] = {{z.L}, false, v->p4_b};

  return upload_tensor_table(desc.tensors, desc.n_tensors, want, v->stream, "this vision half");
}

// ---------------------------------------------------------------------------------------------
// The forward pass

Status run_encoder(mlmamba_vision* v, const VitDev& e, int offset) {
  const Sizes z = sizes_of(v);
  const VisionScratch& s = v->s;
  cudaStream_t stream = v->stream;
  const int D = e.c.dim, P = e.c.patch_size, H = e.c.mlp_hidden, K = 3 * P * P;
  const int prefix = e.prefix(), N = e.tokens, hd = D / e.c.heads;
  Normalise n{};
  for (int k = 0; k < 3; ++k) {
    n.mean[k] = e.c.mean[k];
    n.std[k] = e.c.std[k];
  }
  patch_unfold_kernel<<<blocks_for(static_cast<int64_t>(z.R) * K), kThreads, 0, stream>>>(
      s.rgb, z.S, P, z.G, n, s.patches);
  MLM_LAUNCH_CHECK("patch_unfold_kernel");
  MLM_STATUS_TRY(v->gemm.linear(s.patches, e.patch_w, z.R, D, K, s.out, stream));
  embed_kernel<<<blocks_for(static_cast<int64_t>(N) * D), kThreads, 0, stream>>>(
      s.x, s.out, prefix, z.R, D, e.patch_b, e.pos_embed, e.cls_token, e.reg_token);
  MLM_LAUNCH_CHECK("embed_kernel");
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for (const VitBlockDev& b : e.blocks) {
    MLM_STATUS_TRY(layernorm(v, s.x, b.norm1_w, b.norm1_b, N, D, e.c.norm_eps, s.normed));
    MLM_STATUS_TRY(v->gemm.linear(s.normed, b.qkv_w, N, 3 * D, D, s.wide, stream));
    MLM_STATUS_TRY(add_bias(s.wide, b.qkv_b, N, 3 * D, stream));
    attention_kernel<<<dim3(ceil_div(N, kAttnRows), e.c.heads), kThreads, 0, stream>>>(
        s.wide, N, D, hd, scale, s.act);
    MLM_LAUNCH_CHECK("attention_kernel");
    MLM_STATUS_TRY(v->gemm.linear(s.act, b.proj_w, N, D, D, s.out, stream));
    MLM_STATUS_TRY(residual(v, s.x, s.out, b.proj_b, b.ls1, N, D));
    MLM_STATUS_TRY(layernorm(v, s.x, b.norm2_w, b.norm2_b, N, D, e.c.norm_eps, s.normed));
    MLM_STATUS_TRY(v->gemm.linear(s.normed, b.fc1_w, N, H, D, s.wide, stream));
    MLM_STATUS_TRY(bias_act(v, s.wide, b.fc1_b, N, H, true, nullptr, s.act));
    MLM_STATUS_TRY(v->gemm.linear(s.act, b.fc2_w, N, D, H, s.out, stream));
    MLM_STATUS_TRY(residual(v, s.x, s.out, b.fc2_b, b.ls2, N, D));
  }
  features_kernel<<<blocks_for(static_cast<int64_t>(z.R) * D), kThreads, 0, stream>>>(
      s.x, prefix, z.R, D, z.F, offset, s.feats);
  MLM_LAUNCH_CHECK("features_kernel");
  return {};
}

// One direction of a BiMamba2 mixer over `zxbcdt` [T, W] from a zero state: conv1d + SiLU, then
// the chunked scan into `y`.
Status run_direction(mlmamba_vision* v, const MscScanDev& w, const float* zxbcdt, float* y) {
  const Sizes z = sizes_of(v);
  const mlmamba_lm_desc& m = v->msc;
  const VisionScratch& s = v->s;
  cudaStream_t stream = v->stream;
  if (m.d_conv > 1) {
    MLM_CUDA_TRY(cudaMemsetAsync(s.conv_state, 0,
                                 sizeof(float) * static_cast<size_t>(m.d_conv - 1) * z.CD, stream));
  }
  MLM_CUDA_TRY(cudaMemsetAsync(
      s.ssm_state, 0, sizeof(float) * static_cast<size_t>(m.nheads) * m.headdim * m.d_state,
      stream));
  const Conv1d conv{zxbcdt + z.I, z.W,  s.conv_state, w.conv_w, w.conv_b,
                    z.R,          z.CD, m.d_conv,     s.xbc};
  MLM_STATUS_TRY(conv1d_silu(conv, stream));
  const SsmScan scan{
      s.xbc,     zxbcdt + z.I + z.CD, z.W,        w.dt_bias,    w.A_log,     w.D, z.R,  m.nheads,
      m.headdim, m.d_state,           m.ngroups,  m.chunk_size, s.ssm_state, y,   s.dt, s.cs,
      s.cb,      s.chunk_states,      s.states_in};
  return ssd_chunked(scan, stream);
}

Status run_connector(mlmamba_vision* v) {
  const Sizes z = sizes_of(v);
  const mlmamba_lm_desc& m = v->msc;
  const VisionScratch& s = v->s;
  cudaStream_t stream = v->stream;
  const int R = z.R, M = z.M;
  MLM_STATUS_TRY(v->gemm.linear(s.feats, v->mlp_w, R, M, z.F, s.h, stream));
  MLM_STATUS_TRY(bias_act(v, s.h, v->mlp_b, R, M, true, s.h, nullptr));
  for (const MscLayerDev& w : v->layers) {
    // No norm before the mixer: the released connector adds BiMamba2(h) to h directly.
    MLM_STATUS_TRY(bias_act(v, s.h, nullptr, R, M, false, nullptr, s.normed));
    MLM_STATUS_TRY(v->gemm.linear(s.normed, w.in_proj, R, z.W, M, s.wide, stream));
    MLM_STATUS_TRY(run_direction(v, w.fwd, s.wide, s.y_fwd));
    reverse_rows_kernel<<<blocks_for(static_cast<int64_t>(R) * z.W), kThreads, 0, stream>>>(
        s.wide, R, z.W, s.reversed);
    MLM_LAUNCH_CHECK("reverse_rows_kernel");
    MLM_STATUS_TRY(run_direction(v, w.bwd, s.reversed, s.y_bwd));
    bigated_norm_kernel<<<dim3(R, z.I / m.norm_group_size), kThreads, 0, stream>>>(
        s.y_fwd, s.y_bwd, s.wide, z.W, w.norm, R, z.I, m.norm_group_size, m.mixer_norm_eps,
        s.normed);
    MLM_LAUNCH_CHECK("bigated_norm_kernel");
    MLM_STATUS_TRY(v->gemm.linear(s.normed, w.out_proj, R, M, z.I, s.out, stream));
    MLM_STATUS_TRY(residual(v, s.h, s.out, nullptr, nullptr, R, M));
    MLM_STATUS_TRY(layernorm(v, s.h, w.ln_w, w.ln_b, R, M, v->msc_ln_eps, s.normed));
    MLM_STATUS_TRY(v->gemm.linear(s.normed, w.w1, R, M, M, s.wide, stream));
    MLM_STATUS_TRY(v->gemm.linear(s.normed, w.w2, R, M, M, s.gate, stream));
    swiglu_kernel<<<blocks_for(static_cast<int64_t>(R) * M), kThreads, 0, stream>>>(
        s.wide, w.b1, s.gate, w.b2, R, M, s.act);
    MLM_LAUNCH_CHECK("swiglu_kernel");
    MLM_STATUS_TRY(v->gemm.linear(s.act, w.w3, R, M, M, s.out, stream));
    MLM_STATUS_TRY(residual(v, s.h, s.out, w.b3, nullptr, R, M));
  }
  MLM_STATUS_TRY(layernorm(v, s.h, v->norm_f_w, v->norm_f_b, R, M, v->msc_ln_eps, s.normed));
  MLM_STATUS_TRY(v->gemm.linear(s.normed, v->p0_w, R, z.PH, M, s.wide, stream));
  MLM_STATUS_TRY(bias_act(v, s.wide, v->p0_b, R, z.PH, true, nullptr, s.act));
  MLM_STATUS_TRY(v->gemm.linear(s.act, v->p2_w, R, z.L, z.PH, s.out, stream));
  MLM_STATUS_TRY(bias_act(v, s.out, v->p2_b, R, z.L, true, nullptr, s.act));
  MLM_STATUS_TRY(v->gemm.linear(s.act, v->p4_w, R, z.L, z.L, s.rows, stream));
  return add_bias(s.rows, v->p4_b, R, z.L, stream);
}

}  // namespace

Status vision_create(const mlmamba_vision_desc& desc, mlmamba_vision** out) {
  *out = nullptr;
  auto v = std::make_unique<mlmamba_vision>();
  v->device = desc.device;
  MLM_STATUS_TRY(check_desc(desc, v.get()));
  MLM_CUDA_TRY(cudaSetDevice(desc.device));
  Carver sizing(nullptr);
  const Layout need = place(v.get(), sizing);
  const size_t total = sizing.used();
  // Everything is taken at once, before any weight is read: a vision half that does not fit fails
  // here and leaves the device as it found it.
  const cudaError_t e = cudaMalloc(&v->pool, total);
  if (e != cudaSuccess) {
    cudaGetLastError();
    v->pool = nullptr;
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    if (e == cudaErrorMemoryAllocation) {
      return fail(MLMAMBA_ERR_OUT_OF_MEMORY,
                  "out of GPU memory: the vision encoders and connector need " + mib(total) +
                      " (weights " + mib(need.weight_bytes) + ", scratch " +
                      mib(need.scratch_bytes) + ") on device " + std::to_string(desc.device) +
                      ", which has " + mib(free_b) + " free of " + mib(total_b));
    }
    return cuda_status(e, "allocation of the vision half's memory");
  }
  Carver real(v->pool);
  const Layout got = place(v.get(), real);
  v->weight_bytes = got.weight_bytes;
  v->scratch_bytes = got.scratch_bytes;
  MLM_CUDA_TRY(cudaStreamCreateWithFlags(&v->stream, cudaStreamNonBlocking));
  MLM_CUDA_TRY(cudaEventCreate(&v->start));
  MLM_CUDA_TRY(cudaEventCreate(&v->stop));
  {
    void* p = nullptr;
    const size_t bytes = static_cast<size_t>(3) * v->image_size * v->image_size;
    Status s = cuda_status(cudaHostAlloc(&p, bytes, cudaHostAllocDefault),
                           "pinned memory for the picture");
    if (!s.ok()) return s;
    v->pinned_rgb = static_cast<uint8_t*>(p);
  }
  MLM_STATUS_TRY(upload_weights(v.get(), desc));
  MLM_STATUS_TRY(v->gemm.init(v->s.workspace, v->s.workspace_bytes));
  *out = v.release();
  return {};
}

Status vision_encode(mlmamba_vision* v, const uint8_t* rgb, int size, float* rows_out,
                     size_t n_floats) {
  if (!v || !rgb || !rows_out) return fail(MLMAMBA_ERR_INVALID, "no vision, picture or output");
  if (size != v->image_size)
    return fail(MLMAMBA_ERR_INVALID, "the picture is " + std::to_string(size) +
                                         " pixels per side, the encoders expect " +
                                         std::to_string(v->image_size));
  const size_t want = static_cast<size_t>(v->rows) * v->llm_d_model;
  if (n_floats != want)
    return fail(MLMAMBA_ERR_INVALID, "the output holds " + std::to_string(n_floats) +
                                         " values, the rows are " + std::to_string(want));
  std::lock_guard<std::mutex> lock(v->mutex);
  MLM_CUDA_TRY(cudaSetDevice(v->device));
  cudaStream_t stream = v->stream;
  if (v->poison) MLM_CUDA_TRY(cudaMemsetAsync(v->scratch_begin, 0xff, v->scratch_bytes, stream));
  // The previous call has finished (it synchronised), so the pinned buffer is free to refill.
  const size_t bytes = static_cast<size_t>(3) * size * size;
  std::memcpy(v->pinned_rgb, rgb, bytes);
  MLM_CUDA_TRY(cudaEventRecord(v->start, stream));
  MLM_CUDA_TRY(cudaMemcpyAsync(v->s.rgb, v->pinned_rgb, bytes, cudaMemcpyHostToDevice, stream));
  int offset = 0;
  for (const VitDev& e : v->encoders) {
    MLM_STATUS_TRY(run_encoder(v, e, offset));
    offset += e.c.dim;
  }
  MLM_STATUS_TRY(run_connector(v));
  MLM_CUDA_TRY(
      cudaMemcpyAsync(rows_out, v->s.rows, sizeof(float) * want, cudaMemcpyDeviceToHost, stream));
  MLM_CUDA_TRY(cudaEventRecord(v->stop, stream));
  MLM_CUDA_TRY(cudaStreamSynchronize(stream));
  MLM_CUDA_TRY(cudaEventElapsedTime(&v->last_ms, v->start, v->stop));
  return {};
}

}  // namespace mlmamba::cuda
