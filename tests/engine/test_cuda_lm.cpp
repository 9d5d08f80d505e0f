// The language model on the GPU (engine/src/cuda_lm.cpp through the CUDA backend module) against
// the CPU engine on the tiny fixtures. Where no CUDA device is usable every test skips and says
// so; CI builds it and skips.
#include "cuda_lm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "backend.h"
#include "config.h"
#include "mamba2.h"

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

// The module rounds each matrix product's input to bf16 (and an f32 checkpoint's large matrices
// too); the CPU engine is fp32 throughout. Measured by tools/cuda/check_lm.py against float64:
// a few 1e-3; 2e-2 is the bf16 bound.
constexpr double kBf16Tolerance = 2e-2;

class CudaLmTest : public ::testing::TestWithParam<std::string> {
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
    auto cpu = Mamba2Lm::load(*store_, config_);
    ASSERT_TRUE(cpu.ok()) << cpu.error().message;
    cpu_ = std::move(cpu).value();
    CudaLm::Options o;
    o.poison = true;
    o.max_segment = 32;  // several segments in the longer prompts
    auto gpu = CudaLm::load(*store_, config_, module_, o);
    ASSERT_TRUE(gpu.ok()) << gpu.error().message;
    gpu_ = std::move(gpu).value();
    vocab_ = config_.llm.vocab_size;
  }

  std::vector<int32_t> ids(int n, int salt) const {
    std::vector<int32_t> v(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) v[static_cast<size_t>(i)] = (i * 7919 + salt * 131 + 3) % vocab_;
    return v;
  }
  std::vector<float> cpu_logits(const std::vector<int32_t>& v) const {
    LmState st = cpu_->new_state();
    std::vector<float> logits(static_cast<size_t>(vocab_));
    EXPECT_TRUE(cpu_->forward_ids(v.data(), static_cast<int>(v.size()), &st, logits.data()));
    return logits;
  }

  const mlmamba_backend* module_ = nullptr;
  ModelConfig config_;
  std::unique_ptr<WeightStore> store_;
  std::unique_ptr<Mamba2Lm> cpu_;
  std::unique_ptr<CudaLm> gpu_;
  int vocab_ = 0;
};

TEST_P(CudaLmTest, PromptLogitsMatchTheCpuAroundChunkBoundaries) {
  auto st = gpu_->new_state();
  ASSERT_TRUE(st.ok()) << st.error().message;
  for (int T : {1, 15, 16, 17, 33, 65, 100}) {
    ASSERT_TRUE(gpu_->reset(*st).ok());
    const auto v = ids(T, T);
    std::vector<float> logits(static_cast<size_t>(vocab_), NAN);
    int32_t argmax = -1;
    auto r = gpu_->feed_ids(*st, v.data(), T, logits.data(), &argmax);
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_LT(rel_error(logits, cpu_logits(v)), kBf16Tolerance) << "T=" << T;
    int best = 0;
    for (int i = 1; i < vocab_; ++i)
      if (logits[static_cast<size_t>(i)] > logits[static_cast<size_t>(best)]) best = i;
    EXPECT_EQ(argmax, best) << "T=" << T;
  }
}

TEST_P(CudaLmTest, DecodeContinuesThePrompt) {
  auto st = gpu_->new_state();
  ASSERT_TRUE(st.ok()) << st.error().message;
  const auto v = ids(24, 5);
  ASSERT_TRUE(gpu_->feed_ids(*st, v.data(), 17, nullptr, nullptr).ok());
  std::vector<float> logits(static_cast<size_t>(vocab_), NAN);
  for (int t = 17; t < 24; ++t) {
    auto r = gpu_->decode(*st, v[static_cast<size_t>(t)], logits.data(), nullptr);
    ASSERT_TRUE(r.ok()) << r.error().message;
  }
  EXPECT_LT(rel_error(logits, cpu_logits(v)), kBf16Tolerance);
}

TEST_P(CudaLmTest, RowsThenIdsEqualTheirEmbeddings) {
  auto st = gpu_->new_state();
  ASSERT_TRUE(st.ok());
  const auto v = ids(30, 9);
  const int D = config_.llm.mixer.d_model;
  std::vector<float> rows(static_cast<size_t>(12) * D);
  for (int t = 0; t < 12; ++t)
    std::copy_n(cpu_->embedding_row(v[static_cast<size_t>(t)]), D,
                rows.begin() + static_cast<size_t>(t) * D);
  std::vector<float> logits(static_cast<size_t>(vocab_), NAN);
  ASSERT_TRUE(gpu_->feed_rows(*st, rows.data(), 12, nullptr, nullptr).ok());
  ASSERT_TRUE(gpu_->feed_ids(*st, v.data() + 12, 18, logits.data(), nullptr).ok());
  EXPECT_LT(rel_error(logits, cpu_logits(v)), kBf16Tolerance);
}

TEST_P(CudaLmTest, StateReadBackAndRestoredGivesTheSameLogits) {
  auto st = gpu_->new_state();
  ASSERT_TRUE(st.ok());
  const auto v = ids(20, 2);
  ASSERT_TRUE(gpu_->feed_ids(*st, v.data(), 20, nullptr, nullptr).ok());
  auto snap = gpu_->read(*st);
  ASSERT_TRUE(snap.ok()) << snap.error().message;
  for (float x : *snap) ASSERT_TRUE(std::isfinite(x));
  std::vector<float> a(static_cast<size_t>(vocab_)), b(static_cast<size_t>(vocab_));
  ASSERT_TRUE(gpu_->decode(*st, 4, a.data(), nullptr).ok());
  ASSERT_TRUE(gpu_->write(*st, *snap).ok());
  ASSERT_TRUE(gpu_->decode(*st, 4, b.data(), nullptr).ok());
  EXPECT_EQ(a, b);
}

TEST_P(CudaLmTest, AnOutOfVocabularyIdIsAnErrorAndTheModelGoesOn) {
  auto st = gpu_->new_state();
  ASSERT_TRUE(st.ok());
  auto r = gpu_->decode(*st, vocab_, nullptr, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(r.error().message.find("vocabulary"), std::string::npos) << r.error().message;
  EXPECT_TRUE(gpu_->decode(*st, 1, nullptr, nullptr).ok());
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaLmTest,
                         ::testing::Values("mamba2_tiny_g1", "mamba2_tiny_g2",
                                           "mamba2_tiny_g1_bf16"));

}  // namespace
}  // namespace mlmamba
