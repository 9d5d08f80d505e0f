#include "mamba2.h"

#include <omp.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <sstream>

#include "cpu_ops.h"

namespace mlmamba {
namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream o;
  o << '[';
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << ']';
  return o.str();
}

// Work large enough to pay for waking the thread pool.
bool parallel_worth(int64_t work) {
  return work > 32768;
}

// Per-head chunked scan (SSD). Each chunk is three small matrix products, run through BLAS:
//   Y  = (G o decay o dt) X            intra-chunk, G = C B^T of the head's group (precomputed)
//   Y += diag(exp cs) C S^T            what the carried state contributes
//   S  = exp(cs_last) S + (w o X)^T B  the state handed to the next chunk
void scan_head_chunked(const Mamba2Dims& d, int h, const ScanInputs& in, int T, const float* gram,
                       float A, float Dh, float* S, float* y, int y_stride) {
  const int P = d.headdim, N = d.d_state, Q = d.chunk_size;
  const int g = h / (d.nheads / d.ngroups);
  std::vector<float> cs(Q), M(static_cast<size_t>(Q) * Q), intra(static_cast<size_t>(Q) * P),
      inter(static_cast<size_t>(Q) * P), xw(static_cast<size_t>(Q) * P);
  for (int c0 = 0, ci = 0; c0 < T; c0 += Q, ++ci) {
    const int L = std::min(Q, T - c0);
    const float* G = gram + (static_cast<size_t>(ci) * d.ngroups + g) * Q * Q;
    const float* X = in.x + static_cast<size_t>(c0) * in.x_stride + static_cast<size_t>(h) * P;
    const float* B = in.B + static_cast<size_t>(c0) * in.bc_stride + static_cast<size_t>(g) * N;
    const float* C = in.C + static_cast<size_t>(c0) * in.bc_stride + static_cast<size_t>(g) * N;
    const float* dt = in.dt + static_cast<size_t>(c0) * in.dt_stride + h;
    float run = 0;
    for (int l = 0; l < L; ++l) {
      run += dt[static_cast<size_t>(l) * in.dt_stride] * A;
      cs[l] = run;
    }
    // The decay is exp of a difference, never a ratio of exps: cs spans hundreds within a chunk
    // and exp(-cs) alone would overflow.
    for (int l = 0; l < L; ++l) {
      float* Ml = M.data() + static_cast<size_t>(l) * L;
      const float* Gl = G + static_cast<size_t>(l) * Q;
      for (int s = 0; s <= l; ++s) {
        Ml[s] = Gl[s] * std::exp(cs[l] - cs[s]) * dt[static_cast<size_t>(s) * in.dt_stride];
      }
      std::fill(Ml + l + 1, Ml + L, 0.0f);
    }
    cpu::gemm(false, false, L, P, L, 1.0f, M.data(), L, X, in.x_stride, 0.0f, intra.data(), P);
    cpu::gemm(false, true, L, P, N, 1.0f, C, in.bc_stride, S, N, 0.0f, inter.data(), P);
    for (int l = 0; l < L; ++l) {
      const float el = std::exp(cs[l]);
      const float* xl = X + static_cast<size_t>(l) * in.x_stride;
      float* __restrict yl =
          y + static_cast<size_t>(c0 + l) * y_stride + static_cast<size_t>(h) * P;
      const float* il = intra.data() + static_cast<size_t>(l) * P;
      const float* el_row = inter.data() + static_cast<size_t>(l) * P;
      for (int p = 0; p < P; ++p) yl[p] = il[p] + el * el_row[p] + Dh * xl[p];
    }
    const float last = cs[L - 1];
    for (int s = 0; s < L; ++s) {
      const float w = std::exp(last - cs[s]) * dt[static_cast<size_t>(s) * in.dt_stride];
      const float* xs = X + static_cast<size_t>(s) * in.x_stride;
      float* xws = xw.data() + static_cast<size_t>(s) * P;
      for (int p = 0; p < P; ++p) xws[p] = w * xs[p];
    }
    const float total = std::exp(last);
    for (size_t i = 0; i < static_cast<size_t>(P) * N; ++i) S[i] *= total;
    cpu::gemm(true, false, P, N, L, 1.0f, xw.data(), P, B, in.bc_stride, 1.0f, S, N);
  }
}

