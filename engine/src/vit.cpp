#include "vit.h"

#include <omp.h>

#include <cmath>
#include <cstring>

#include "cpu_ops.h"

namespace mlmamba {

Result<VitEncoder> VitEncoder::load(const WeightStore& store, const VitConfig& c, int image_size,
                                    F32Weights* arena) {
  VitEncoder e;
  e.c_ = c;
  e.grid_ = image_size / c.patch_size;
  const std::string p = "vision_backbone." + c.name + ".";
  const int64_t D = c.dim, P = c.patch_size, H = c.mlp_hidden, G = e.grid_;
  MLM_ASSIGN_OR_RETURN(e.patch_w_, arena->get(store, p + "patch_embed.proj.weight", {D, 3, P, P}));
  MLM_ASSIGN_OR_RETURN(e.patch_b_, arena->get(store, p + "patch_embed.proj.bias", {D}));
  MLM_ASSIGN_OR_RETURN(e.pos_embed_, arena->get(store, p + "pos_embed", {1, G * G, D}));
  if (c.class_token) {
    MLM_ASSIGN_OR_RETURN(e.cls_token_, arena->get(store, p + "cls_token", {1, 1, D}));
  }
  if (c.register_tokens > 0) {
    MLM_ASSIGN_OR_RETURN(e.reg_token_,
                         arena->get(store, p + "reg_token", {1, c.register_tokens, D}));
  }
  for (int j = 0; j <= c.feature_layer; ++j) {
    const std::string b = p + "blocks." + std::to_string(j) + ".";
    VitBlockWeights w;
    MLM_ASSIGN_OR_RETURN(w.norm1_w, arena->get(store, b + "norm1.weight", {D}));
    MLM_ASSIGN_OR_RETURN(w.norm1_b, arena->get(store, b + "norm1.bias", {D}));
    MLM_ASSIGN_OR_RETURN(w.qkv_w, arena->get(store, b + "attn.qkv.weight", {3 * D, D}));
    MLM_ASSIGN_OR_RETURN(w.qkv_b, arena->get(store, b + "attn.qkv.bias", {3 * D}));
    MLM_ASSIGN_OR_RETURN(w.proj_w, arena->get(store, b + "attn.proj.weight", {D, D}));
    MLM_ASSIGN_OR_RETURN(w.proj_b, arena->get(store, b + "attn.proj.bias", {D}));
    MLM_ASSIGN_OR_RETURN(w.norm2_w, arena->get(store, b + "norm2.weight", {D}));
    MLM_ASSIGN_OR_RETURN(w.norm2_b, arena->get(store, b + "norm2.bias", {D}));
    MLM_ASSIGN_OR_RETURN(w.fc1_w, arena->get(store, b + "mlp.fc1.weight", {H, D}));
    MLM_ASSIGN_OR_RETURN(w.fc1_b, arena->get(store, b + "mlp.fc1.bias", {H}));
    MLM_ASSIGN_OR_RETURN(w.fc2_w, arena->get(store, b + "mlp.fc2.weight", {D, H}));
    MLM_ASSIGN_OR_RETURN(w.fc2_b, arena->get(store, b + "mlp.fc2.bias", {D}));
    if (c.layer_scale) {
      MLM_ASSIGN_OR_RETURN(w.ls1, arena->get(store, b + "ls1.gamma", {D}));
      MLM_ASSIGN_OR_RETURN(w.ls2, arena->get(store, b + "ls2.gamma", {D}));
    }
    e.blocks_.push_back(w);
  }
  return e;
}

void VitEncoder::encode(const float* chw, int image_size, float* features) const {
  const int D = c_.dim, P = c_.patch_size, G = grid_, R = G * G, K = 3 * P * P;
  const int prefix = c_.prefix_tokens(), N = prefix + R;
  const int heads = c_.heads, hd = c_.head_dim();
  const size_t S = static_cast<size_t>(image_size);

  // Patch embedding as one matrix product: each patch unrolled in the conv weight's (c, y, x)
  // order. Pixels past the last whole patch are never seen, as with a stride-p convolution.
  std::vector<float> patches(static_cast<size_t>(R) * K);
  for (int gy = 0; gy < G; ++gy)
    for (int gx = 0; gx < G; ++gx) {
      float* dst = patches.data() + static_cast<size_t>(gy * G + gx) * K;
      for (int ch = 0; ch < 3; ++ch)
        for (int y = 0; y < P; ++y) {
          const float* src = chw + ch * S * S + (static_cast<size_t>(gy) * P + y) * S +
                             static_cast<size_t>(gx) * P;
          std::memcpy(dst + (ch * P + y) * P, src, sizeof(float) * P);
        }
    }
  std::vector<float> x(static_cast<size_t>(N) * D);
  cpu::linear(patches.data(), R, K, patch_w_, patch_b_, D,
              x.data() + static_cast<size_t>(prefix) * D);
  for (size_t i = 0; i < static_cast<size_t>(R) * D; ++i)
    x[static_cast<size_t>(prefix) * D + i] += pos_embed_[i];
  // Prefix tokens carry no position embedding (DINOv2 with registers).
  int t = 0;
  if (cls_token_)
    std::memcpy(x.data() + static_cast<size_t>(t++) * D, cls_token_, sizeof(float) * D);
  for (int r = 0; r < c_.register_tokens; ++r)
    std::memcpy(x.data() + static_cast<size_t>(t++) * D, reg_token_ + static_cast<size_t>(r) * D,
                sizeof(float) * D);

  std::vector<float> h(static_cast<size_t>(N) * D), qkv(static_cast<size_t>(N) * 3 * D),
      attn(static_cast<size_t>(N) * D), mlp(static_cast<size_t>(N) * c_.mlp_hidden),
      out(static_cast<size_t>(N) * D);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int nt = cpu::threads();
  std::vector<std::vector<float>> scores(nt, std::vector<float>(static_cast<size_t>(N) * N));
  auto residual_add = [&](const float* gamma) {
    for (int i = 0; i < N; ++i) {
      float* xi = x.data() + static_cast<size_t>(i) * D;
      const float* oi = out.data() + static_cast<size_t>(i) * D;
      if (gamma) {
        for (int k = 0; k < D; ++k) xi[k] += gamma[k] * oi[k];
      } else {
        for (int k = 0; k < D; ++k) xi[k] += oi[k];
      }
    }
  };
  for (const VitBlockWeights& w : blocks_) {
    for (int i = 0; i < N; ++i)
      cpu::layernorm(x.data() + static_cast<size_t>(i) * D, w.norm1_w, w.norm1_b, D, c_.norm_eps,
                     h.data() + static_cast<size_t>(i) * D);
    cpu::linear(h.data(), N, D, w.qkv_w, w.qkv_b, 3 * D, qkv.data());
    // Softmax attention per head; the N x N scores of one head at a time per thread.
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (int hh = 0; hh < heads; ++hh) {
      float* sc = scores[omp_get_thread_num()].data();
      const float* q = qkv.data() + static_cast<size_t>(hh) * hd;
      const float* k = q + D;
      const float* v = q + 2 * D;
      cpu::gemm(false, true, N, N, hd, scale, q, 3 * D, k, 3 * D, 0.0f, sc, N);
      for (int i = 0; i < N; ++i) {
        float* row = sc + static_cast<size_t>(i) * N;
        float m = row[0];
        for (int j = 1; j < N; ++j) m = std::max(m, row[j]);
        double sum = 0;
        for (int j = 0; j < N; ++j) {
          row[j] = std::exp(row[j] - m);
          sum += row[j];
        }
        const float inv = static_cast<float>(1.0 / sum);
        for (int j = 0; j < N; ++j) row[j] *= inv;
      }
      cpu::gemm(false, false, N, hd, N, 1.0f, sc, N, v, 3 * D, 0.0f,
                attn.data() + static_cast<size_t>(hh) * hd, D);
    }
    cpu::linear(attn.data(), N, D, w.proj_w, w.proj_b, D, out.data());
    residual_add(w.ls1);
    for (int i = 0; i < N; ++i)
      cpu::layernorm(x.data() + static_cast<size_t>(i) * D, w.norm2_w, w.norm2_b, D, c_.norm_eps,
                     h.data() + static_cast<size_t>(i) * D);
    cpu::linear(h.data(), N, D, w.fc1_w, w.fc1_b, c_.mlp_hidden, mlp.data());
    cpu::gelu(mlp.data(), mlp.size());
    cpu::linear(mlp.data(), N, c_.mlp_hidden, w.fc2_w, w.fc2_b, D, out.data());
    residual_add(w.ls2);
  }
  std::memcpy(features, x.data() + static_cast<size_t>(prefix) * D, sizeof(float) * R * D);
}

}  // namespace mlmamba
