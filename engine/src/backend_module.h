/* The C boundary between the engine and a run-time loaded backend module (libmlmamba-cuda.so).
   Plain C types only: the module is built by another compiler (nvcc) and loaded with dlopen, and it
   must not carry its own copy of the engine. A module exports one symbol, mlmamba_backend_entry,
   returning a table that starts with its api_version; the engine checks it before using anything
   else in the table, and refuses a module of another version.

   Version 2 adds the Mamba-2 language model: weights resident on the device (the large matrices
   in bf16, the per-channel vectors in fp32), a recurrent state per conversation kept in fp32, and
   prefill / decode / greedy generation. Every function returns MLMAMBA_OK or an error code with a
   message in `err`; none aborts the process. */
#ifndef MLMAMBA_BACKEND_MODULE_H_
#define MLMAMBA_BACKEND_MODULE_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MLMAMBA_BACKEND_API_VERSION 2

/* Return codes. */
#define MLMAMBA_OK 0
#define MLMAMBA_ERR_INVALID 1       /* an argument or the model description is unusable */
#define MLMAMBA_ERR_OUT_OF_MEMORY 2 /* device (or pinned host) memory ran out; nothing leaked */
#define MLMAMBA_ERR_DEVICE 3        /* the CUDA runtime or a library failed */
#define MLMAMBA_ERR_UNSUPPORTED 4   /* a well-formed size this module has no kernel for */

/* Element types of the host tensors handed to lm_create. */
#define MLMAMBA_DTYPE_F32 0
#define MLMAMBA_DTYPE_F16 1
#define MLMAMBA_DTYPE_BF16 2

/* Two forms of the scan in a prompt: the chunked SSD form (fast) and the plain per-token
   recurrence (the reference the chunked form is checked against). */
#define MLMAMBA_SCAN_CHUNKED 0
#define MLMAMBA_SCAN_RECURRENT 1

struct mlmamba_device_info {
  int index;
  char name[256];
  size_t total_memory;
  size_t free_memory;
  int compute_major;
  int compute_minor;
};

/* One weight tensor in host memory (not necessarily aligned), read only during lm_create.
   Names are the mamba_ssm checkpoint keys below `backbone.`:
     embedding.weight [vocab, d_model], norm_f.weight [d_model], lm_head.weight [vocab, d_model]
     (optional: tied to the embedding when absent), layers.{i}.norm.weight [d_model],
     layers.{i}.mixer.{in_proj.weight [d_in_proj, d_model], in_proj.bias, conv1d.weight
     [conv_dim, 1, d_conv], conv1d.bias [conv_dim], dt_bias [nheads], A_log [nheads], D [nheads],
     norm.weight [d_inner], out_proj.weight [d_model, d_inner], out_proj.bias}. */
struct mlmamba_tensor {
  const char* name;
  int dtype; /* MLMAMBA_DTYPE_* */
  int ndim;
  int64_t shape[4];
  const void* data;
};

/* The language model's sizes (engine/src/config.h: LlmConfig and Mamba2Dims) and its weights. */
struct mlmamba_lm_desc {
  int device; /* CUDA device index */
  int d_model;
  int n_layer;
  int vocab_size;
  int d_inner; /* expand * d_model */
  int d_state;
  int headdim;
  int nheads; /* d_inner / headdim */
  int ngroups;
  int d_conv;
  int chunk_size;
  int norm_group_size; /* channels per gated-RMSNorm group: d_inner (whole width) or d_inner/ngroups
                        */
  float norm_eps;      /* the layers' RMSNorm and norm_f */
  float mixer_norm_eps; /* the gated RMSNorm */
  int proj_bias;        /* in_proj / out_proj carry a bias */
  int conv_bias;        /* conv1d carries a bias */
  int max_segment;      /* rows per prefill pass (scratch is sized for it); 0: 2048 */
  int scan_form;        /* MLMAMBA_SCAN_* used by prompts */
  int poison;           /* non-zero: fill scratch with NaN before every call (tests) */
  const struct mlmamba_tensor* tensors;
  int n_tensors;
};