void scan_head_recurrent(const Mamba2Dims& d, int h, const ScanInputs& in, int T, float A, float Dh,
                         float* S, float* y, int y_stride) {
  const int P = d.headdim, N = d.d_state;
  const int g = h / (d.nheads / d.ngroups);
  for (int t = 0; t < T; ++t) {
    const size_t tt = static_cast<size_t>(t);
    const float dt = in.dt[tt * in.dt_stride + h];
    const float decay = std::exp(dt * A);
    const float* x = in.x + tt * in.x_stride + static_cast<size_t>(h) * P;
    const float* B = in.B + tt * in.bc_stride + static_cast<size_t>(g) * N;
    const float* C = in.C + tt * in.bc_stride + static_cast<size_t>(g) * N;
    float* yt = y + tt * y_stride + static_cast<size_t>(h) * P;
    for (int p = 0; p < P; ++p) {
      float* __restrict Sp = S + static_cast<size_t>(p) * N;
      const float dx = dt * x[p];
      float s = 0;
      for (int n = 0; n < N; ++n) {
        Sp[n] = decay * Sp[n] + dx * B[n];
        s += Sp[n] * C[n];
      }
      yt[p] = s + Dh * x[p];
    }
  }
}

}  // namespace

void MixerState::init(const Mamba2Dims& d) {
  conv.assign(static_cast<size_t>(std::max(0, d.d_conv - 1)) * d.conv_dim(), 0.0f);
  ssm.assign(static_cast<size_t>(d.nheads) * d.headdim * d.d_state, 0.0f);
}

void MixerState::clear() {
  std::fill(conv.begin(), conv.end(), 0.0f);
  std::fill(ssm.begin(), ssm.end(), 0.0f);
}

void conv1d_silu(const Mamba2Dims& d, const ScanWeights& w, const float* xbc, int stride, int T,
                 float* history, float* out) {
  const int K = d.d_conv, CD = d.conv_dim(), H = K - 1;
  auto input = [&](int j, int c) -> float {
    return j >= 0 ? xbc[static_cast<size_t>(j) * stride + c]
                  : history[static_cast<size_t>(H + j) * CD + c];
  };
#pragma omp parallel for schedule(static) if (parallel_worth(static_cast <int64_t>(T) * CD * K))
  for (int t = 0; t < T; ++t) {
    float* o = out + static_cast<size_t>(t) * CD;
    for (int c = 0; c < CD; ++c) {
      float acc = w.conv_bias ? w.conv_bias[c] : 0.0f;
      const float* wc = w.conv_weight + static_cast<size_t>(c) * K;
      // Tap K-1 multiplies the current token (PyTorch's causal padding of K-1 zeros on the left).
      for (int k = 0; k < K; ++k) acc += wc[k] * input(t - H + k, c);
      o[c] = cpu::silu(acc);
    }
  }
  if (H == 0) return;
  // New history: the last H inputs of (old history ++ this sequence).
  std::vector<float> next(static_cast<size_t>(H) * CD);
  for (int r = 0; r < H; ++r) {
    const int j = T - H + r;
    for (int c = 0; c < CD; ++c) next[static_cast<size_t>(r) * CD + c] = input(j, c);
  }
  std::memcpy(history, next.data(), next.size() * sizeof(float));
}

void ssd_scan(const Mamba2Dims& d, const ScanWeights& w, const ScanInputs& in, int T, float* ssm,
              float* y, ScanForm form) {
  if (T <= 0) return;
  const int Q = d.chunk_size, N = d.d_state;
  const size_t state_per_head = static_cast<size_t>(d.headdim) * N;
  std::vector<float> gram;
  // A single token has nothing to gain from the chunked form.
  if (form == ScanForm::kChunked && T > 1) {
    const int chunks = (T + Q - 1) / Q;
    gram.assign(static_cast<size_t>(chunks) * d.ngroups * Q * Q, 0.0f);
    for (int ci = 0; ci < chunks; ++ci) {
      const int c0 = ci * Q, L = std::min(Q, T - c0);
      for (int g = 0; g < d.ngroups; ++g) {
        const float* C = in.C + static_cast<size_t>(c0) * in.bc_stride + static_cast<size_t>(g) * N;
        const float* B = in.B + static_cast<size_t>(c0) * in.bc_stride + static_cast<size_t>(g) * N;
        float* G = gram.data() + (static_cast<size_t>(ci) * d.ngroups + g) * Q * Q;
        cpu::gemm(false, true, L, L, N, 1.0f, C, in.bc_stride, B, in.bc_stride, 0.0f, G, Q);
      }
    }
  }
  const bool chunked = !gram.empty();
#pragma omp parallel for schedule( \
    dynamic, 1) if (parallel_worth(static_cast <int64_t>(T) * d.nheads * state_per_head))
  for (int h = 0; h < d.nheads; ++h) {
    const float A = -std::exp(w.A_log[h]);
    float* S = ssm + static_cast<size_t>(h) * state_per_head;
    if (chunked) {
      scan_head_chunked(d, h, in, T, gram.data(), A, w.D[h], S, y, d.d_inner);
    } else {
      scan_head_recurrent(d, h, in, T, A, w.D[h], S, y, d.d_inner);
    }
  }
}

