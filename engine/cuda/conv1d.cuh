// Causal depthwise conv1d over the xBC columns of in_proj's output, then SiLU (docs/MODEL.md §3.1).
// Tap d_conv-1 multiplies the current token; the d_conv-1 rows before the sequence come from the
// conversation's conv_state (zeros at its start).
#pragma once

#include "common.cuh"

namespace mlmamba::cuda {

struct Conv1d {
  const float* xbc;  // [T, conv_dim] with row stride `stride` (a view into in_proj's output)
  int stride;
  float* conv_state;    // [d_conv-1, conv_dim], oldest row first
  const float* weight;  // [conv_dim, d_conv]
  const float* bias;    // [conv_dim] or null
  int T;
  int conv_dim;
  int d_conv;
  float* out;  // [T, conv_dim]
};

// A prompt: reads the history, writes `out`, then advances conv_state to the last d_conv-1 inputs.
Status conv1d_silu(const Conv1d& p, cudaStream_t stream);
// One token (T = 1): the same in one kernel, the decode graph's form.
Status conv1d_silu_step(const Conv1d& p, cudaStream_t stream);

}  // namespace mlmamba::cuda
