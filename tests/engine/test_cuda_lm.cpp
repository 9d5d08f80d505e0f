// The language model on the GPU (engine/src/cuda_lm.cpp through the CUDA backend module) against
// the CPU engine on the tiny fixtures, and Model / Session running it there. Where no CUDA device
// is usable every test skips and says so; CI builds it and skips.
#include "cuda_lm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "backend.h"
#include "config.h"
#include "image.h"
#include "mamba2.h"
#include "model_impl.h"

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

// Model and Session with the language model on the GPU (Model::load with device cuda).
class CudaSessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!cuda_backend(&why)) GTEST_SKIP() << "skipped: no CUDA device (" << why << ")";
  }
  static std::shared_ptr<const Model> load(const std::string& fixture, Device device) {
    LoadParams p;
    p.model_dir = std::string(MLMAMBA_FIXTURES) + "/" + fixture;
    p.device = device;
    auto m = Model::load(p);
    EXPECT_TRUE(m.ok()) << m.error().message;
    return m.ok() ? *m : nullptr;
  }
  static const ModelImpl& impl(const std::shared_ptr<const Model>& m) {
    return static_cast<const ModelImpl&>(*m);
  }
  // Greedy through the module by hand: rows (may be empty), then ids, then `n` argmax steps.
  static std::vector<int32_t> by_hand(const CudaLm& lm, const std::vector<float>& rows, int n_rows,
                                      const std::vector<int32_t>& ids, int n) {
    auto st = lm.new_state();
    EXPECT_TRUE(st.ok());
    if (!st.ok()) return {};
    int32_t next = -1;
    if (n_rows > 0) {
      EXPECT_TRUE(lm.feed_rows(*st, rows.data(), n_rows, nullptr, nullptr).ok());
    }
    EXPECT_TRUE(lm.feed_ids(*st, ids.data(), static_cast<int>(ids.size()), nullptr, &next).ok());
    std::vector<int32_t> out{next};
    while (static_cast<int>(out.size()) < n) {
      EXPECT_TRUE(lm.decode(*st, out.back(), nullptr, &next).ok());
      out.push_back(next);
    }
    return out;
  }
};

TEST_F(CudaSessionTest, TheLanguageModelLoadsOnTheGpuAndSaysSo) {
  for (Device d : {Device::kCuda, Device::kAuto}) {
    auto m = load("mamba2_tiny_g1", d);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->info().device, "cuda:0");
    EXPECT_TRUE(m->info().fallback_reason.empty()) << m->info().fallback_reason;
    ASSERT_NE(impl(m).cuda_lm(), nullptr);
    EXPECT_EQ(m->info().parameters, load("mamba2_tiny_g1", Device::kCpu)->info().parameters);
  }
}

TEST_F(CudaSessionTest, GreedyAnswersAreTheModuleDrivenByHand) {
  for (const char* fixture : {"mamba2_tiny_g1", "mamba2_tiny_g2", "mamba2_tiny_g1_bf16"}) {
    auto m = load(fixture, Device::kCuda);
    ASSERT_TRUE(m);
    const std::vector<int32_t> prompt = {3, 17, 42, 5, 99, 7, 250, 11, 64, 1, 2, 3, 4, 5, 6, 7, 8};
    const auto want = by_hand(*impl(m).cuda_lm(), {}, 0, prompt, 12);
    GenerateParams g;
    g.max_new_tokens = 12;
    g.ignore_eos = true;
    Session greedy(m);
    auto a = greedy.generate_from_ids(prompt, g);
    ASSERT_TRUE(a.ok()) << a.error().message;
    EXPECT_EQ(a->ids, want) << fixture;
    // top-k 1 reads the logits back and picks on the CPU: the same ids.
    g.sampling.temperature = 1.0f;
    g.sampling.top_k = 1;
    Session sampled(m);
    auto b = sampled.generate_from_ids(prompt, g);
    ASSERT_TRUE(b.ok()) << b.error().message;
    EXPECT_EQ(b->ids, want) << fixture;
  }
}