void gated_rmsnorm(const Mamba2Dims& d, const float* weight, const float* z, int z_stride, int T,
                   float* y) {
  const int G = d.norm_group_size;
#pragma omp parallel for schedule(static) if (parallel_worth(static_cast <int64_t>(T) * d.d_inner))
  for (int t = 0; t < T; ++t) {
    float* yt = y + static_cast<size_t>(t) * d.d_inner;
    const float* zt = z + static_cast<size_t>(t) * z_stride;
    for (int i = 0; i < d.d_inner; ++i) yt[i] *= cpu::silu(zt[i]);
    for (int g0 = 0; g0 < d.d_inner; g0 += G) {
      cpu::rmsnorm(yt + g0, weight + g0, G, d.norm_eps, yt + g0);
    }
  }
}

void mixer_inner(const Mamba2Dims& d, const ScanWeights& scan, const float* norm,
                 const float* zxbcdt, int T, MixerState* state, float* y, ScanForm form) {
  const int W = d.d_in_proj(), CD = d.conv_dim();
  const float* z = zxbcdt;
  const float* xbc = z + d.d_inner;
  const float* dt_raw = xbc + CD;
  std::vector<float> conv_out(static_cast<size_t>(T) * CD);
  conv1d_silu(d, scan, xbc, W, T, state->conv.data(), conv_out.data());
  std::vector<float> dt(static_cast<size_t>(T) * d.nheads);
  for (int t = 0; t < T; ++t) {
    for (int h = 0; h < d.nheads; ++h) {
      dt[static_cast<size_t>(t) * d.nheads + h] =
          cpu::softplus(dt_raw[static_cast<size_t>(t) * W + h] + scan.dt_bias[h]);
    }
  }
  const int gn = d.ngroups * d.d_state;
  const ScanInputs in{
      conv_out.data(), CD,      conv_out.data() + d.d_inner, conv_out.data() + d.d_inner + gn, CD,
      dt.data(),       d.nheads};
  ssd_scan(d, scan, in, T, state->ssm.data(), y, form);
  gated_rmsnorm(d, norm, z, W, T, y);
}

void mixer_forward(const Mamba2Dims& d, const MixerWeights& w, const float* x, int T,
                   MixerState* state, float* out, ScanForm form) {
  std::vector<float> zxbcdt(static_cast<size_t>(T) * d.d_in_proj());
  cpu::linear(x, T, d.d_model, w.in_proj, w.in_proj_bias, d.d_in_proj(), zxbcdt.data());
  std::vector<float> y(static_cast<size_t>(T) * d.d_inner);
  mixer_inner(d, w.scan, w.norm, zxbcdt.data(), T, state, y.data(), form);
  cpu::linear(y.data(), T, d.d_inner, w.out_proj, w.out_proj_bias, d.d_model, out);
}

// ---------------------------------------------------------------------------------------------
// Weights

Result<const float*> F32Weights::get(const WeightStore& store, const std::string& name,
                                     const std::vector<int64_t>& shape) {
  const TensorView* t = store.find(name);
  if (!t)
    return make_error(ErrorCode::kNotFound, "tensor " + name + " is missing from the weights");
  if (t->shape != shape) {
    return make_error(
        ErrorCode::kCorruptFile,
        "tensor " + name + " has shape " + shape_str(t->shape) + ", expected " + shape_str(shape));
  }
  parameters_ += t->numel();
  // An aligned f32 tensor is used in place from the mapping: no copy, pages loaded on demand.
  if (t->dtype == DType::kF32 && reinterpret_cast<uintptr_t>(t->data) % alignof(float) == 0) {
    return reinterpret_cast<const float*>(t->data);
  }
  auto buf = std::make_unique<float[]>(static_cast<size_t>(t->numel()));
  convert_to_f32(*t, buf.get());
  // The widened copy is what runs; the file's pages for this tensor are not needed again. Without
  // this the mapping stays resident next to the copy (a 3.6B bf16 model peaked at 21 GB instead
  // of 14). The mapping is private and clean, so the pages come back from the file if ever read.
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(t->data) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(t->data) + t->nbytes) / page * page;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
  owned_.push_back(std::move(buf));
  return static_cast<const float*>(owned_.back().get());
}

