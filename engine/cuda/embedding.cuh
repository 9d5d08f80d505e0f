// Embedding gather: token ids on the device -> fp32 rows of the residual stream.
#pragma once

#include "common.cuh"

namespace mlmamba::cuda {

struct EmbeddingGather {
  const int32_t* ids;  // [T], on the device (the decode graph reads the id the last argmax wrote)
  const bf16* table;   // [vocab, d_model]
  int T;
  int d_model;
  float* out;  // [T, d_model]
};
Status embedding_gather(const EmbeddingGather& p, cudaStream_t stream);

}  // namespace mlmamba::cuda
