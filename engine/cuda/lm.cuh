// The Mamba-2 language model on one CUDA device (docs/MODEL.md §3):
//   embedding -> n_layer x (residual add + RMSNorm, mixer) -> norm_f -> tied or untied head.
// The mixer: in_proj (cuBLASLt) -> conv1d + SiLU -> scan (chunked SSD for prompts, recurrence
// for one token) -> gated RMSNorm -> out_proj (cuBLASLt). The residual stream, the scan and the
// states are fp32; the matrices and the products' inputs are bf16 with fp32 accumulation.
//
// Memory: one device allocation made at load holds the weights and the scratch of one prefill
// segment (max_segment rows); a conversation's state is its own allocation. The decode step of
// each state is captured once as a CUDA graph and replayed; its token id lives in device memory,
// where the argmax of the previous step writes it.
#pragma once

#include <mutex>
#include <string>
#include <vector>

#include "common.cuh"
#include "gemm.cuh"

namespace mlmamba::cuda {

struct LmDims {
  int d_model, n_layer, vocab, d_inner, d_state, headdim, nheads, ngroups, d_conv, chunk_size;
  int group_size;
  float eps, mixer_eps;
  bool proj_bias, conv_bias;
  int segment;  // rows per prefill pass, whole chunks
  int scan_form;
  bool poison;
  int conv_dim() const { return d_inner + 2 * ngroups * d_state; }
  int d_in_proj() const { return 2 * d_inner + 2 * ngroups * d_state + nheads; }
  size_t conv_state_floats() const { return static_cast<size_t>(d_conv - 1) * conv_dim(); }
  size_t ssm_state_floats() const { return static_cast<size_t>(nheads) * headdim * d_state; }
  size_t layer_state_floats() const { return conv_state_floats() + ssm_state_floats(); }
};

struct LayerWeights {
  float* norm = nullptr;
  bf16* in_proj = nullptr;
  float* in_proj_bias = nullptr;
  float* conv_weight = nullptr;
  float* conv_bias = nullptr;
  float* dt_bias = nullptr;
  float* A_log = nullptr;
  float* D = nullptr;
  float* mixer_norm = nullptr;
  bf16* out_proj = nullptr;
  float* out_proj_bias = nullptr;
};

struct Scratch {
  int32_t* ids;
  float* residual;
  float* hidden;
  bf16* normed;
  float* zxbcdt;
  float* xbc;
  float* y;
  float* dt;
  float* cs;
  float* cb;
  float* chunk_states;
  float* states_in;
  float* logits;
  int32_t* token;
  void* workspace;
  size_t workspace_bytes;
};

}  // namespace mlmamba::cuda

struct mlmamba_lm_state {
  mlmamba_lm* lm = nullptr;
  int device = 0;
  float* data = nullptr;  // n_layer x [conv_state | ssm_state]
  cudaGraphExec_t decode = nullptr;
};

struct mlmamba_lm {
  mlmamba::cuda::LmDims d{};
  int device = 0;
  std::mutex mutex;  // one call at a time: the scratch and the stream are shared by all states
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  float last_ms = 0.0f;
  void* pool = nullptr;
  size_t weight_bytes = 0, scratch_bytes = 0;
  char* scratch_begin = nullptr;
  int32_t* pinned_token = nullptr;
  mlmamba::cuda::bf16* embedding = nullptr;
  mlmamba::cuda::bf16* lm_head = nullptr;
  float* norm_f = nullptr;
  std::vector<mlmamba::cuda::LayerWeights> layers;
  mlmamba::cuda::Scratch s{};
  mlmamba::cuda::Gemm gemm;

  ~mlmamba_lm();
};

namespace mlmamba::cuda {

Status lm_create(const mlmamba_lm_desc& desc, mlmamba_lm** out);
Status state_create(mlmamba_lm* lm, mlmamba_lm_state** out);
void state_free(mlmamba_lm_state* st);
Status state_reset(mlmamba_lm* lm, mlmamba_lm_state* st);
Status state_copy(mlmamba_lm* lm, mlmamba_lm_state* dst, const mlmamba_lm_state* src);
Status state_transfer(mlmamba_lm* lm, mlmamba_lm_state* st, float* host_out, const float* host_in,
                      size_t n);
// rows (fp32) or ids: exactly one is set.
Status lm_feed(mlmamba_lm* lm, mlmamba_lm_state* st, const float* rows, const int32_t* ids, int T,
               float* logits, int32_t* argmax);
Status lm_decode(mlmamba_lm* lm, mlmamba_lm_state* st, int32_t id, float* logits, int32_t* argmax);
Status lm_generate_greedy(mlmamba_lm* lm, mlmamba_lm_state* st, int32_t first, int max_new,
                          int32_t eos, int32_t* out_ids, int* n_out);

}  // namespace mlmamba::cuda