const float* F32Weights::optional(const WeightStore& store, const std::string& name,
                                  const std::vector<int64_t>& shape, Result<void>* status) {
  if (!store.find(name)) return nullptr;
  auto r = get(store, name, shape);
  if (!r.ok()) {
    *status = r.error();
    return nullptr;
  }
  return *r;
}

Result<ScanWeights> load_scan(const WeightStore& store, const std::string& prefix,
                              const std::string& suffix, const Mamba2Dims& d, F32Weights* arena) {
  ScanWeights s;
  const int64_t CD = d.conv_dim();
  MLM_ASSIGN_OR_RETURN(
      s.conv_weight, arena->get(store, prefix + "conv1d" + suffix + ".weight", {CD, 1, d.d_conv}));
  if (d.conv_bias) {
    MLM_ASSIGN_OR_RETURN(s.conv_bias,
                         arena->get(store, prefix + "conv1d" + suffix + ".bias", {CD}));
  }
  MLM_ASSIGN_OR_RETURN(s.dt_bias, arena->get(store, prefix + "dt_bias" + suffix, {d.nheads}));
  MLM_ASSIGN_OR_RETURN(s.A_log, arena->get(store, prefix + "A_log" + suffix, {d.nheads}));
  MLM_ASSIGN_OR_RETURN(s.D, arena->get(store, prefix + "D" + suffix, {d.nheads}));
  return s;
}

Result<MixerWeights> load_mixer(const WeightStore& store, const std::string& prefix,
                                const Mamba2Dims& d, F32Weights* arena) {
  MixerWeights w;
  MLM_ASSIGN_OR_RETURN(w.in_proj,
                       arena->get(store, prefix + "in_proj.weight", {d.d_in_proj(), d.d_model}));
  MLM_ASSIGN_OR_RETURN(w.scan, load_scan(store, prefix, "", d, arena));
  MLM_ASSIGN_OR_RETURN(w.norm, arena->get(store, prefix + "norm.weight", {d.d_inner}));
  MLM_ASSIGN_OR_RETURN(w.out_proj,
                       arena->get(store, prefix + "out_proj.weight", {d.d_model, d.d_inner}));
  if (d.proj_bias) {
    MLM_ASSIGN_OR_RETURN(w.in_proj_bias,
                         arena->get(store, prefix + "in_proj.bias", {d.d_in_proj()}));
    MLM_ASSIGN_OR_RETURN(w.out_proj_bias, arena->get(store, prefix + "out_proj.bias", {d.d_model}));
  }
  return w;
}

// ---------------------------------------------------------------------------------------------
// Language model

Result<std::unique_ptr<Mamba2Lm>> Mamba2Lm::load(const WeightStore& store,
                                                 const ModelConfig& config) {
  std::unique_ptr<Mamba2Lm> lm(new Mamba2Lm());
  lm->config_ = config.llm;
  const LlmConfig& c = lm->config_;
  const int64_t D = c.mixer.d_model, V = c.vocab_size;
  MLM_ASSIGN_OR_RETURN(lm->embedding_, lm->arena_.get(store, config.embedding_key, {V, D}));
  Result<void> status;
  lm->lm_head_ = lm->arena_.optional(store, config.lm_head_key, {V, D}, &status);
  MLM_TRY(status);
  if (!lm->lm_head_) lm->lm_head_ = lm->embedding_;  // tied
  MLM_ASSIGN_OR_RETURN(lm->norm_f_,
                       lm->arena_.get(store, config.llm_prefix + "norm_f.weight", {D}));
  for (int i = 0; i < c.n_layer; ++i) {
    const std::string p = config.llm_prefix + "layers." + std::to_string(i) + ".";
    MLM_ASSIGN_OR_RETURN(const float* norm, lm->arena_.get(store, p + "norm.weight", {D}));
    lm->layer_norm_.push_back(norm);
    MLM_ASSIGN_OR_RETURN(MixerWeights mw, load_mixer(store, p + "mixer.", c.mixer, &lm->arena_));
    lm->mixers_.push_back(mw);
  }
  return lm;
}

