// A vision transformer in timm's layout on the CPU, fp32, run up to its feature block.
#pragma once

#include <string>
#include <vector>

#include "config.h"
#include "mamba2.h"
#include "safetensors.h"

namespace mlmamba {

struct VitBlockWeights {
  const float *norm1_w, *norm1_b, *qkv_w, *qkv_b, *proj_w, *proj_b, *ls1 = nullptr;
  const float *norm2_w, *norm2_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b, *ls2 = nullptr;
};

class VitEncoder {
 public:
  // Loads `vision_backbone.<name>.*` for an image of `image_size` pixels per side.
  static Result<VitEncoder> load(const WeightStore& store, const VitConfig& config, int image_size,
                                 F32Weights* arena);

  const VitConfig& config() const { return c_; }
  int grid() const { return grid_; }
  // `chw` is the normalised picture [3, size, size]; writes the patch features [grid*grid, dim]
  // (prefix tokens dropped).
  void encode(const float* chw, int image_size, float* features) const;

 private:
  VitConfig c_;
  int grid_ = 0;
  const float* patch_w_ = nullptr;  // [dim, 3*p*p]
  const float* patch_b_ = nullptr;
  const float* pos_embed_ = nullptr;  // [grid*grid, dim]
  const float* cls_token_ = nullptr;  // [dim]
  const float* reg_token_ = nullptr;  // [registers, dim]
  std::vector<VitBlockWeights> blocks_;
};

}  // namespace mlmamba