/* What lm_create placed on the device. */
struct mlmamba_lm_info {
  size_t weight_bytes;  /* resident weights */
  size_t scratch_bytes; /* activations of one prefill segment, cuBLASLt workspace */
  size_t state_bytes;   /* one conversation state */
  int max_segment;
};

typedef struct mlmamba_lm mlmamba_lm;
typedef struct mlmamba_lm_state mlmamba_lm_state;

/* The part of every version's table that never moves: the engine reads it first. */
struct mlmamba_backend_header {
  int api_version; /* MLMAMBA_BACKEND_API_VERSION of the module's build */
  const char* name;
};

struct mlmamba_backend {
  struct mlmamba_backend_header header;

  /* Writes up to `max` devices; returns how many exist, or -1 with a message in `err`. */
  int (*probe)(struct mlmamba_device_info* out, int max, char* err, size_t err_len);

  /* Validates the description, allocates everything the model needs on the device at once
     (weights, scratch for one segment, cuBLASLt workspace), converts the weights there. */
  int (*lm_create)(const struct mlmamba_lm_desc* desc, mlmamba_lm** out, char* err, size_t err_len);
  void (*lm_free)(mlmamba_lm* lm);
  int (*lm_info)(const mlmamba_lm* lm, struct mlmamba_lm_info* out);

  /* A conversation's state: per layer the conv history [d_conv-1, conv_dim] (oldest row first)
     then the SSM state [nheads, headdim, d_state], fp32; zero when created. The host layout of
     state_read / state_write is that, layer after layer (state_floats values). */
  int (*state_create)(mlmamba_lm* lm, mlmamba_lm_state** out, char* err, size_t err_len);
  void (*state_free)(mlmamba_lm_state* state);
  int (*state_reset)(mlmamba_lm* lm, mlmamba_lm_state* state, char* err, size_t err_len);
  int (*state_copy)(mlmamba_lm* lm, mlmamba_lm_state* dst, const mlmamba_lm_state* src, char* err,
                    size_t err_len);
  size_t (*state_floats)(const mlmamba_lm* lm);
  int (*state_read)(mlmamba_lm* lm, const mlmamba_lm_state* state, float* host, size_t n, char* err,
                    size_t err_len);
  int (*state_write)(mlmamba_lm* lm, mlmamba_lm_state* state, const float* host, size_t n,
                     char* err, size_t err_len);

  /* Prefill: T rows (fp32 [T, d_model], e.g. visual rows) or T token ids, continuing from `state`.
     Writes the last row's logits [vocab] and/or their argmax when the pointers are not null. */
  int (*lm_feed_rows)(mlmamba_lm* lm, mlmamba_lm_state* state, const float* rows, int T,
                      float* logits, int32_t* argmax, char* err, size_t err_len);
  int (*lm_feed_ids)(mlmamba_lm* lm, mlmamba_lm_state* state, const int32_t* ids, int T,
                     float* logits, int32_t* argmax, char* err, size_t err_len);
  /* One token through the captured decode graph. */
  int (*lm_decode)(mlmamba_lm* lm, mlmamba_lm_state* state, int32_t id, float* logits,
                   int32_t* argmax, char* err, size_t err_len);
  /* Feeds `first`, then feeds back each argmax on the device: out_ids[i] is the argmax after the
     i-th fed token. Stops after `max_new` ids or after writing `eos` (eos < 0: never). The last id
     written is not fed. */
  int (*lm_generate_greedy)(mlmamba_lm* lm, mlmamba_lm_state* state, int32_t first, int max_new,
                            int32_t eos, int32_t* out_ids, int* n_out, char* err, size_t err_len);
  /* Device time of the last feed / decode / generate call, measured with CUDA events. */
  int (*lm_last_elapsed_ms)(const mlmamba_lm* lm, float* ms);
};

typedef const struct mlmamba_backend_header* (*mlmamba_backend_entry_fn)(void);
#define MLMAMBA_BACKEND_ENTRY "mlmamba_backend_entry"

#ifdef __cplusplus
}
#endif

#endif /* MLMAMBA_BACKEND_MODULE_H_ */
