// The loaded model behind the public Model interface; sessions reach its parts through this.
#pragma once

#include <memory>

#include "config.h"
#include "cuda_lm.h"
#include "mamba2.h"
#include "mlmamba/mlmamba.h"
#include "safetensors.h"
#include "tokenizer.h"
#include "vision.h"

namespace mlmamba {

class ModelImpl final : public Model {
 public:
  ModelImpl(ModelConfig config, WeightStore weights, Tokenizer tokenizer)
      : config_(std::move(config)),
        weights_(std::move(weights)),
        tokenizer_(std::move(tokenizer)) {}

  const ModelInfo& info() const override { return info_; }
  Result<std::vector<int32_t>> tokenize(std::string_view text) const override;
  std::string detokenize(const std::vector<int32_t>& ids) const override;
  std::string format_user_turn(std::string_view message, bool first_turn) const override;

  const ModelConfig& config() const { return config_; }
  const Tokenizer& tokenizer() const { return tokenizer_; }
  // The language model runs on exactly one of the two: the CPU (lm) or the GPU (cuda_lm).
  const Mamba2Lm& lm() const { return *lm_; }
  const CudaLm* cuda_lm() const { return cuda_lm_.get(); }  // null on the CPU
  const LlmConfig& llm_config() const { return config_.llm; }
  const WeightStore& weights() const { return weights_; }
  const VisionTower* vision() const { return vision_.get(); }  // null for a text-only model
  int eos() const { return info_.eos_token_id; }

 private:
  friend class Model;
  ModelConfig config_;
  WeightStore weights_;  // the mapping must outlive every pointer the LM borrows from it
  Tokenizer tokenizer_;
  std::unique_ptr<Mamba2Lm> lm_;     // null when the language model is on the GPU
  std::unique_ptr<CudaLm> cuda_lm_;  // declared after weights_: freed before the mapping
  std::unique_ptr<VisionTower> vision_;
  ModelInfo info_;
};

}  // namespace mlmamba