TEST_F(CudaSessionTest, APictureIsFedAsRowsBetweenTheIds) {
  auto m = load("mlmamba_tiny_dual", Device::kCuda);
  ASSERT_TRUE(m);
  const ModelImpl& gpu = impl(m);
  ASSERT_NE(gpu.vision(), nullptr);
  const int w = 40, h = 30;
  std::vector<uint8_t> px(static_cast<size_t>(w) * h * 3);
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>((i * 37) % 251);
  const auto image = ImageInput::from_rgb(w, h, px);
  const std::vector<int32_t> prompt = {5, 6, 7, 8, 9, 10};
  const int rows = gpu.vision()->rows();
  std::vector<float> visual(static_cast<size_t>(rows) * gpu.llm_config().mixer.d_model);
  gpu.vision()->encode(RgbImage{w, h, px}, visual.data());
  const auto want = by_hand(*gpu.cuda_lm(), visual, rows, prompt, 6);
  GenerateParams g;
  g.max_new_tokens = 6;
  g.ignore_eos = true;
  Session s(m);
  auto a = s.generate_from_ids(prompt, g, &image);
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(a->ids, want);
  EXPECT_EQ(a->stats.image_rows, rows);

  // The same rows and ids on the CPU engine: the last logits agree within bf16 rounding.
  auto cpu = load("mlmamba_tiny_dual", Device::kCpu);
  ASSERT_TRUE(cpu);
  const Mamba2Lm& lm = impl(cpu).lm();
  const int D = lm.config().mixer.d_model;
  std::vector<float> all = visual;
  for (int32_t id : prompt) all.insert(all.end(), lm.embedding_row(id), lm.embedding_row(id) + D);
  LmState st = lm.new_state();
  std::vector<float> ref(static_cast<size_t>(lm.config().vocab_size));
  ASSERT_TRUE(lm.forward(all.data(), static_cast<int>(all.size() / D), &st, ref.data()));
  auto dst = gpu.cuda_lm()->new_state();
  ASSERT_TRUE(dst.ok());
  std::vector<float> got(ref.size(), NAN);
  ASSERT_TRUE(gpu.cuda_lm()->feed_rows(*dst, visual.data(), rows, nullptr, nullptr).ok());
  ASSERT_TRUE(
      gpu.cuda_lm()
          ->feed_ids(*dst, prompt.data(), static_cast<int>(prompt.size()), got.data(), nullptr)
          .ok());
  EXPECT_LT(rel_error(got, ref), kBf16Tolerance);
}

TEST_F(CudaSessionTest, SnapshotsRestoreAndResetGiveTheSameAnswers) {
  auto m = load("mamba2_tiny_g2", Device::kCuda);
  ASSERT_TRUE(m);
  GenerateParams g;
  g.max_new_tokens = 10;
  g.ignore_eos = true;
  Session s(m);
  const auto empty = s.snapshot();
  ASSERT_TRUE(empty);
  ASSERT_TRUE(s.feed_turn("first question", "first answer").ok());
  const auto after_one = s.snapshot();
  ASSERT_TRUE(after_one);
  auto a = s.ask("second question", g);
  ASSERT_TRUE(a.ok()) << a.error().message;
  auto a2 = s.ask("third question", g);
  ASSERT_TRUE(a2.ok()) << a2.error().message;

  s.restore(after_one);
  EXPECT_EQ(s.turns(), 1);
  auto b = s.ask("second question", g);
  ASSERT_TRUE(b.ok()) << b.error().message;
  EXPECT_EQ(b->ids, a->ids);
  // A snapshot taken right after a restore (the state not yet back on the device) holds it too.
  s.restore(after_one);
  const auto again = s.snapshot();
  auto c = s.ask("second question", g);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->ids, a->ids);
  s.restore(again);
  auto c2 = s.ask("second question", g);
  ASSERT_TRUE(c2.ok());
  EXPECT_EQ(c2->ids, a->ids);

  // Back to the start, by reset and by the empty snapshot: the same as a fresh session.
  Session fresh(m);
  auto f = fresh.ask("second question", g);
  ASSERT_TRUE(f.ok());
  s.reset();
  auto r = s.ask("second question", g);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->ids, f->ids);
  s.restore(empty);
  auto e = s.ask("second question", g);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->ids, f->ids);
}

TEST_F(CudaSessionTest, ACancelledOrRefusedCallLeavesTheConversationAsItWas) {
  auto m = load("mamba2_tiny_g1", Device::kCuda);
  ASSERT_TRUE(m);
  GenerateParams g;
  g.max_new_tokens = 8;
  g.ignore_eos = true;
  Session s(m);
  ASSERT_TRUE(s.feed_turn("hello", "hi").ok());
  const auto snap = s.snapshot();
  // Refused before the device is touched.
  auto bad = s.generate_from_ids({m->info().vocab_size}, g);
  ASSERT_FALSE(bad.ok());
  // Cancelled after the first token: the answer so far stays in the conversation, as on the CPU.
  GenerateParams stop = g;
  stop.on_token = [&](const Token&) { s.cancel(); };
  auto cancelled = s.ask("question", stop);
  ASSERT_TRUE(cancelled.ok()) << cancelled.error().message;
  EXPECT_EQ(cancelled->stop, StopReason::kCancelled);
  auto next = s.ask("question", g);
  ASSERT_TRUE(next.ok()) << next.error().message;
  s.restore(snap);
  auto a = s.ask("question", g);
  ASSERT_TRUE(a.ok());
  Session other(m);
  ASSERT_TRUE(other.feed_turn("hello", "hi").ok());
  auto b = other.ask("question", g);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(a->ids, b->ids);
}

}  // namespace
}  // namespace mlmamba