LmState Mamba2Lm::new_state() const {
  LmState s;
  s.layers.resize(static_cast<size_t>(config_.n_layer));
  for (auto& m : s.layers) m.init(config_.mixer);
  return s;
}

const float* Mamba2Lm::embedding_row(int32_t id) const {
  return embedding_ + static_cast<size_t>(id) * config_.mixer.d_model;
}

bool Mamba2Lm::run_segment(const float* rows, int T, LmState* state, float* last_logits,
                           ScanForm form, std::vector<std::vector<float>>* after_layer,
                           std::vector<float>* final_norm, const std::atomic<bool>* abort) const {
  const int D = config_.mixer.d_model;
  const size_t n = static_cast<size_t>(T) * D;
  // The residual stream stays fp32 across layers, as the released model keeps it.
  std::vector<float> residual(rows, rows + n), hidden(n), normed(n);
  for (int i = 0; i < config_.n_layer; ++i) {
    if (abort && abort->load(std::memory_order_relaxed)) return false;
    if (i > 0) {
      for (size_t k = 0; k < n; ++k) residual[k] += hidden[k];
    }
    for (int t = 0; t < T; ++t) {
      const size_t o = static_cast<size_t>(t) * D;
      cpu::rmsnorm(residual.data() + o, layer_norm_[i], D, config_.norm_eps, normed.data() + o);
    }
    mixer_forward(config_.mixer, mixers_[i], normed.data(), T, &state->layers[i], hidden.data(),
                  form);
    if (after_layer) {
      std::vector<float> r = residual;
      for (size_t k = 0; k < n; ++k) r[k] += hidden[k];
      after_layer->push_back(std::move(r));
    }
  }
  for (size_t k = 0; k < n; ++k) residual[k] += hidden[k];
  if (final_norm) {
    final_norm->resize(n);
    for (int t = 0; t < T; ++t) {
      const size_t o = static_cast<size_t>(t) * D;
      cpu::rmsnorm(residual.data() + o, norm_f_, D, config_.norm_eps, final_norm->data() + o);
    }
  }
  if (last_logits) {
    std::vector<float> last(D);
    cpu::rmsnorm(residual.data() + static_cast<size_t>(T - 1) * D, norm_f_, D, config_.norm_eps,
                 last.data());
    cpu::linear(last.data(), 1, D, lm_head_, nullptr, config_.vocab_size, last_logits);
  }
  return true;
}

int Mamba2Lm::segment_length() const {
  // Segments of whole chunks keep the working set bounded for any prompt length while computing
  // exactly what one pass would (the state carries across segment ends like across chunk ends).
  const int Q = config_.mixer.chunk_size;
  return std::max(Q, (2048 / Q) * Q);
}

bool Mamba2Lm::forward(const float* rows, int T, LmState* state, float* last_logits, ScanForm form,
                       const std::atomic<bool>* abort) const {
  const int segment = segment_length(), D = config_.mixer.d_model;
  for (int t0 = 0; t0 < T; t0 += segment) {
    const int len = std::min(segment, T - t0);
    if (!run_segment(rows + static_cast<size_t>(t0) * D, len, state,
                     t0 + len == T ? last_logits : nullptr, form, nullptr, nullptr, abort)) {
      return false;
    }
  }
  return true;
}

bool Mamba2Lm::forward_ids(const int32_t* ids, int T, LmState* state, float* last_logits,
                           ScanForm form, const std::atomic<bool>* abort) const {
  const int segment = segment_length(), D = config_.mixer.d_model;
  std::vector<float> rows(static_cast<size_t>(std::min(segment, T)) * D);
  for (int t0 = 0; t0 < T; t0 += segment) {
    const int len = std::min(segment, T - t0);
    for (int t = 0; t < len; ++t) {
      std::memcpy(rows.data() + static_cast<size_t>(t) * D, embedding_row(ids[t0 + t]),
                  sizeof(float) * D);
    }
    if (!run_segment(rows.data(), len, state, t0 + len == T ? last_logits : nullptr, form, nullptr,
                     nullptr, abort)) {
      return false;
    }
  }
  return true;
}

void Mamba2Lm::forward_trace(const float* rows, int T, std::vector<std::vector<float>>* after_layer,
                             std::vector<float>* final_norm) const {
  LmState s = new_state();
  run_segment(rows, T, &s, nullptr, ScanForm::kChunked, after_layer, final_norm, nullptr);
}

}  // namespace mlmamba
