#include "vision.h"

#include <cmath>
#include <cstring>

namespace mlmamba {

Result<std::unique_ptr<VisionTower>> VisionTower::load(const WeightStore& store,
                                                       const ModelConfig& config) {
  std::unique_ptr<VisionTower> t(new VisionTower());
  t->v_ = config.vision;
  t->llm_d_model_ = config.llm.mixer.d_model;
  MLM_ASSIGN_OR_RETURN(t->mode_, parse_resize_mode(t->v_.resize));
  for (const VitConfig& e : t->v_.encoders) {
    MLM_ASSIGN_OR_RETURN(VitEncoder enc, VitEncoder::load(store, e, t->v_.image_size, &t->arena_));
    t->encoders_.push_back(std::move(enc));
  }
  MLM_ASSIGN_OR_RETURN(Connector c, Connector::load(store, t->v_, t->llm_d_model_, &t->arena_));
  t->connector_ = std::make_unique<Connector>(std::move(c));
  return t;
}

void VisionTower::encode(const RgbImage& image, float* out, Trace* trace) const {
  const int S = v_.image_size, R = v_.rows(), F = v_.feature_dim();
  // Letterbox fills with the first encoder's mean colour, as the released preprocessing does.
  uint8_t fill[3];
  for (int c = 0; c < 3; ++c) fill[c] = static_cast<uint8_t>(v_.encoders[0].mean[c] * 255.0f);
  const RgbImage square = to_square(image, S, mode_, fill);
  if (gpu_ && !trace) {
    const auto r = gpu_->encode(square, out);
    if (r.ok()) return;
    const std::lock_guard lock(gpu_mutex_);
    gpu_failure_ = r.error().message;
  }
  std::vector<float> chw(static_cast<size_t>(3) * S * S), feats(static_cast<size_t>(R) * F);
  int offset = 0;
  for (const VitEncoder& enc : encoders_) {
    const VitConfig& c = enc.config();
    normalize_chw(square, c.mean, c.std, chw.data());
    std::vector<float> f(static_cast<size_t>(R) * c.dim);
    enc.encode(chw.data(), S, f.data());
    for (int r = 0; r < R; ++r)
      std::memcpy(feats.data() + static_cast<size_t>(r) * F + offset,
                  f.data() + static_cast<size_t>(r) * c.dim, sizeof(float) * c.dim);
    offset += c.dim;
    if (trace) {
      trace->pixels.push_back(chw);
      trace->features.push_back(std::move(f));
    }
  }
  connector_->run(feats.data(), R, out, trace ? &trace->connector : nullptr);
}

void VisionTower::set_gpu(std::unique_ptr<CudaVision> gpu, std::string why_not) {
  const std::lock_guard lock(gpu_mutex_);
  gpu_ = std::move(gpu);
  gpu_failure_ = std::move(why_not);
}

std::string VisionTower::gpu_failure() const {
  const std::lock_guard lock(gpu_mutex_);
  return gpu_failure_;
}

}  // namespace mlmamba
