/* The C boundary between the engine and a run-time loaded backend module (libmlmamba-cuda.so).
   Plain C types only: the module is built by another compiler (nvcc) and loaded with dlopen, and it
   must not carry its own copy of the engine. A module exports one symbol, mlmamba_backend_entry,
   returning a table that starts with its api_version; the engine checks it before using anything
   else in the table, and refuses a module of another version.

   Version 2 adds the Mamba-2 language model: weights resident on the device (the large matrices
   in bf16, the per-channel vectors in fp32), a recurrent state per conversation kept in fp32, and
   prefill / decode / greedy generation. Every function returns MLMAMBA_OK or an error code with a
   message in `err`; none aborts the process.

   Version 3 adds the vision half: both ViT encoders, the mlp, the Mamba-2 Scan Connector and the
   projector, from an already resized square RGB picture to the rows the language model reads. */
#ifndef MLMAMBA_BACKEND_MODULE_H_
#define MLMAMBA_BACKEND_MODULE_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MLMAMBA_BACKEND_API_VERSION 3

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

/* One ViT encoder (engine/src/config.h: VitConfig). Its tensors are named
   vision_backbone.<name>.{patch_embed.proj.weight [dim, 3, patch, patch], patch_embed.proj.bias,
   pos_embed [1, grid*grid, dim], cls_token [1, 1, dim] (class_token), reg_token [1, registers, dim]
   (register_tokens > 0), blocks.{j}.{norm1, norm2}.{weight, bias}, blocks.{j}.attn.qkv.{weight
   [3*dim, dim], bias}, blocks.{j}.attn.proj.{weight, bias}, blocks.{j}.mlp.fc1.{weight
   [mlp_hidden, dim], bias}, blocks.{j}.mlp.fc2.{weight, bias}, blocks.{j}.ls1.gamma and ls2.gamma
   (layer_scale)} for j = 0 .. feature_layer. */
#define MLMAMBA_MAX_ENCODERS 4
struct mlmamba_vit_desc {
  const char* name; /* tensor prefix under vision_backbone. */
  int patch_size;
  int dim;
  int heads;
  int mlp_hidden;
  int class_token;     /* non-zero: one class token before the patches */
  int register_tokens; /* register tokens after the class token */
  int layer_scale;     /* non-zero: ls1 / ls2 scale the residual branches */
  int feature_layer;   /* 0-based block whose output is the feature */
  float norm_eps;
  float mean[3]; /* normalisation of x / 255, per RGB channel */
  float std[3];
};

/* The vision half (engine/src/config.h: VisionConfig). Tensors besides the encoders':
   mlp.0.{weight [mlp_out, sum of dims], bias}; per MSC layer l,
   bidirectional_mamba.layers.{l}.mixer.{in_proj.weight [d_in_proj, mlp_out], out_proj.weight
   [mlp_out, d_inner], norm.weight [d_inner], conv1d.weight [conv_dim, 1, d_conv], conv1d.bias,
   dt_bias, A_log, D, and the backward direction's conv1d_b.weight, conv1d_b.bias, dt_bias_b,
   A_log_b, D_b}, bidirectional_mamba.layers.{l}.norm.{weight, bias},
   bidirectional_mamba.layers.{l}.mlp.{w1, w2, w3}.{weight [mlp_out, mlp_out], bias};
   bidirectional_mamba.norm_f.{weight, bias}; projector.projector.0.{weight [projector_hidden,
   mlp_out], bias}, projector.projector.2.{weight [llm_d_model, projector_hidden], bias},
   projector.projector.4.{weight [llm_d_model, llm_d_model], bias}. */
struct mlmamba_vision_desc {
  int device;
  int image_size; /* pixels per side of the square picture */
  int n_encoders;
  struct mlmamba_vit_desc encoders[MLMAMBA_MAX_ENCODERS];
  int mlp_out;
  int msc_layers;
  int msc_d_inner;
  int msc_d_state;
  int msc_headdim;
  int msc_nheads;
  int msc_ngroups;
  int msc_d_conv;
  int msc_chunk_size;
  int msc_norm_group_size;
  float msc_mixer_norm_eps; /* the gated RMSNorm */
  int msc_conv_bias;
  float msc_layer_norm_eps; /* the LayerNorms after each layer and norm_f */
  int projector_hidden;
  int llm_d_model;
  int poison; /* non-zero: fill scratch with NaN before every call (tests) */
  const struct mlmamba_tensor* tensors;
  int n_tensors;
};

struct mlmamba_vision_info {
  size_t weight_bytes;
  size_t scratch_bytes;
  int rows;  /* grid * grid */
  int width; /* llm_d_model */
};

typedef struct mlmamba_vision mlmamba_vision;

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

  /* Version 3: the vision half. vision_create validates the description and allocates weights
     (matrices bf16, vectors fp32) and the scratch of one picture at once. */
  int (*vision_create)(const struct mlmamba_vision_desc* desc, mlmamba_vision** out, char* err,
                       size_t err_len);
  void (*vision_free)(mlmamba_vision* vision);
  int (*vision_info)(const mlmamba_vision* vision, struct mlmamba_vision_info* out);
  /* `rgb` is the square picture [size, size, 3] (size == image_size), already resized on the
     host; writes rows * width fp32 values to `rows_out` (n_floats must equal that). */
  int (*vision_encode)(mlmamba_vision* vision, const uint8_t* rgb, int size, float* rows_out,
                       size_t n_floats, char* err, size_t err_len);
  int (*vision_last_elapsed_ms)(const mlmamba_vision* vision, float* ms);
};

typedef const struct mlmamba_backend_header* (*mlmamba_backend_entry_fn)(void);
#define MLMAMBA_BACKEND_ENTRY "mlmamba_backend_entry"

#ifdef __cplusplus
}
#endif

#endif /* MLMAMBA_BACKEND_MODULE_H_ */
