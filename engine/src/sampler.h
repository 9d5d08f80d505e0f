// Picks the next token from logits: greedy, or sampling with the usual processors applied in the
// order Hugging Face's generate applies them (repetition penalty, temperature, top-k, top-p).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "mlmamba/mlmamba.h"

namespace mlmamba {

Result<void> validate(const Sampling& s);

class Sampler {
 public:
  explicit Sampler(const Sampling& params) : p_(params), rng_(params.seed) {}
  // `logits` is modified (penalties, scaling). `history` holds the ids seen so far.
  int32_t next(std::vector<float>& logits, const std::vector<int32_t>& history);

 private:
  Sampling p_;
  std::mt19937_64 rng_;
  std::vector<int32_t> order_;
  std::vector<float> probs_;
};

}  // namespace mlmamba
