// The vision half of ML-Mamba on one CUDA device (docs/MODEL.md §1-2): the square RGB picture ->
// every ViT encoder up to its feature block -> features concatenated on channels -> mlp (Linear +
// GELU) -> the Mamba-2 Scan Connector (BiMamba2 + LayerNorm + SwiGLU per layer, then norm_f) ->
// projector -> rows for the language model.
//
// Precision: matrices resident in bf16, per-channel vectors in fp32; every product has bf16
// inputs and fp32 accumulation and output. The residual streams (ViT tokens, connector rows), the
// attention scores and softmax, the conv, the scan and every norm's statistics are fp32; only the
// inputs of the products (LayerNorm outputs, GELU / SwiGLU outputs, attention outputs, the gated
// norm's output) are rounded to bf16, as the language model does.
//
// Memory: one allocation at create holds the weights and the scratch of one picture.
#pragma once

#include <mutex>
#include <string>
#include <vector>

#include "common.cuh"
#include "gemm.cuh"

namespace mlmamba::cuda {

struct VitBlockDev {
  float *norm1_w = nullptr, *norm1_b = nullptr, *norm2_w = nullptr, *norm2_b = nullptr;
  bf16 *qkv_w = nullptr, *proj_w = nullptr, *fc1_w = nullptr, *fc2_w = nullptr;
  float *qkv_b = nullptr, *proj_b = nullptr, *fc1_b = nullptr, *fc2_b = nullptr;
  float *ls1 = nullptr, *ls2 = nullptr;
};

struct VitDev {
  mlmamba_vit_desc c{};
  std::string name;
  int grid = 0, tokens = 0;  // tokens = prefix + grid*grid
  bf16* patch_w = nullptr;   // [dim, 3*p*p]
  float* patch_b = nullptr;
  float* pos_embed = nullptr;  // [grid*grid, dim]
  float* cls_token = nullptr;
  float* reg_token = nullptr;
  std::vector<VitBlockDev> blocks;
  int prefix() const { return (c.class_token ? 1 : 0) + c.register_tokens; }
};

struct MscScanDev {
  float *conv_w = nullptr, *conv_b = nullptr, *dt_bias = nullptr, *A_log = nullptr, *D = nullptr;
};

struct MscLayerDev {
  bf16 *in_proj = nullptr, *out_proj = nullptr;
  float* norm = nullptr;
  MscScanDev fwd, bwd;
  float *ln_w = nullptr, *ln_b = nullptr;
  bf16 *w1 = nullptr, *w2 = nullptr, *w3 = nullptr;
  float *b1 = nullptr, *b2 = nullptr, *b3 = nullptr;
};

struct VisionScratch {
  uint8_t* rgb;     // [S, S, 3]
  bf16* patches;    // [R, 3*p*p] of the largest encoder
  float* x;         // [N, D] residual stream of the widest encoder
  bf16* normed;     // [max(N, R), max(D, F, M, I, PH, L)] products' inputs
  float* wide;      // [N, max(3D, mlp_hidden, W, PH, L)]
  float* out;       // [N, max(D, M)]
  bf16* act;        // [N, max(D, mlp_hidden)] GELU / attention output as products' inputs
  bf16* feats;      // [R, F]
  float* h;         // [R, M] connector residual stream
  float* reversed;  // [R, W] the backward direction's zxbcdt, rows reversed
  float* xbc;       // [R, conv_dim]
  float* y_fwd;     // [R, d_inner]
  float* y_bwd;     // [R, d_inner], in reversed order
  float* gate;      // [R, M] second SwiGLU branch
  float* conv_state;
  float* ssm_state;
  float *dt, *cs, *cb, *chunk_states, *states_in;
  float* rows;  // [R, L]
  void* workspace;
  size_t workspace_bytes;
};

}  // namespace mlmamba::cuda

struct mlmamba_vision {
  int device = 0;
  int image_size = 0, grid = 0, rows = 0;
  int mlp_out = 0, projector_hidden = 0, llm_d_model = 0, feature_dim = 0;
  float msc_ln_eps = 0.0f;
  bool poison = false;
  mlmamba_lm_desc msc{};  // the connector's mixer sizes in the language model's terms
  std::mutex mutex;
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  float last_ms = 0.0f;
  void* pool = nullptr;
  uint8_t* pinned_rgb = nullptr;
  size_t weight_bytes = 0, scratch_bytes = 0;
  char* scratch_begin = nullptr;
  std::vector<mlmamba::cuda::VitDev> encoders;
  mlmamba::cuda::bf16* mlp_w = nullptr;
  float* mlp_b = nullptr;
  std::vector<mlmamba::cuda::MscLayerDev> layers;
  float *norm_f_w = nullptr, *norm_f_b = nullptr;
  mlmamba::cuda::bf16 *p0_w = nullptr, *p2_w = nullptr, *p4_w = nullptr;
  float *p0_b = nullptr, *p2_b = nullptr, *p4_b = nullptr;
  mlmamba::cuda::VisionScratch s{};
  mlmamba::cuda::Gemm gemm;

  ~mlmamba_vision();
};

namespace mlmamba::cuda {

Status vision_create(const mlmamba_vision_desc& desc, mlmamba_vision** out);
Status vision_encode(mlmamba_vision* v, const uint8_t* rgb, int size, float* rows_out,
                     size_t n_floats);

}  // namespace mlmamba::cuda
