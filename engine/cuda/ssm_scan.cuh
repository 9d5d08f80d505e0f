// The selective scan of one mixer (docs/MODEL.md §3.2-3): per head h and token t,
//   S_h = exp(dt A_h) S_h + dt x_t (outer) B_t,   y_t = S_h C_t + D_h x_t,
// with dt = softplus(dt_raw + dt_bias) and A = -exp(A_log). Two forms compute it:
// ssd_chunked (prompts: per-chunk states, state passing, intra-chunk products) and ssm_recurrent
// (the plain per-token recurrence: the one-token decode step, and the reference the chunked form
// is checked against).
#pragma once

#include "common.cuh"

namespace mlmamba::cuda {

// The state holds at most this many d_state values per lane of a warp (32 x 8 = 256).
inline constexpr int kMaxStatePerLane = 8;
inline constexpr int kMaxDState = 32 * kMaxStatePerLane;

struct SsmScan {
  // Inputs: the conv1d + SiLU output [T, conv_dim] = [x | B | C], and dt_raw inside in_proj's
  // output (row stride dt_stride).
  const float* xbc;
  const float* dt_raw;
  int dt_stride;
  const float* dt_bias;  // [nheads]
  const float* A_log;    // [nheads]
  const float* D;        // [nheads]
  int T;
  int nheads;
  int headdim;
  int d_state;
  int ngroups;
  int chunk_size;
  float* ssm_state;  // [nheads, headdim, d_state], advanced in place
  float* y;          // [T, nheads * headdim]
  // Scratch of the chunked form (sized for the longest segment).
  float* dt;            // [T, nheads] after softplus
  float* cs;            // [T, nheads] running sum of dt*A inside each chunk
  float* cb;            // [chunks, ngroups, Q, Q]: C_l . B_s
  float* chunk_states;  // [chunks, nheads, headdim, d_state]
  float* states_in;     // [chunks, nheads, d_state, headdim]: the state entering each chunk
};

Status ssd_chunked(const SsmScan& p, cudaStream_t stream);
Status ssm_recurrent(const SsmScan& p, cudaStream_t stream);

}  // namespace mlmamba::cuda
