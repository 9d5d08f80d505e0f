// The module's one exported symbol and its C table. Each function turns the C++ status into a
// code and a message; no exception and no CUDA error leaves the module.
#include <cstdio>
#include <new>

#include "device_probe.cuh"
#include "lm.cuh"
#include "vision.cuh"

namespace mlmamba::cuda {
namespace {

int report(const Status& s, char* err, size_t len) {
  if (!s.ok() && err && len) std::snprintf(err, len, "%s", s.message.c_str());
  return s.code;
}

// std::bad_alloc from a host container is the only exception the module's code can raise.
template <class F>
int guarded(char* err, size_t len, F&& f) {
  try {
    return report(f(), err, len);
  } catch (const std::bad_alloc&) {
    return report(fail(MLMAMBA_ERR_OUT_OF_MEMORY, "out of host memory"), err, len);
  } catch (...) {
    return report(fail(MLMAMBA_ERR_DEVICE, "unexpected failure inside the CUDA module"), err, len);
  }
}

int c_lm_create(const mlmamba_lm_desc* desc, mlmamba_lm** out, char* err, size_t len) {
  if (!desc || !out) return report(fail(MLMAMBA_ERR_INVALID, "no description given"), err, len);
  return guarded(err, len, [&] { return lm_create(*desc, out); });
}

void c_lm_free(mlmamba_lm* lm) {
  delete lm;
}

int c_lm_info(const mlmamba_lm* lm, mlmamba_lm_info* out) {
  if (!lm || !out) return MLMAMBA_ERR_INVALID;
  out->weight_bytes = lm->weight_bytes;
  out->scratch_bytes = lm->scratch_bytes;
  out->state_bytes = sizeof(float) * lm->d.layer_state_floats() * lm->d.n_layer;
  out->max_segment = lm->d.segment;
  return MLMAMBA_OK;
}

int c_state_create(mlmamba_lm* lm, mlmamba_lm_state** out, char* err, size_t len) {
  if (!out) return report(fail(MLMAMBA_ERR_INVALID, "no output given"), err, len);
  return guarded(err, len, [&] { return state_create(lm, out); });
}

void c_state_free(mlmamba_lm_state* st) {
  state_free(st);
}

int c_state_reset(mlmamba_lm* lm, mlmamba_lm_state* st, char* err, size_t len) {
  return guarded(err, len, [&] { return state_reset(lm, st); });
}

int c_state_copy(mlmamba_lm* lm, mlmamba_lm_state* dst, const mlmamba_lm_state* src, char* err,
                 size_t len) {
  return guarded(err, len, [&] { return state_copy(lm, dst, src); });
}

size_t c_state_floats(const mlmamba_lm* lm) {
  return lm ? lm->d.layer_state_floats() * lm->d.n_layer : 0;
}

int c_state_read(mlmamba_lm* lm, const mlmamba_lm_state* st, float* host, size_t n, char* err,
                 size_t len) {
  if (!host) return report(fail(MLMAMBA_ERR_INVALID, "no host buffer given"), err, len);
  return guarded(err, len, [&] {
    return state_transfer(lm, const_cast<mlmamba_lm_state*>(st), host, nullptr, n);
  });
}

int c_state_write(mlmamba_lm* lm, mlmamba_lm_state* st, const float* host, size_t n, char* err,
                  size_t len) {
  if (!host) return report(fail(MLMAMBA_ERR_INVALID, "no host buffer given"), err, len);
  return guarded(err, len, [&] { return state_transfer(lm, st, nullptr, host, n); });
}

int c_feed_rows(mlmamba_lm* lm, mlmamba_lm_state* st, const float* rows, int T, float* logits,
                int32_t* argmax, char* err, size_t len) {
  if (!rows) return report(fail(MLMAMBA_ERR_INVALID, "no rows given"), err, len);
  return guarded(err, len, [&] { return lm_feed(lm, st, rows, nullptr, T, logits, argmax); });
}

int c_feed_ids(mlmamba_lm* lm, mlmamba_lm_state* st, const int32_t* ids, int T, float* logits,
               int32_t* argmax, char* err, size_t len) {
  if (!ids) return report(fail(MLMAMBA_ERR_INVALID, "no ids given"), err, len);
  return guarded(err, len, [&] { return lm_feed(lm, st, nullptr, ids, T, logits, argmax); });
}

int c_decode(mlmamba_lm* lm, mlmamba_lm_state* st, int32_t id, float* logits, int32_t* argmax,
             char* err, size_t len) {
  return guarded(err, len, [&] { return lm_decode(lm, st, id, logits, argmax); });
}

int c_generate_greedy(mlmamba_lm* lm, mlmamba_lm_state* st, int32_t first, int max_new, int32_t eos,
                      int32_t* out_ids, int* n_out, char* err, size_t len) {
  return guarded(err, len,
                 [&] { return lm_generate_greedy(lm, st, first, max_new, eos, out_ids, n_out); });
}

int c_last_elapsed_ms(const mlmamba_lm* lm, float* ms) {
  if (!lm || !ms) return MLMAMBA_ERR_INVALID;
  *ms = lm->last_ms;
  return MLMAMBA_OK;
}

int c_vision_create(const mlmamba_vision_desc* desc, mlmamba_vision** out, char* err, size_t len) {
  if (!desc || !out) return report(fail(MLMAMBA_ERR_INVALID, "no description given"), err, len);
  return guarded(err, len, [&] { return vision_create(*desc, out); });
}

void c_vision_free(mlmamba_vision* v) {
  delete v;
}

int c_vision_info(const mlmamba_vision* v, mlmamba_vision_info* out) {
  if (!v || !out) return MLMAMBA_ERR_INVALID;
  out->weight_bytes = v->weight_bytes;
  out->scratch_bytes = v->scratch_bytes;
  out->rows = v->rows;
  out->width = v->llm_d_model;
  return MLMAMBA_OK;
}

int c_vision_encode(mlmamba_vision* v, const uint8_t* rgb, int size, float* rows_out,
                    size_t n_floats, char* err, size_t len) {
  return guarded(err, len, [&] { return vision_encode(v, rgb, size, rows_out, n_floats); });
}

int c_vision_last_elapsed_ms(const mlmamba_vision* v, float* ms) {
  if (!v || !ms) return MLMAMBA_ERR_INVALID;
  *ms = v->last_ms;
  return MLMAMBA_OK;
}

const mlmamba_backend kBackend = {
    {MLMAMBA_BACKEND_API_VERSION, "cuda"},
    probe,
    c_lm_create,
    c_lm_free,
    c_lm_info,
    c_state_create,
    c_state_free,
    c_state_reset,
    c_state_copy,
    c_state_floats,
    c_state_read,
    c_state_write,
    c_feed_rows,
    c_feed_ids,
    c_decode,
    c_generate_greedy,
    c_last_elapsed_ms,
    c_vision_create,
    c_vision_free,
    c_vision_info,
    c_vision_encode,
    c_vision_last_elapsed_ms,
};

}  // namespace
}  // namespace mlmamba::cuda

extern "C" __attribute__((visibility("default"))) const mlmamba_backend_header*
mlmamba_backend_entry(void) {
  return &mlmamba::cuda::kBackend.header;
}
