// The vision half on the GPU (engine/src/cuda_vision.cpp through the CUDA backend module) against
// the CPU tower on the tiny fixtures, and Model::load placing it there. Where no CUDA device is
// usable every test skips and says so; CI builds it and skips.
#include "cuda_vision.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "backend.h"
#include "config.h"
#include "image.h"
#include "model_impl.h"
#include "vision.h"

namespace mlmamba {
namespace {

double rel_error(const std::vector<float>& a, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;  // NaN never passes
    num += double(a[i] - ref[i]) * (a[i] - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num / den);
}

// The module rounds every product's input to bf16 (and keeps the matrices in bf16); the CPU tower
// is fp32 throughout. tools/cuda/check_vision.py bounds the same difference against model.py.
constexpr double kBf16Tolerance = 3e-2;

RgbImage picture(int w, int h, int salt) {
  RgbImage img{w, h, std::vector<uint8_t>(static_cast<size_t>(w) * h * 3)};
  for (size_t i = 0; i < img.pixels.size(); ++i)
    img.pixels[i] = static_cast<uint8_t>((i * 37 + static_cast<size_t>(salt) * 101) % 251);
  return img;
}

class CudaVisionTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string why;
    module_ = cuda_backend(&why);
    if (!module_) GTEST_SKIP() << "skipped: no CUDA device (" << why << ")";
    const std::string dir = std::string(MLMAMBA_FIXTURES) + "/" + GetParam();
    auto config = read_model_config(dir);
    ASSERT_TRUE(config.ok()) << config.error().message;
    config_ = *config;
    auto store = WeightStore::open(dir);
    ASSERT_TRUE(store.ok()) << store.error().message;
    store_ = std::make_unique<WeightStore>(std::move(store).value());
    auto cpu = VisionTower::load(*store_, config_);
    ASSERT_TRUE(cpu.ok()) << cpu.error().message;
    cpu_ = std::move(cpu).value();
    CudaVision::Options o;
    o.poison = true;
    auto gpu = CudaVision::load(*store_, config_, module_, o);
    ASSERT_TRUE(gpu.ok()) << gpu.error().message;
    gpu_ = std::move(gpu).value();
    n_ = static_cast<size_t>(cpu_->rows()) * config_.llm.mixer.d_model;
  }

  const mlmamba_backend* module_ = nullptr;
  ModelConfig config_;
  std::unique_ptr<WeightStore> store_;
  std::unique_ptr<VisionTower> cpu_;
  std::unique_ptr<CudaVision> gpu_;
  size_t n_ = 0;
};

TEST_P(CudaVisionTest, RowsMatchTheCpuTower) {
  const int S = config_.vision.image_size;
  for (int salt = 0; salt < 2; ++salt) {
    // A square picture of the encoders' size: to_square leaves it as it is on both paths.
    const RgbImage img = picture(S, S, salt);
    std::vector<float> want(n_), got(n_, NAN);
    cpu_->encode(img, want.data());
    ASSERT_TRUE(gpu_->encode(img, got.data()).ok());
    EXPECT_LT(rel_error(got, want), kBf16Tolerance) << GetParam() << " picture " << salt;
    EXPECT_GT(gpu_->last_ms(), 0.0f);
  }
  const mlmamba_vision_info info = gpu_->info();
  EXPECT_EQ(info.rows, cpu_->rows());
  EXPECT_EQ(info.width, config_.llm.mixer.d_model);
}

TEST_P(CudaVisionTest, AWrongSizeIsAnErrorAndTheObjectGoesOn) {
  const int S = config_.vision.image_size;
  std::vector<float> rows(n_, NAN), again(n_, NAN);
  const RgbImage img = picture(S, S, 3);
  ASSERT_TRUE(gpu_->encode(img, rows.data()).ok());
  EXPECT_FALSE(gpu_->encode(picture(S + 1, S + 1, 0), rows.data()).ok());
  ASSERT_TRUE(gpu_->encode(img, again.data()).ok());
  EXPECT_EQ(rows, again);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaVisionTest,
                         ::testing::Values("mlmamba_tiny_dual", "mlmamba_tiny_siglip_odd"));

TEST(CudaVisionModelTest, FollowsTheLanguageModelToTheGpuWhenAskedTo) {
  std::string why;
  if (!cuda_backend(&why)) GTEST_SKIP() << "skipped: no CUDA device (" << why << ")";
  LoadParams p;
  p.model_dir = std::string(MLMAMBA_FIXTURES) + "/mlmamba_tiny_dual";
  p.device = Device::kCuda;
  setenv("MLMAMBA_GPU_VISION", "1", 1);
  auto m = Model::load(p);
  unsetenv("MLMAMBA_GPU_VISION");
  ASSERT_TRUE(m.ok()) << m.error().message;
  const ModelImpl& gpu = static_cast<const ModelImpl&>(**m);
  ASSERT_NE(gpu.vision(), nullptr);
  EXPECT_NE(gpu.vision()->gpu(), nullptr) << gpu.vision()->gpu_failure();
  EXPECT_TRUE(gpu.vision()->gpu_failure().empty()) << gpu.vision()->gpu_failure();

  auto c = Model::load(p);  // without MLMAMBA_GPU_VISION: pictures on the CPU
  ASSERT_TRUE(c.ok()) << c.error().message;
  const ModelImpl& cpu = static_cast<const ModelImpl&>(**c);
  EXPECT_EQ(cpu.vision()->gpu(), nullptr);
  // The same picture, encoded on each path, within bf16 rounding.
  const RgbImage img = picture(50, 40, 1);
  const size_t n = static_cast<size_t>(gpu.vision()->rows()) * gpu.llm_config().mixer.d_model;
  std::vector<float> a(n, NAN), b(n, NAN);
  gpu.vision()->encode(img, a.data());
  cpu.vision()->encode(img, b.data());
  EXPECT_LT(rel_error(a, b), kBf16Tolerance);

  p.device = Device::kCpu;
  auto on_cpu = Model::load(p);
  ASSERT_TRUE(on_cpu.ok()) << on_cpu.error().message;
  EXPECT_EQ(static_cast<const ModelImpl&>(**on_cpu).vision()->gpu(), nullptr);
}

}  // namespace
}  // namespace mlmamba
