// From the encoders' concatenated features to rows the language model reads:
// mlp (Linear + GELU) -> MSC (bidirectional Mamba-2 + SwiGLU, as released) -> projector.
#pragma once

#include <vector>

#include "config.h"
#include "mamba2.h"
#include "safetensors.h"

namespace mlmamba {

struct MscLayerWeights {
  const float* in_proj = nullptr;
  const float* out_proj = nullptr;
  const float* norm = nullptr;  // gated RMSNorm weight, shared by both directions
  ScanWeights forward, backward;
  const float *ln_w = nullptr, *ln_b = nullptr;
  const float *w1 = nullptr, *b1 = nullptr, *w2 = nullptr, *b2 = nullptr, *w3 = nullptr,
              *b3 = nullptr;
};

class Connector {
 public:
  static Result<Connector> load(const WeightStore& store, const VisionConfig& vision,
                                int llm_d_model, F32Weights* arena);

  // features [rows, feature_dim] -> out [rows, llm_d_model]. The stage outputs can be captured for
  // golden tests.
  struct Trace {
    std::vector<float> mlp, msc;
  };
  void run(const float* features, int rows, float* out, Trace* trace = nullptr,
           ScanForm form = ScanForm::kChunked) const;

  // One bidirectional Mamba-2 over the whole sequence (no state carried in or out).
  void bimamba(const MscLayerWeights& w, const float* h, int T, float* out, ScanForm form) const;

 private:
  VisionConfig v_;
  int llm_d_model_ = 0;
  const float *mlp_w_ = nullptr, *mlp_b_ = nullptr;
  std::vector<MscLayerWeights> layers_;
  const float *norm_f_w_ = nullptr, *norm_f_b_ = nullptr;
  const float *p0_w_ = nullptr, *p0_b_ = nullptr, *p2_w_ = nullptr, *p2_b_ = nullptr,
              *p4_w_ = nullptr, *p4_b_ = nullptr;
};

}  // namespace mlmamba
