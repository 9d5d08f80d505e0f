// The Mamba-2 language model on a CUDA device, through the backend module's C table
// (backend_module.h). The module keeps the weights resident (large matrices in bf16) and one
// recurrent state per conversation in fp32; this class turns its codes into Results.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "backend_module.h"
#include "config.h"
#include "mlmamba/result.h"
#include "safetensors.h"

namespace mlmamba {

// The module keeps one scratch area per model, so calls on one CudaLm are serialised (sessions on
// several threads share a model).

// One conversation's state on the device. Move-only; freed with the object (before its model).
class CudaLmState {
 public:
  CudaLmState() = default;
  CudaLmState(const mlmamba_backend* module, mlmamba_lm_state* state)
      : module_(module), state_(state) {}
  CudaLmState(CudaLmState&& o) noexcept : module_(o.module_), state_(o.state_) {
    o.state_ = nullptr;
  }
  CudaLmState& operator=(CudaLmState&& o) noexcept;
  CudaLmState(const CudaLmState&) = delete;
  CudaLmState& operator=(const CudaLmState&) = delete;
  ~CudaLmState();
  mlmamba_lm_state* get() const { return state_; }

 private:
  const mlmamba_backend* module_ = nullptr;
  mlmamba_lm_state* state_ = nullptr;
};

class CudaLm {
 public:
  struct Options {
    int device = 0;
    bool recurrent_scan = false;  // the reference form of the scan for prompts (tests)
    bool poison = false;          // NaN-filled scratch before every call (tests)
    int max_segment = 0;          // 0: the module's default
  };
  // Hands the language model's tensors of `store` (any of f32 / f16 / bf16) to the module, which
  // copies them to the device; the mapping may be released afterwards.
  static Result<std::unique_ptr<CudaLm>> load(const WeightStore& store, const ModelConfig& config,
                                              const mlmamba_backend* module,
                                              const Options& options);
  static Result<std::unique_ptr<CudaLm>> load(const WeightStore& store, const ModelConfig& config,
                                              const mlmamba_backend* module) {
    return load(store, config, module, Options{});
  }
  ~CudaLm();
  CudaLm(const CudaLm&) = delete;
  CudaLm& operator=(const CudaLm&) = delete;

  const LlmConfig& config() const { return config_; }
  mlmamba_lm_info info() const;
  int64_t parameters() const { return parameters_; }

  Result<CudaLmState> new_state() const;
  Result<void> reset(CudaLmState& state) const;
  // The host layout of MixerState, layer after layer: conv history, then SSM state.
  Result<std::vector<float>> read(const CudaLmState& state) const;
  Result<void> write(CudaLmState& state, const std::vector<float>& values) const;
  // Device to device: `dst` becomes `src` (cheap next to a read back: no host round trip).
  Result<void> copy(CudaLmState& dst, const CudaLmState& src) const;

  // Prompt rows or ids continuing from `state`; the last row's logits [vocab] and/or their argmax
  // when the pointers are not null.
  Result<void> feed_ids(CudaLmState& state, const int32_t* ids, int T, float* logits,
                        int32_t* argmax) const;
  Result<void> feed_rows(CudaLmState& state, const float* rows, int T, float* logits,
                         int32_t* argmax) const;
  // One token through the module's captured decode graph.
  Result<void> decode(CudaLmState& state, int32_t id, float* logits, int32_t* argmax) const;

 private:
  CudaLm() = default;
  const mlmamba_backend* module_ = nullptr;
  mlmamba_lm* lm_ = nullptr;
  LlmConfig config_;
  int64_t parameters_ = 0;
  mutable std::mutex mutex_;
};

}  // namespace mlmamba
