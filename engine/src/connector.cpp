#include "connector.h"

#include <algorithm>
#include <cstring>

#include "cpu_ops.h"

namespace mlmamba {
namespace {

// Row order reversed: the backward direction scans the patch sequence from its end.
void reverse_rows(const float* in, int T, size_t width, float* out) {
  for (int t = 0; t < T; ++t)
    std::memcpy(out + (T - 1 - t) * width, in + t * width, sizeof(float) * width);
}

}  // namespace

Result<Connector> Connector::load(const WeightStore& store, const VisionConfig& v, int llm_d_model,
                                  F32Weights* arena) {
  Connector c;
  c.v_ = v;
  c.llm_d_model_ = llm_d_model;
  const int64_t F = v.feature_dim(), M = v.mlp_out, PH = v.projector_hidden, L = llm_d_model;
  MLM_ASSIGN_OR_RETURN(c.mlp_w_, arena->get(store, "mlp.0.weight", {M, F}));
  MLM_ASSIGN_OR_RETURN(c.mlp_b_, arena->get(store, "mlp.0.bias", {M}));
  const Mamba2Dims& d = v.msc;
  for (int l = 0; l < v.msc_layers; ++l) {
    const std::string p = "bidirectional_mamba.layers." + std::to_string(l) + ".";
    const std::string mp = p + "mixer.";
    MscLayerWeights w;
    MLM_ASSIGN_OR_RETURN(w.in_proj, arena->get(store, mp + "in_proj.weight", {d.d_in_proj(), M}));
    MLM_ASSIGN_OR_RETURN(w.out_proj, arena->get(store, mp + "out_proj.weight", {M, d.d_inner}));
    MLM_ASSIGN_OR_RETURN(w.norm, arena->get(store, mp + "norm.weight", {d.d_inner}));
    MLM_ASSIGN_OR_RETURN(w.forward, load_scan(store, mp, "", d, arena));
    MLM_ASSIGN_OR_RETURN(w.backward, load_scan(store, mp, "_b", d, arena));
    MLM_ASSIGN_OR_RETURN(w.ln_w, arena->get(store, p + "norm.weight", {M}));
    MLM_ASSIGN_OR_RETURN(w.ln_b, arena->get(store, p + "norm.bias", {M}));
    MLM_ASSIGN_OR_RETURN(w.w1, arena->get(store, p + "mlp.w1.weight", {M, M}));
    MLM_ASSIGN_OR_RETURN(w.b1, arena->get(store, p + "mlp.w1.bias", {M}));
    MLM_ASSIGN_OR_RETURN(w.w2, arena->get(store, p + "mlp.w2.weight", {M, M}));
    MLM_ASSIGN_OR_RETURN(w.b2, arena->get(store, p + "mlp.w2.bias", {M}));
    MLM_ASSIGN_OR_RETURN(w.w3, arena->get(store, p + "mlp.w3.weight", {M, M}));
    MLM_ASSIGN_OR_RETURN(w.b3, arena->get(store, p + "mlp.w3.bias", {M}));
    c.layers_.push_back(w);
  }
  MLM_ASSIGN_OR_RETURN(c.norm_f_w_, arena->get(store, "bidirectional_mamba.norm_f.weight", {M}));
  MLM_ASSIGN_OR_RETURN(c.norm_f_b_, arena->get(store, "bidirectional_mamba.norm_f.bias", {M}));
  MLM_ASSIGN_OR_RETURN(c.p0_w_, arena->get(store, "projector.projector.0.weight", {PH, M}));
  MLM_ASSIGN_OR_RETURN(c.p0_b_, arena->get(store, "projector.projector.0.bias", {PH}));
  MLM_ASSIGN_OR_RETURN(c.p2_w_, arena->get(store, "projector.projector.2.weight", {L, PH}));
  MLM_ASSIGN_OR_RETURN(c.p2_b_, arena->get(store, "projector.projector.2.bias", {L}));
  MLM_ASSIGN_OR_RETURN(c.p4_w_, arena->get(store, "projector.projector.4.weight", {L, L}));
  MLM_ASSIGN_OR_RETURN(c.p4_b_, arena->get(store, "projector.projector.4.bias", {L}));
  return c;
}

void Connector::bimamba(const MscLayerWeights& w, const float* h, int T, float* out,
                        ScanForm form) const {
  const Mamba2Dims& d = v_.msc;
  const size_t W = d.d_in_proj(), I = d.d_inner;
  std::vector<float> zxbcdt(T * W), reversed(T * W), y_fwd(T * I), y_bwd_rev(T * I), y(T * I);
  cpu::linear(h, T, d.d_model, w.in_proj, nullptr, d.d_in_proj(), zxbcdt.data());
  MixerState state;
  state.init(d);
  mixer_inner(d, w.forward, w.norm, zxbcdt.data(), T, &state, y_fwd.data(), form);
  // The backward direction sees the reversed sequence, z included, with its own conv/dt/A/D.
  reverse_rows(zxbcdt.data(), T, W, reversed.data());
  state.clear();
  mixer_inner(d, w.backward, w.norm, reversed.data(), T, &state, y_bwd_rev.data(), form);
  reverse_rows(y_bwd_rev.data(), T, I, y.data());
  for (size_t i = 0; i < y.size(); ++i) y[i] = 0.5f * (y_fwd[i] + y[i]);
  cpu::linear(y.data(), T, d.d_inner, w.out_proj, nullptr, d.d_model, out);
}

void Connector::run(const float* features, int rows, float* out, Trace* trace,
                    ScanForm form) const {
  const int M = v_.mlp_out;
  const size_t n = static_cast<size_t>(rows) * M;
  std::vector<float> h(n), tmp(n), a(n), b(n);
  cpu::linear(features, rows, v_.feature_dim(), mlp_w_, mlp_b_, M, h.data());
  cpu::gelu(h.data(), n);
  if (trace) trace->mlp = h;
  for (const MscLayerWeights& w : layers_) {
    // No norm before the mixer: the released connector adds BiMamba2(h) to h directly.
    bimamba(w, h.data(), rows, tmp.data(), form);
    for (size_t i = 0; i < n; ++i) h[i] += tmp[i];
    for (int t = 0; t < rows; ++t)
      cpu::layernorm(h.data() + static_cast<size_t>(t) * M, w.ln_w, w.ln_b, M,
                     v_.msc_layer_norm_eps, tmp.data() + static_cast<size_t>(t) * M);
    cpu::linear(tmp.data(), rows, M, w.w1, w.b1, M, a.data());
    cpu::linear(tmp.data(), rows, M, w.w2, w.b2, M, b.data());
    for (size_t i = 0; i < n; ++i) a[i] = cpu::silu(a[i]) * b[i];
    cpu::linear(a.data(), rows, M, w.w3, w.b3, M, tmp.data());
    for (size_t i = 0; i < n; ++i) h[i] += tmp[i];
  }
  for (int t = 0; t < rows; ++t)
    cpu::layernorm(h.data() + static_cast<size_t>(t) * M, norm_f_w_, norm_f_b_, M,
                   v_.msc_layer_norm_eps, tmp.data() + static_cast<size_t>(t) * M);
  if (trace) trace->msc = tmp;
  std::vector<float> p0(static_cast<size_t>(rows) * v_.projector_hidden),
      p2(static_cast<size_t>(rows) * llm_d_model_);
  cpu::linear(tmp.data(), rows, M, p0_w_, p0_b_, v_.projector_hidden, p0.data());
  cpu::gelu(p0.data(), p0.size());
  cpu::linear(p0.data(), rows, v_.projector_hidden, p2_w_, p2_b_, llm_d_model_, p2.data());
  cpu::gelu(p2.data(), p2.size());
  cpu::linear(p2.data(), rows, llm_d_model_, p4_w_, p4_b_, llm_d_model_, out);
}

}  // namespace mlmamba
