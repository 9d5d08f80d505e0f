// Picture -> visual rows for the language model: preprocessing, every encoder, concatenation on
// channels in config order, then the connector.
#pragma once

#include <memory>
#include <vector>

#include "config.h"
#include "connector.h"
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
  // Writes rows() x llm d_model floats.
  void encode(const RgbImage& image, float* rows, Trace* trace = nullptr) const;

 private:
  VisionTower() = default;
  VisionConfig v_;
  ResizeMode mode_ = ResizeMode::kNaive;
  int llm_d_model_ = 0;
  F32Weights arena_;
  std::vector<VitEncoder> encoders_;
  std::unique_ptr<Connector> connector_;
};

}  // namespace mlmamba
