// Picture -> visual rows for the language model: preprocessing, every encoder, concatenation on
// channels in config order, then the connector.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "config.h"
#include "connector.h"
#include "cuda_vision.h"
#include "image.h"
#include "vit.h"

namespace mlmamba {

class VisionTower {
 public:
  static Result<std::unique_ptr<VisionTower>> load(const WeightStore& store,
                                                   const ModelConfig& config);

  int rows() const { return v_.rows(); }
  int64_t parameters() const { return arena_.parameters(); }

  struct Trace {
    std::vector<std::vector<float>> pixels;    // per encoder, normalised [3, size, size]
    std::vector<std::vector<float>> features;  // per encoder, [rows, dim]
    Connector::Trace connector;
  };
  // Writes rows() x llm d_model floats. On the GPU when one is set (not for a trace), else, or
  // when the module refuses the call, on the CPU.
  void encode(const RgbImage& image, float* rows, Trace* trace = nullptr) const;

  // The GPU path, set when the language model runs on the GPU; null with the reason it is not
  // (empty when it was never tried).
  void set_gpu(std::unique_ptr<CudaVision> gpu, std::string why_not);
  const CudaVision* gpu() const { return gpu_.get(); }
  // Why the pictures are encoded on the CPU: creation failed, or the last GPU call failed.
  std::string gpu_failure() const;

 private:
  VisionTower() = default;
  VisionConfig v_;
  ResizeMode mode_ = ResizeMode::kNaive;
  int llm_d_model_ = 0;
  F32Weights arena_;
  std::vector<VitEncoder> encoders_;
  std::unique_ptr<Connector> connector_;
  std::unique_ptr<CudaVision> gpu_;
  mutable std::mutex gpu_mutex_;
  mutable std::string gpu_failure_;
};

}  // namespace mlmamba
