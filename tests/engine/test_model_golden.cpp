// The whole language model against golden values from the PyTorch reference (float64), itself
// checked against transformers' Mamba2ForCausalLM when the fixtures were made (tools/reference/).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "mlmamba/mlmamba.h"
#include "model_impl.h"

namespace mlmamba {
namespace {

using nlohmann::json;

json read_json(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  return json::parse(in);
}

double rel_error(const std::vector<float>& a, const std::vector<float>& ref) {
  EXPECT_EQ(a.size(), ref.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += double(a[i] - ref[i]) * (a[i] - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num / den);
}

class Golden : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = std::string(MLMAMBA_FIXTURES) + "/" + GetParam();
    expected_ = read_json(dir_ + "/expected.json");
    LoadParams p;
    p.model_dir = dir_;
    p.device = Device::kCpu;
    auto m = Model::load(p);
    ASSERT_TRUE(m.ok()) << m.error().message;
    model_ = *m;
    impl_ = static_cast<const ModelImpl*>(model_.get());
  }
  std::string dir_;
  json expected_;
  std::shared_ptr<const Model> model_;
  const ModelImpl* impl_ = nullptr;
};

// fp32 against the float64 reference: measured about 1e-6; 1e-4 is the contract.
constexpr double kLogitTolerance = 1e-4;

TEST_P(Golden, LastLogitsMatchTheReferenceInBothScanForms) {
  for (const auto& pr : expected_["prompts"]) {
    const auto ids = pr["ids"].get<std::vector<int32_t>>();
    const auto ref = pr["last_logits"].get<std::vector<float>>();
    for (ScanForm form : {ScanForm::kChunked, ScanForm::kRecurrent}) {
      LmState st = impl_->lm().new_state();
      std::vector<float> logits(ref.size(), NAN);
      ASSERT_TRUE(impl_->lm().forward_ids(ids.data(), static_cast<int>(ids.size()), &st,
                                          logits.data(), form));
      const double err = rel_error(logits, ref);
      EXPECT_LT(err, kLogitTolerance) << pr["name"] << " form " << int(form);
      RecordProperty(
          pr["name"].get<std::string>() + (form == ScanForm::kChunked ? "_chunked" : "_recurrent"),
          std::to_string(err));
    }
  }
}

TEST_P(Golden, GreedyTokensEqualTransformersGenerate) {
  for (const auto& pr : expected_["prompts"]) {
    const auto ids = pr["ids"].get<std::vector<int32_t>>();
    const auto want = pr["greedy_ids"].get<std::vector<int32_t>>();
    Session s(model_);
    GenerateParams gp;
    gp.max_new_tokens = static_cast<int>(want.size());
    gp.ignore_eos = true;  // transformers generated without stopping at id 0
    auto g = s.generate_from_ids(ids, gp);
    ASSERT_TRUE(g.ok()) << g.error().message;
    EXPECT_EQ(g->ids, want) << pr["name"];
  }
}

TEST_P(Golden, TextPromptsTokeniseToTheFixtureIds) {
  int checked = 0;
  for (const auto& pr : expected_["prompts"]) {
    if (pr["text"].is_null()) continue;
    auto ids = model_->tokenize(pr["text"].get<std::string>());
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(*ids, pr["ids"].get<std::vector<int32_t>>()) << pr["name"];
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

TEST_P(Golden, EveryStageMatchesTheReference) {
  const json& layers = expected_["layers"];
  const std::string name = layers["prompt"];
  std::vector<int32_t> ids;
  for (const auto& pr : expected_["prompts"])
    if (pr["name"] == name) ids = pr["ids"].get<std::vector<int32_t>>();
  ASSERT_FALSE(ids.empty());
  const int D = impl_->lm().config().mixer.d_model, T = static_cast<int>(ids.size());
  std::vector<float> rows(static_cast<size_t>(T) * D);
  for (int t = 0; t < T; ++t)
    std::copy_n(impl_->lm().embedding_row(ids[t]), D, rows.begin() + static_cast<size_t>(t) * D);
  std::vector<std::vector<float>> after;
  std::vector<float> final_norm;
  impl_->lm().forward_trace(rows.data(), T, &after, &final_norm);
  const auto& want_layers = layers["hidden_after_layer"];
  ASSERT_EQ(after.size(), want_layers.size());
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_LT(rel_error(after[i], want_layers[i].get<std::vector<float>>()), kLogitTolerance)
        << "layer " << i;
  }
  // The first mixer's own output: the residual stream after layer 0 minus the embeddings.
  std::vector<float> mixer0(after[0]);
  for (size_t k = 0; k < mixer0.size(); ++k) mixer0[k] -= rows[k];
  EXPECT_LT(rel_error(mixer0, layers["mixer0_out"].get<std::vector<float>>()), kLogitTolerance);
  EXPECT_LT(rel_error(final_norm, layers["final_norm_out"].get<std::vector<float>>()),
            kLogitTolerance);
}

TEST_P(Golden, PrefillThenDecodeEqualsOneLongPrefill) {
  // The decode path (one token at a time through the recurrent state) must give the logits a full
  // prefill of the same tokens gives.
  const auto& pr = expected_["prompts"][expected_["prompts"].size() - 1];
  const auto ids = pr["ids"].get<std::vector<int32_t>>();
  const int V = impl_->lm().config().vocab_size, T = static_cast<int>(ids.size());
  LmState a = impl_->lm().new_state(), b = impl_->lm().new_state();
  std::vector<float> la(V), lb(V);
  ASSERT_TRUE(impl_->lm().forward_ids(ids.data(), T, &a, la.data()));
  const int split = T / 3;
  ASSERT_TRUE(impl_->lm().forward_ids(ids.data(), split, &b, lb.data()));
  for (int t = split; t < T; ++t) ASSERT_TRUE(impl_->lm().forward_ids(&ids[t], 1, &b, lb.data()));
  EXPECT_LT(rel_error(lb, la), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Golden,
                         ::testing::Values("mamba2_tiny_g1", "mamba2_tiny_g2",
                                           "mamba2_tiny_g1_bf16"));

}  // namespace
}  // namespace mlmamba
