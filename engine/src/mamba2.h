// The Mamba-2 mixer and language model on the CPU, fp32 (docs/MODEL.md §3).
//
// Layouts are token-major: a sequence of T rows of `width` floats. The scan has two forms that
// compute the same function: the plain per-token recurrence (the reference) and the chunked SSD
// form used for prefill; tests hold them equal at every length.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config.h"
#include "mlmamba/result.h"
#include "safetensors.h"

namespace mlmamba {

// The per-direction parameters of a scan (the MSC's backward direction has its own set).
struct ScanWeights {
  const float* conv_weight = nullptr;  // [conv_dim, d_conv]
  const float* conv_bias = nullptr;    // [conv_dim] or null
  const float* dt_bias = nullptr;      // [nheads]
  const float* A_log = nullptr;        // [nheads]
  const float* D = nullptr;            // [nheads]
};

struct MixerWeights {
  const float* in_proj = nullptr;  // [d_in_proj, d_model]
  const float* in_proj_bias = nullptr;
  ScanWeights scan;
  const float* norm = nullptr;      // gated RMSNorm weight [d_inner]
  const float* out_proj = nullptr;  // [d_model, d_inner]
  const float* out_proj_bias = nullptr;
};

// Recurrent state of one mixer: what a follow-up token needs of everything before it.
struct MixerState {
  std::vector<float> conv;  // last d_conv-1 pre-conv xBC rows, oldest first: [d_conv-1, conv_dim]
  std::vector<float> ssm;   // [nheads, headdim, d_state]
  void init(const Mamba2Dims& d);
  void clear();
};

enum class ScanForm { kChunked, kRecurrent };

// Causal depthwise conv1d over xBC columns with history, then SiLU. `xbc` has row stride `stride`;
// the result goes to `out` [T, conv_dim]; the history is advanced.
void conv1d_silu(const Mamba2Dims& d, const ScanWeights& w, const float* xbc, int stride, int T,
                 float* history, float* out);

// The selective scan over T tokens. x [T, d_inner], B and C [T, ngroups*d_state] (each with its own
// row stride), dt [T, nheads] already softplus'ed. Adds D*x, writes y [T, d_inner], advances `ssm`.
struct ScanInputs {
  const float* x;
  int x_stride;
  const float* B;
  const float* C;
  int bc_stride;
  const float* dt;
  int dt_stride;
};
void ssd_scan(const Mamba2Dims& d, const ScanWeights& w, const ScanInputs& in, int T, float* ssm,
              float* y, ScanForm form);

// y * silu(z) normalised in groups of norm_group_size, times weight. In place on y.
void gated_rmsnorm(const Mamba2Dims& d, const float* weight, const float* z, int z_stride, int T,
                   float* y);

// From the in_proj output [T, d_in_proj] ([z | xBC | dt] per row) to the gated-normed scan output
// y [T, d_inner] of one direction. The MSC runs it twice, once per direction.
void mixer_inner(const Mamba2Dims& d, const ScanWeights& scan, const float* norm,
                 const float* zxbcdt, int T, MixerState* state, float* y,
                 ScanForm form = ScanForm::kChunked);

// One mixer over T tokens: x [T, d_model] -> out [T, d_model], continuing from `state`.
void mixer_forward(const Mamba2Dims& d, const MixerWeights& w, const float* x, int T,
                   MixerState* state, float* out, ScanForm form = ScanForm::kChunked);

// Weights converted to fp32, owned or borrowed from an f32 mapping.
class F32Weights {
 public:
  // Looks up `name`, checks its shape, returns fp32 data that lives as long as this object.
  Result<const float*> get(const WeightStore& store, const std::string& name,
                           const std::vector<int64_t>& shape);
  const float* optional(const WeightStore& store, const std::string& name,
                        const std::vector<int64_t>& shape, Result<void>* status);
  int64_t parameters() const { return parameters_; }

 private:
  std::vector<std::unique_ptr<float[]>> owned_;
  int64_t parameters_ = 0;
};

// conv1d<suffix>.*, dt_bias<suffix>, A_log<suffix>, D<suffix> under `prefix` (suffix "_b": the
// MSC's backward direction).
Result<ScanWeights> load_scan(const WeightStore& store, const std::string& prefix,
                              const std::string& suffix, const Mamba2Dims& d, F32Weights* arena);
Result<MixerWeights> load_mixer(const WeightStore& store, const std::string& prefix,
                                const Mamba2Dims& d, F32Weights* arena);

struct LmState {
  std::vector<MixerState> layers;
};

// Embedding -> n_layer x (add, RMSNorm, mixer) -> final RMSNorm -> tied or untied head.
class Mamba2Lm {
 public:
  static Result<std::unique_ptr<Mamba2Lm>> load(const WeightStore& store,
                                                const ModelConfig& config);

  const LlmConfig& config() const { return config_; }
  int64_t parameters() const { return arena_.parameters(); }
  LmState new_state() const;

  const float* embedding_row(int32_t id) const;
  // Runs T input rows (embeddings) through the model, continuing from `state`; writes the logits of
  // the last row [vocab_size]. Long inputs are processed in segments, so memory stays bounded.
  // Returns false when `abort` was raised part-way (the state is then partly advanced).
  bool forward(const float* rows, int T, LmState* state, float* last_logits,
               ScanForm form = ScanForm::kChunked, const std::atomic<bool>* abort = nullptr) const;
  bool forward_ids(const int32_t* ids, int T, LmState* state, float* last_logits,
                   ScanForm form = ScanForm::kChunked,
                   const std::atomic<bool>* abort = nullptr) const;
  // Final hidden states of every row (after norm_f) and after each layer: for golden tests.
  void forward_trace(const float* rows, int T, std::vector<std::vector<float>>* after_layer,
                     std::vector<float>* final_norm) const;

 private:
  Mamba2Lm() = default;
  int segment_length() const;
  bool run_segment(const float* rows, int T, LmState* state, float* last_logits, ScanForm form,
                   std::vector<std::vector<float>>* after_layer, std::vector<float>* final_norm,
                   const std::atomic<bool>* abort) const;

  LlmConfig config_;
  F32Weights arena_;
  const float* embedding_ = nullptr;  // [vocab_size, d_model]
  const float* lm_head_ = nullptr;    // [vocab_size, d_model]; the embedding when tied
  const float* norm_f_ = nullptr;
  std::vector<const float*> layer_norm_;
  std::vector<MixerWeights> mixers_;
};

}  // namespace mlmamba
