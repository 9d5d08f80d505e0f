#include "sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>

namespace mlmamba {
namespace {

TEST(Sampler, GreedyTakesTheLargestLogitAndTheLowestIdOnTies) {
  Sampler s(Sampling{});
  std::vector<float> logits = {0.1f, 3.0f, -2.0f, 3.0f};
  EXPECT_EQ(s.next(logits, {}), 1);
  std::vector<float> l2 = {-1.0f, -0.5f, -3.0f};
  EXPECT_EQ(s.next(l2, {}), 1);
}

TEST(Sampler, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogitsOnce) {
  Sampling p;
  p.repetition_penalty = 2.0f;
  Sampler s(p);
  std::vector<float> logits = {4.0f, 3.0f, -1.0f};
  // Token 0 was seen twice: penalised once, 4 -> 2, so token 1 (3) wins.
  EXPECT_EQ(s.next(logits, {0, 0, 2}), 1);
  EXPECT_FLOAT_EQ(logits[0], 2.0f);
  EXPECT_FLOAT_EQ(logits[2], -2.0f);
  EXPECT_FLOAT_EQ(logits[1], 3.0f);
}

TEST(Sampler, SameSeedSameSequenceOtherSeedOtherSequence) {
  Sampling p;
  p.temperature = 1.0f;
  p.seed = 42;
  auto draw = [](const Sampling& sp) {
    Sampler s(sp);
    std::vector<int32_t> out;
    for (int i = 0; i < 64; ++i) {
      std::vector<float> logits(50, 0.0f);
      out.push_back(s.next(logits, {}));
    }
    return out;
  };
  EXPECT_EQ(draw(p), draw(p));
  Sampling q = p;
  q.seed = 43;
  EXPECT_NE(draw(p), draw(q));
}

TEST(Sampler, TopKKeepsOnlyTheKBest) {
  Sampling p;
  p.temperature = 1.0f;
  p.top_k = 2;
  Sampler s(p);
  for (int i = 0; i < 200; ++i) {
    std::vector<float> logits = {0.0f, 1.0f, 5.0f, 4.9f, 0.5f};
    const int id = s.next(logits, {});
    ASSERT_TRUE(id == 2 || id == 3) << id;
  }
}

TEST(Sampler, TopPKeepsTheSmallestSetReachingP) {
  Sampling p;
  p.temperature = 1.0f;
  p.top_p = 0.5f;
  Sampler s(p);
  // Probabilities about 0.64, 0.24, 0.09, 0.03: the first alone reaches 0.5.
  for (int i = 0; i < 100; ++i) {
    std::vector<float> logits = {3.0f, 2.0f, 1.0f, 0.0f};
    ASSERT_EQ(s.next(logits, {}), 0);
  }
  Sampling q = p;
  q.top_p = 0.8f;  // needs the first two
  Sampler s2(q);
  std::map<int, int> seen;
  for (int i = 0; i < 400; ++i) {
    std::vector<float> logits = {3.0f, 2.0f, 1.0f, 0.0f};
    seen[s2.next(logits, {})]++;
  }
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_GT(seen[1], 40);
}

TEST(Sampler, FrequenciesFollowTheSoftmaxAtTheTemperature) {
  Sampling p;
  p.temperature = 0.5f;
  p.seed = 7;
  Sampler s(p);
  std::vector<int> count(3, 0);
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    std::vector<float> logits = {0.0f, 0.5f, 1.0f};
    count[s.next(logits, {})]++;
  }
  // softmax([0, 1, 2]) = 0.090, 0.245, 0.665; 4 standard deviations of a binomial at n = 20000.
  const double expect[3] = {0.0900, 0.2447, 0.6652};
  for (int i = 0; i < 3; ++i) {
    const double sd = std::sqrt(expect[i] * (1 - expect[i]) / n);
    EXPECT_NEAR(count[i] / double(n), expect[i], 4 * sd) << i;
  }
}

TEST(Sampler, RejectsAbsurdParameters) {
  Sampling p;
  p.temperature = -1;
  EXPECT_FALSE(validate(p).ok());
  p = Sampling{};
  p.top_p = 0;
  EXPECT_FALSE(validate(p).ok());
  p = Sampling{};
  p.top_p = 1.5f;
  EXPECT_FALSE(validate(p).ok());
  p = Sampling{};
  p.repetition_penalty = 0;
  EXPECT_FALSE(validate(p).ok());
  p = Sampling{};
  p.top_k = -3;
  EXPECT_FALSE(validate(p).ok());
  EXPECT_TRUE(validate(Sampling{}).ok());
}

}  // namespace
}  // namespace mlmamba
