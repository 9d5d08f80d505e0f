// Greedy choice on the device: the index of the largest logit. Ties go to the lowest index and a
// NaN wins over any number, as torch.argmax does, so a broken logit row shows instead of hiding.
#pragma once

#include "common.cuh"

namespace mlmamba::cuda {

struct Argmax {
  const float* logits;  // [n]
  int n;
  int32_t* out;  // one id; the decode graph's next input
};
Status argmax(const Argmax& p, cudaStream_t stream);

}  // namespace mlmamba::cuda
