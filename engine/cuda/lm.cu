#include "lm.cuh"

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>

#include "argmax.cuh"
#include "conv1d.cuh"
#include "embedding.cuh"
#include "gated_rmsnorm.cuh"
#include "rmsnorm.cuh"
#include "ssm_scan.cuh"
#include "weights.cuh"

mlmamba_lm::~mlmamba_lm() {
  cudaSetDevice(device);
  if (stream) cudaStreamSynchronize(stream);
  if (start) cudaEventDestroy(start);
  if (stop) cudaEventDestroy(stop);
  if (stream) cudaStreamDestroy(stream);
  if (pinned_token) cudaFreeHost(pinned_token);
  if (pool) cudaFree(pool);
}

namespace mlmamba::cuda {
namespace {

constexpr size_t kWorkspaceBytes = size_t{32} << 20;  // cuBLASLt's recommendation for Hopper
constexpr int kDefaultSegment = 2048;
constexpr int kMaxSegment = 65535;  // grid.y of the conv kernel

Status check_dims(const mlmamba_lm_desc& in, LmDims* out) {
  auto bad = [](const std::string& m) { return fail(MLMAMBA_ERR_INVALID, m); };
  LmDims d{};
  d.d_model = in.d_model;
  d.n_layer = in.n_layer;
  d.vocab = in.vocab_size;
  d.d_inner = in.d_inner;
  d.d_state = in.d_state;
  d.headdim = in.headdim;
  d.nheads = in.nheads;
  d.ngroups = in.ngroups;
  d.d_conv = in.d_conv;
  d.chunk_size = in.chunk_size;
  d.group_size = in.norm_group_size;
  d.eps = in.norm_eps;
  d.mixer_eps = in.mixer_norm_eps;
  d.proj_bias = in.proj_bias != 0;
  d.conv_bias = in.conv_bias != 0;
  d.scan_form = in.scan_form;
  d.poison = in.poison != 0;
  if (d.d_model <= 0 || d.n_layer <= 0 || d.vocab <= 0 || d.d_inner <= 0 || d.d_state <= 0 ||
      d.headdim <= 0 || d.nheads <= 0 || d.ngroups <= 0 || d.d_conv <= 0 || d.chunk_size <= 0 ||
      d.group_size <= 0)
    return bad("every size of the language model must be positive");
  if (d.nheads * d.headdim != d.d_inner) return bad("nheads * headdim must equal d_inner");
  if (d.nheads % d.ngroups != 0) return bad("nheads must be a multiple of ngroups");
  if (d.d_inner % d.group_size != 0) return bad("d_inner must be a multiple of the norm group");
  if (!(d.eps > 0.0f) || !(d.mixer_eps > 0.0f)) return bad("norm epsilons must be positive");
  if (d.scan_form != MLMAMBA_SCAN_CHUNKED && d.scan_form != MLMAMBA_SCAN_RECURRENT)
    return bad("unknown scan form " + std::to_string(d.scan_form));
  if (d.d_state > kMaxDState)
    return fail(MLMAMBA_ERR_UNSUPPORTED, "d_state " + std::to_string(d.d_state) +
                                             " is above this module's limit of " +
                                             std::to_string(kMaxDState));
  if (d.headdim > 256 || d.chunk_size > 4096 || d.d_conv > 64)
    return fail(MLMAMBA_ERR_UNSUPPORTED,
                "headdim above 256, chunk_size above 4096 or d_conv above 64 has no kernel here");
  // Segments of whole chunks: a boundary between segments is then also a chunk boundary, and one
  // pass computes exactly what a single pass over the whole prompt would.
  const int want = in.max_segment > 0 ? in.max_segment : kDefaultSegment;
  d.segment = std::max(d.chunk_size, std::min(want, kMaxSegment) / d.chunk_size * d.chunk_size);
  *out = d;
  return {};
}

struct Layout {
  size_t weight_bytes = 0, scratch_bytes = 0;
};

// Places weights then scratch. `tied`: no separate head matrix.
Layout place(mlmamba_lm* lm, Carver& c, bool tied) {
  const LmDims& d = lm->d;
  const size_t D = d.d_model, V = d.vocab, CD = d.conv_dim(), W = d.d_in_proj();
  lm->embedding = c.take<bf16>(V * D);
  lm->lm_head = tied ? lm->embedding : c.take<bf16>(V * D);
  lm->norm_f = c.take<float>(D);
  lm->layers.assign(static_cast<size_t>(d.n_layer), LayerWeights{});
  for (LayerWeights& w : lm->layers) {
    w.norm = c.take<float>(D);
    w.in_proj = c.take<bf16>(W * D);
    if (d.proj_bias) w.in_proj_bias = c.take<float>(W);
    w.conv_weight = c.take<float>(CD * d.d_conv);
    if (d.conv_bias) w.conv_bias = c.take<float>(CD);
    w.dt_bias = c.take<float>(d.nheads);
    w.A_log = c.take<float>(d.nheads);
    w.D = c.take<float>(d.nheads);
    w.mixer_norm = c.take<float>(d.d_inner);
    w.out_proj = c.take<bf16>(D * d.d_inner);
    if (d.proj_bias) w.out_proj_bias = c.take<float>(D);
  }
  Layout l;
  l.weight_bytes = c.used();
  const size_t T = d.segment, chunks = T / d.chunk_size, Q = d.chunk_size;
  const size_t PN = static_cast<size_t>(d.headdim) * d.d_state;
  lm->scratch_begin = c.take<char>(0);
  const size_t scratch_offset = c.used();
  Scratch& s = lm->s;
  s.ids = c.take<int32_t>(T);
  s.residual = c.take<float>(T * D);
  s.hidden = c.take<float>(T * D);
  s.normed = c.take<bf16>(T * std::max<size_t>(D, d.d_inner));
  s.zxbcdt = c.take<float>(T * W);
  s.xbc = c.take<float>(T * CD);
  s.y = c.take<float>(T * d.d_inner);
  s.dt = c.take<float>(T * d.nheads);
  s.cs = c.take<float>(T * d.nheads);
  s.cb = c.take<float>(chunks * d.ngroups * Q * Q);
  s.chunk_states = c.take<float>(chunks * d.nheads * PN);
  s.states_in = c.take<float>(chunks * d.nheads * PN);
  s.logits = c.take<float>(V);
  s.token = c.take<int32_t>(1);
  s.workspace = c.take<char>(kWorkspaceBytes);
  s.workspace_bytes = kWorkspaceBytes;
  l.scratch_bytes = c.used() - scratch_offset;
  return l;
}

Status upload_weights(mlmamba_lm* lm, const mlmamba_lm_desc& desc, bool tied) {
  const LmDims& d = lm->d;
  const int64_t D = d.d_model, V = d.vocab, CD = d.conv_dim(), W = d.d_in_proj();
  std::map<std::string, ExpectedTensor> want;
  want["embedding.weight"] = {{V, D}, true, lm->embedding};
  if (!tied) want["lm_head.weight"] = {{V, D}, true, lm->lm_head};
  want["norm_f.weight"] = {{D}, false, lm->norm_f};
  for (int i = 0; i < d.n_layer; ++i) {
    const LayerWeights& w = lm->layers[static_cast<size_t>(i)];
    const std::string p = "layers." + std::to_string(i) + ".";
    const std::string m = p + "mixer.";
    want[p + "norm.weight"] = {{D}, false, w.norm};
    want[m + "in_proj.weight"] = {{W, D}, true, w.in_proj};
    if (d.proj_bias) want[m + "in_proj.bias"] = {{W}, false, w.in_proj_bias};
    want[m + "conv1d.weight"] = {{CD, 1, d.d_conv}, false, w.conv_weight};
    if (d.conv_bias) want[m + "conv1d.bias"] = {{CD}, false, w.conv_bias};
    want[m + "dt_bias"] = {{d.nheads}, false, w.dt_bias};
    want[m + "A_log"] = {{d.nheads}, false, w.A_log};
    want[m + "D"] = {{d.nheads}, false, w.D};
    want[m + "norm.weight"] = {{d.d_inner}, false, w.mixer_norm};
    want[m + "out_proj.weight"] = {{D, d.d_inner}, true, w.out_proj};
    if (d.proj_bias) want[m + "out_proj.bias"] = {{D}, false, w.out_proj_bias};
  }
  return upload_tensor_table(desc.tensors, desc.n_tensors, want, lm->stream, "this language model",
                             tied ? "lm_head.weight" : "");
}

float* conv_state(const mlmamba_lm* lm, const mlmamba_lm_state* st, int layer) {
  return st->data + static_cast<size_t>(layer) * lm->d.layer_state_floats();
}
float* ssm_state(const mlmamba_lm* lm, const mlmamba_lm_state* st, int layer) {
  return conv_state(lm, st, layer) + lm->d.conv_state_floats();
}

// Enqueues the layers over the T rows in s.residual; leaves the last mixer's output in s.hidden.
// `step`: the decode form (one token, conv step kernel, recurrence).
Status run_layers(mlmamba_lm* lm, mlmamba_lm_state* st, int T, bool step) {
  const LmDims& d = lm->d;
  const Scratch& s = lm->s;
  const int D = d.d_model, W = d.d_in_proj(), CD = d.conv_dim();
  cudaStream_t stream = lm->stream;
  const bool chunked = !step && T > 1 && d.scan_form == MLMAMBA_SCAN_CHUNKED;
  for (int i = 0; i < d.n_layer; ++i) {
    const LayerWeights& w = lm->layers[static_cast<size_t>(i)];
    MLM_STATUS_TRY(add_rmsnorm(
        AddRmsNorm{s.residual, i > 0 ? s.hidden : nullptr, w.norm, T, D, d.eps, s.normed}, stream));
    MLM_STATUS_TRY(lm->gemm.linear(s.normed, w.in_proj, T, W, D, s.zxbcdt, stream));
    MLM_STATUS_TRY(add_bias(s.zxbcdt, w.in_proj_bias, T, W, stream));
    const Conv1d conv{s.zxbcdt + d.d_inner,
                      W,
                      conv_state(lm, st, i),
                      w.conv_weight,
                      w.conv_bias,
                      T,
                      CD,
                      d.d_conv,
                      s.xbc};
    MLM_STATUS_TRY(step ? conv1d_silu_step(conv, stream) : conv1d_silu(conv, stream));
    const SsmScan scan{s.xbc,
                       s.zxbcdt + d.d_inner + CD,
                       W,
                       w.dt_bias,
                       w.A_log,
                       w.D,
                       T,
                       d.nheads,
                       d.headdim,
                       d.d_state,
                       d.ngroups,
                       d.chunk_size,
                       ssm_state(lm, st, i),
                       s.y,
                       s.dt,
                       s.cs,
                       s.cb,
                       s.chunk_states,
                       s.states_in};
    MLM_STATUS_TRY(chunked ? ssd_chunked(scan, stream) : ssm_recurrent(scan, stream));
    MLM_STATUS_TRY(gated_rmsnorm(GatedRmsNorm{s.y, s.zxbcdt, W, w.mixer_norm, T, d.d_inner,
                                              d.group_size, d.mixer_eps, s.normed},
                                 stream));
    MLM_STATUS_TRY(lm->gemm.linear(s.normed, w.out_proj, T, D, d.d_inner, s.hidden, stream));
    MLM_STATUS_TRY(add_bias(s.hidden, w.out_proj_bias, T, D, stream));
  }
  return {};
}

// norm_f over the last row only (the only logits a prompt needs), the head, the argmax.
Status run_head(mlmamba_lm* lm, int T) {
  const LmDims& d = lm->d;
  const Scratch& s = lm->s;
  const size_t last = static_cast<size_t>(T - 1) * d.d_model;
  MLM_STATUS_TRY(add_rmsnorm(
      AddRmsNorm{s.residual + last, s.hidden + last, lm->norm_f, 1, d.d_model, d.eps, s.normed},
      lm->stream));
  MLM_STATUS_TRY(
      lm->gemm.linear(s.normed, lm->lm_head, 1, d.vocab, d.d_model, s.logits, lm->stream));
  return argmax(Argmax{s.logits, d.vocab, s.token}, lm->stream);
}

// NaN in every float and bf16 of the scratch (all bits set): a kernel that reads what nothing
// wrote in this call turns the result into NaN, which no check lets pass.
Status poison(mlmamba_lm* lm) {
  if (!lm->d.poison) return {};
  MLM_CUDA_TRY(cudaMemsetAsync(lm->scratch_begin, 0xff, lm->scratch_bytes, lm->stream));
  return {};
}

Status outputs(mlmamba_lm* lm, float* logits, int32_t* argmax_out) {
  if (logits) {
    MLM_CUDA_TRY(cudaMemcpyAsync(logits, lm->s.logits, sizeof(float) * lm->d.vocab,
                                 cudaMemcpyDeviceToHost, lm->stream));
  }
  MLM_CUDA_TRY(cudaMemcpyAsync(lm->pinned_token, lm->s.token, sizeof(int32_t),
                               cudaMemcpyDeviceToHost, lm->stream));
  MLM_CUDA_TRY(cudaStreamSynchronize(lm->stream));
  MLM_CUDA_TRY(cudaEventElapsedTime(&lm->last_ms, lm->start, lm->stop));
  if (argmax_out) *argmax_out = *lm->pinned_token;
  return {};
}

Status capture_decode(mlmamba_lm* lm, mlmamba_lm_state* st) {
  // The products' plans are made before capture: their algorithm search is host work that
  // should not be repeated inside the graph's construction.
  cudaStream_t stream = lm->stream;
  MLM_CUDA_TRY(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  Status s = embedding_gather(
      EmbeddingGather{lm->s.token, lm->embedding, 1, lm->d.d_model, lm->s.residual}, stream);
  if (s.ok()) s = run_layers(lm, st, 1, true);
  if (s.ok()) s = run_head(lm, 1);
  cudaGraph_t graph = nullptr;
  const cudaError_t end = cudaStreamEndCapture(stream, &graph);
  if (s.ok()) s = cuda_status(end, "capture of the decode step");
  if (s.ok()) s = cuda_status(cudaGraphInstantiate(&st->decode, graph, 0), "decode graph");
  if (graph) cudaGraphDestroy(graph);
  if (!s.ok()) {
    cudaGetLastError();
    st->decode = nullptr;
  }
  return s;
}

Status check_state(const mlmamba_lm* lm, const mlmamba_lm_state* st) {
  if (!lm || !st) return fail(MLMAMBA_ERR_INVALID, "no model or no state given");
  if (st->lm != lm) return fail(MLMAMBA_ERR_INVALID, "the state belongs to another model");
  return {};
}

}  // namespace

Status lm_create(const mlmamba_lm_desc& desc, mlmamba_lm** out) {
  *out = nullptr;
  LmDims d{};
  MLM_STATUS_TRY(check_dims(desc, &d));
  bool tied = true;
  for (int i = 0; i < desc.n_tensors; ++i) {
    if (desc.tensors[i].name && std::string(desc.tensors[i].name) == "lm_head.weight") tied = false;
  }
  MLM_CUDA_TRY(cudaSetDevice(desc.device));
  auto lm = std::make_unique<mlmamba_lm>();
  lm->d = d;
  lm->device = desc.device;
  Carver sizing(nullptr);
  const Layout need = place(lm.get(), sizing, tied);
  const size_t total = sizing.used();
  // Everything the model will ever need is taken now, before any weight is read: a model that
  // does not fit fails here, cleanly, and leaves the device as it found it.
  const cudaError_t e = cudaMalloc(&lm->pool, total);
  if (e != cudaSuccess) {
    cudaGetLastError();
    lm->pool = nullptr;
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    if (e == cudaErrorMemoryAllocation) {
      return fail(MLMAMBA_ERR_OUT_OF_MEMORY,
                  "out of GPU memory: the language model needs " + mib(total) + " (weights " +
                      mib(need.weight_bytes) + ", scratch " + mib(need.scratch_bytes) +
                      ") on device " + std::to_string(desc.device) + ", which has " + mib(free_b) +
                      " free of " + mib(total_b));
    }
    return cuda_status(e, "allocation of the model's memory");
  }
  Carver real(lm->pool);
  const Layout got = place(lm.get(), real, tied);
  lm->weight_bytes = got.weight_bytes;
  lm->scratch_bytes = got.scratch_bytes;
  MLM_CUDA_TRY(cudaStreamCreateWithFlags(&lm->stream, cudaStreamNonBlocking));
  MLM_CUDA_TRY(cudaEventCreate(&lm->start));
  MLM_CUDA_TRY(cudaEventCreate(&lm->stop));
  {
    void* p = nullptr;
    Status s = cuda_status(cudaHostAlloc(&p, sizeof(int32_t), cudaHostAllocDefault),
                           "pinned memory for the token id");
    if (!s.ok()) return s;
    lm->pinned_token = static_cast<int32_t*>(p);
  }
  MLM_STATUS_TRY(upload_weights(lm.get(), desc, tied));
  MLM_STATUS_TRY(lm->gemm.init(lm->s.workspace, lm->s.workspace_bytes));
  // The decode step's plans, made outside any graph capture.
  MLM_STATUS_TRY(lm->gemm.prepare(1, d.d_in_proj(), d.d_model));
  MLM_STATUS_TRY(lm->gemm.prepare(1, d.d_model, d.d_inner));
  MLM_STATUS_TRY(lm->gemm.prepare(1, d.vocab, d.d_model));
  *out = lm.release();
  return {};
}

Status state_create(mlmamba_lm* lm, mlmamba_lm_state** out) {
  *out = nullptr;
  if (!lm) return fail(MLMAMBA_ERR_INVALID, "no model given");
  std::lock_guard<std::mutex> lock(lm->mutex);
  MLM_CUDA_TRY(cudaSetDevice(lm->device));
  auto st = std::make_unique<mlmamba_lm_state>();
  st->lm = lm;
  st->device = lm->device;
  const size_t bytes = sizeof(float) * lm->d.layer_state_floats() * lm->d.n_layer;
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, bytes);
  if (e != cudaSuccess) {
    cudaGetLastError();
    if (e == cudaErrorMemoryAllocation)
      return fail(MLMAMBA_ERR_OUT_OF_MEMORY,
                  "out of GPU memory: a conversation state needs " + mib(bytes));
    return cuda_status(e, "allocation of a conversation state");
  }
  st->data = static_cast<float*>(p);
  MLM_CUDA_TRY(cudaMemsetAsync(st->data, 0, bytes, lm->stream));
  MLM_CUDA_TRY(cudaStreamSynchronize(lm->stream));
  *out = st.release();
  return {};
}

void state_free(mlmamba_lm_state* st) {
  if (!st) return;
  cudaSetDevice(st->device);
  if (st->decode) cudaGraphExecDestroy(st->decode);
  if (st->data) cudaFree(st->data);
  delete st;
}

Status state_reset(mlmamba_lm* lm, mlmamba_lm_state* st) {
  MLM_STATUS_TRY(check_state(lm, st));
  std::lock_guard<std::mutex> lock(lm->mutex);
  MLM_CUDA_TRY(cudaSetDevice(lm->device));
  const size_t bytes = sizeof(float) * lm->d.layer_state_floats() * lm->d.n_layer;
  MLM_CUDA_TRY(cudaMemsetAsync(st->data, 0, bytes, lm->stream));
  MLM_CUDA_TRY(cudaStreamSynchronize(lm->stream));
  return {};
}

Status state_copy(mlmamba_lm* lm, mlmamba_lm_state* dst, const mlmamba_lm_state* src) {
  MLM_STATUS_TRY(check_state(lm, dst));
  MLM_STATUS_TRY(check_state(lm, src));
  if (dst == src) return {};
  std::lock_guard<std::mutex> lock(lm->mutex);
  MLM_CUDA_TRY(cudaSetDevice(lm->device));
  const size_t bytes = sizeof(float) * lm->d.layer_state_floats() * lm->d.n_layer;
  MLM_CUDA_TRY(cudaMemcpyAsync(dst->data, src->data, bytes, cudaMemcpyDeviceToDevice, lm->stream));
  MLM_CUDA_TRY(cudaStreamSynchronize(lm->stream));
  return {};
}

Status state_transfer(mlmamba_lm* lm, mlmamba_lm_state* st, float* host_out, const float* host_in,
                      size_t n) {
  MLM_STATUS_TRY(check_state(lm, st));
  const size_t floats = lm->d.layer_state_floats() * lm->d.n_layer;
  if (n != floats)
    return fail(MLMAMBA_ERR_INVALID,
                "a state has " + std::to_string(floats) + " values, not " + std::to_string(n));
  std::lock_guard<std::mutex> lock(lm->mutex);
  MLM_CUDA_TRY(cudaSetDevice(lm->device));
  if (host_out) {
    MLM_CUDA_TRY(
        cudaMemcpyAsync(host_out, st->data, sizeof(float) * n, cudaMemcpyDeviceToHost, lm->stream));
  } else {
    MLM_CUDA_TRY(
        cudaMemcpyAsync(st->data, host_in, sizeof(float) * n, cudaMemcpyHostToDevice, lm->stream));
  }
  MLM_CUDA_TRY(cudaStreamSynchronize(lm->stream));
  return {};
}

Status lm_feed(mlmamba_lm* lm, mlmamba_lm_state* st, const float* rows, const int32_t* ids, int T,
               float* logits, int32_t* argmax_out) {
  MLM_STATUS_TRY(check_state(lm, st));
  if (T <= 0) return fail(MLMAMBA_ERR_INVALID, "nothing to feed (T = " + std::to_string(T) + ")");
  if (!rows == !ids) return fail(MLMAMBA_ERR_INVALID, "give either rows or ids");
  if (ids) {
    for (int t = 0; t < T; ++t) {
      if (ids[t] < 0 || ids[t] >= lm->d.vocab)
        return fail(MLMAMBA_ERR_INVALID,
                    "token id " + std::to_string(ids[t]) + " is outside the vocabulary");
    }
  }
  std::lock_guard<std::mutex> lock(lm->mutex);
  MLM_CUDA_TRY(cudaSetDevice(lm->device));
  const LmDims& d = lm->d;
  cudaStream_t stream = lm->stream;
  MLM_STATUS_TRY(poison(lm));
  MLM_CUDA_TRY(cudaEventRecord(lm->start, stream));
  int len = 0;
  for (int t0 = 0; t0 < T; t0 += d.segment) {
    len = std::min(d.segment, T - t0);
    if (rows) {
      MLM_CUDA_TRY(cudaMemcpyAsync(lm->s.residual, rows + static_cast<size_t>(t0) * d.d_model,
                                   sizeof(float) * len * d.d_model, cudaMemcpyHostToDevice,
                                   stream));
    } else {
      MLM_CUDA_TRY(cudaMemcpyAsync(lm->s.ids, ids + t0, sizeof(int32_t) * len,
                                   cudaMemcpyHostToDevice, stream));
      MLM_STATUS_TRY(embedding_gather(
          EmbeddingGather{lm->s.ids, lm->embedding, len, d.d_model, lm->s.residual}, stream));
    }
    MLM_STATUS_TRY(run_layers(lm, st, len, false));
  }
  MLM_STATUS_TRY(run_head(lm, len));
  MLM_CUDA_TRY(cudaEventRecord(lm->stop, stream));
  return outputs(lm, logits, argmax_out);
}

Status lm_decode(mlmamba_lm* lm, mlmamba_lm_state* st, int32_t id, float* logits,
                 int32_t* argmax_out) {
  MLM_STATUS_TRY(check_state(lm, st));
  if (id < 0 || id >= lm->d.vocab)
    return fail(MLMAMBA_ERR_INVALID,
                "token id " + std::to_string(id) + " is outside the vocabulary");
  std::lock_guard<std::mutex> lock(lm->mutex);
  MLM_CUDA_TRY(cudaSetDevice(lm->device));
  if (!st->decode) MLM_STATUS_TRY(capture_decode(lm, st));
  MLM_STATUS_TRY(poison(lm));
  *lm->pinned_token = id;
  MLM_CUDA_TRY(cudaMemcpyAsync(lm->s.token, lm->pinned_token, sizeof(int32_t),
                               cudaMemcpyHostToDevice, lm->stream));
  MLM_CUDA_TRY(cudaEventRecord(lm->start, lm->stream));
  MLM_CUDA_TRY(cudaGraphLaunch(st->decode, lm->stream));
  MLM_CUDA_TRY(cudaEventRecord(lm->stop, lm->stream));
  return outputs(lm, logits, argmax_out);
}

Status lm_generate_greedy(mlmamba_lm* lm, mlmamba_lm_state* st, int32_t first, int max_new,
                          int32_t eos, int32_t* out_ids, int* n_out) {
  MLM_STATUS_TRY(check_state(lm, st));
  if (n_out) *n_out = 0;
  if (first < 0 || first >= lm->d.vocab)
    return fail(MLMAMBA_ERR_INVALID,
                "token id " + std::to_string(first) + " is outside the vocabulary");
  if (max_new < 0 || (max_new > 0 && !out_ids))
    return fail(MLMAMBA_ERR_INVALID, "no room for the generated ids");
  std::lock_guard<std::mutex> lock(lm->mutex);
  MLM_CUDA_TRY(cudaSetDevice(lm->device));
  if (!st->decode) MLM_STATUS_TRY(capture_decode(lm, st));
  cudaStream_t stream = lm->stream;
  MLM_STATUS_TRY(poison(lm));
  *lm->pinned_token = first;
  MLM_CUDA_TRY(cudaMemcpyAsync(lm->s.token, lm->pinned_token, sizeof(int32_t),
                               cudaMemcpyHostToDevice, stream));
  MLM_CUDA_TRY(cudaEventRecord(lm->start, stream));
  int n = 0;
  for (; n < max_new;) {
    // The graph's argmax leaves the next input in s.token: only the id itself crosses back.
    MLM_CUDA_TRY(cudaGraphLaunch(st->decode, stream));
    MLM_CUDA_TRY(cudaMemcpyAsync(lm->pinned_token, lm->s.token, sizeof(int32_t),
                                 cudaMemcpyDeviceToHost, stream));
    MLM_CUDA_TRY(cudaStreamSynchronize(stream));
    out_ids[n++] = *lm->pinned_token;
    if (n_out) *n_out = n;
    if (eos >= 0 && out_ids[n - 1] == eos) break;
  }
  MLM_CUDA_TRY(cudaEventRecord(lm->stop, stream));
  MLM_CUDA_TRY(cudaEventSynchronize(lm->stop));
  MLM_CUDA_TRY(cudaEventElapsedTime(&lm->last_ms, lm->start, lm->stop));
  return {};
}

}  // namespace mlmamba::cuda
