// The vision half (encoders, mlp, MSC connector, projector) on a CUDA device, through the backend
// module's C table (backend_module.h, API 3). The picture is made square on the host (the same
// PIL-identical resize as the CPU path); the module normalises it and runs everything after.
#pragma once

#include <memory>
#include <mutex>

#include "backend_module.h"
#include "config.h"
#include "image.h"
#include "mlmamba/result.h"
#include "safetensors.h"

namespace mlmamba {

class CudaVision {
 public:
  struct Options {
    int device = 0;
    bool poison = false;  // NaN-filled scratch before every call (tests)
  };
  // Hands the vision tensors of `store` (any of f32 / f16 / bf16) to the module, which copies them
  // to the device.
  static Result<std::unique_ptr<CudaVision>> load(const WeightStore& store,
                                                  const ModelConfig& config,
                                                  const mlmamba_backend* module,
                                                  const Options& options);
  static Result<std::unique_ptr<CudaVision>> load(const WeightStore& store,
                                                  const ModelConfig& config,
                                                  const mlmamba_backend* module) {
    return load(store, config, module, Options{});
  }
  ~CudaVision();
  CudaVision(const CudaVision&) = delete;
  CudaVision& operator=(const CudaVision&) = delete;

  mlmamba_vision_info info() const;
  // `square` is image_size x image_size; writes rows x llm d_model floats.
  Result<void> encode(const RgbImage& square, float* rows) const;
  // Device time of the last encode (CUDA events inside the module).
  float last_ms() const;

 private:
  CudaVision() = default;
  const mlmamba_backend* module_ = nullptr;
  mlmamba_vision* vision_ = nullptr;
  int image_size_ = 0;
  size_t floats_ = 0;
  mutable std::mutex mutex_;
};

}  // namespace mlmamba
