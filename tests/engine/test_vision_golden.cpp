// The image half and the whole pipeline against golden values from the PyTorch reference
// (tools/reference/mlmamba_ref.py, float64; its ViTs checked against timm, its LM against
// transformers when the fixtures were made). Each stage is fed the reference's own input, so an
// error points at the stage that made it.
#include <gtest/gtest.h>

#include <unistd.h>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "image.h"
#include "mlmamba/mlmamba.h"
#include "model_impl.h"

namespace mlmamba {
namespace {

using nlohmann::json;

double rel_error(const std::vector<float>& a, const std::vector<float>& ref) {
  EXPECT_EQ(a.size(), ref.size());
  if (a.size() != ref.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += double(a[i] - ref[i]) * (a[i] - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num / den);
}

// fp32 against the float64 reference; the reference's own float32 run lands under 3e-6.
constexpr double kTolerance = 1e-4;

class VisionGolden : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = std::string(MLMAMBA_FIXTURES) + "/" + GetParam();
    std::ifstream in(dir_ + "/expected.json");
    ASSERT_TRUE(in.good());
    expected_ = json::parse(in);
    LoadParams p;
    p.model_dir = dir_;
    p.device = Device::kCpu;
    auto m = Model::load(p);
    ASSERT_TRUE(m.ok()) << m.error().message;
    model_ = *m;
    impl_ = static_cast<const ModelImpl*>(model_.get());
    ASSERT_NE(impl_->vision(), nullptr);
  }
  std::vector<float> floats(const json& j) { return j.get<std::vector<float>>(); }
  std::string dir_;
  json expected_;
  std::shared_ptr<const Model> model_;
  const ModelImpl* impl_ = nullptr;
};

TEST_P(VisionGolden, EachStageMatchesTheReference) {
  const ModelConfig& cfg = impl_->config();
  const VisionConfig& v = cfg.vision;
  for (const json& pic : expected_["pictures"]) {
    SCOPED_TRACE(pic["file"].get<std::string>());
    // Picture -> square, bit for bit with PIL.
    auto decoded = decode_image_file(dir_ + "/" + pic["file"].get<std::string>());
    ASSERT_TRUE(decoded.ok()) << decoded.error().message;
    ASSERT_EQ(decoded->width, pic["width"].get<int>());
    auto mode = parse_resize_mode(v.resize);
    ASSERT_TRUE(mode.ok());
    uint8_t fill[3];
    for (int c = 0; c < 3; ++c) fill[c] = static_cast<uint8_t>(v.encoders[0].mean[c] * 255.0f);
    const RgbImage square = to_square(*decoded, v.image_size, *mode, fill);
    const auto want_rgb = pic["square_rgb"].get<std::vector<int>>();
    ASSERT_EQ(square.pixels.size(), want_rgb.size());
    int max_diff = 0;
    for (size_t i = 0; i < want_rgb.size(); ++i)
      max_diff = std::max(max_diff, std::abs(square.pixels[i] - want_rgb[i]));
    EXPECT_LE(max_diff, 1);

    const int R = v.rows(), S = v.image_size;
    std::vector<float> concat(static_cast<size_t>(R) * v.feature_dim());
    int offset = 0;
    for (const VitConfig& e : v.encoders) {
      SCOPED_TRACE(e.name);
      std::vector<float> chw(static_cast<size_t>(3) * S * S);
      normalize_chw(square, e.mean, e.std, chw.data());
      const auto want_chw = floats(pic["preprocessed"][e.name]);
      EXPECT_LT(rel_error(chw, want_chw), 1e-6);
      // The encoder on the reference's own pixels.
      F32Weights arena;
      auto enc = VitEncoder::load(impl_->weights(), e, S, &arena);
      ASSERT_TRUE(enc.ok()) << enc.error().message;
      std::vector<float> feats(static_cast<size_t>(R) * e.dim, NAN);
      enc->encode(want_chw.data(), S, feats.data());
      const auto want_feats = floats(pic["features"][e.name]);
      const double err = rel_error(feats, want_feats);
      EXPECT_LT(err, kTolerance);
      RecordProperty(e.name + "_features", std::to_string(err));
      for (int r = 0; r < R; ++r)
        std::copy_n(want_feats.begin() + static_cast<size_t>(r) * e.dim, e.dim,
                    concat.begin() + static_cast<size_t>(r) * v.feature_dim() + offset);
      offset += e.dim;
    }
    // Connector on the reference's features, both scan forms.
    F32Weights arena;
    auto conn = Connector::load(impl_->weights(), v, cfg.llm.mixer.d_model, &arena);
    ASSERT_TRUE(conn.ok()) << conn.error().message;
    for (ScanForm form : {ScanForm::kChunked, ScanForm::kRecurrent}) {
      std::vector<float> rows(static_cast<size_t>(R) * cfg.llm.mixer.d_model, NAN);
      Connector::Trace trace;
      conn->run(concat.data(), R, rows.data(), &trace, form);
      EXPECT_LT(rel_error(trace.mlp, floats(pic["mlp_out"])), kTolerance);
      EXPECT_LT(rel_error(trace.msc, floats(pic["msc_out"])), kTolerance) << int(form);
      EXPECT_LT(rel_error(rows, floats(pic["projector_out"])), kTolerance) << int(form);
    }
    // The whole tower from the file.
    std::vector<float> rows(static_cast<size_t>(R) * cfg.llm.mixer.d_model, NAN);
    impl_->vision()->encode(*decoded, rows.data());
    const double err = rel_error(rows, floats(pic["projector_out"]));
    EXPECT_LT(err, kTolerance);
    RecordProperty("visual_rows", std::to_string(err));

    // First logits: visual rows then the first turn's text.
    const auto ids = pic["prompt_ids"].get<std::vector<int32_t>>();
    auto tokenized =
        model_->tokenize(model_->format_user_turn(pic["question"].get<std::string>(), true));
    ASSERT_TRUE(tokenized.ok());
    EXPECT_EQ(*tokenized, ids);
    const int D = cfg.llm.mixer.d_model;
    std::vector<float> all(rows);
    for (int32_t id : ids)
      all.insert(all.end(), impl_->lm().embedding_row(id), impl_->lm().embedding_row(id) + D);
    LmState st = impl_->lm().new_state();
    std::vector<float> logits(cfg.llm.vocab_size, NAN);
    ASSERT_TRUE(
        impl_->lm().forward(all.data(), static_cast<int>(all.size() / D), &st, logits.data()));
    const double lerr = rel_error(logits, floats(pic["first_logits"]));
    EXPECT_LT(lerr, kTolerance);
    RecordProperty("first_logits", std::to_string(lerr));
  }
}

TEST_P(VisionGolden, GreedyAnswersAndFollowUpsFromTheKeptState) {
  const int n = expected_["n_new"].get<int>();
  for (const json& pic : expected_["pictures"]) {
    SCOPED_TRACE(pic["file"].get<std::string>());
    const auto image = ImageInput::from_file(dir_ + "/" + pic["file"].get<std::string>());
    {
      Session s(model_);
      GenerateParams gp;
      gp.max_new_tokens = n;
      gp.ignore_eos = true;
      auto g = s.ask(pic["question"].get<std::string>(), gp, &image);
      ASSERT_TRUE(g.ok()) << g.error().message;
      EXPECT_EQ(g->ids, pic["greedy_ids"].get<std::vector<int32_t>>());
      EXPECT_EQ(g->stats.image_rows, impl_->config().vision.rows());
    }
    // A conversation: the first reply stops at end-of-text; the follow-up feeds only its own
    // tokens, yet must equal the reference's re-run of the whole conversation.
    Session s(model_);
    GenerateParams first;
    first.max_new_tokens = n;
    auto a = s.ask(pic["question"].get<std::string>(), first, &image);
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(a->ids, pic["turn1_reply_ids"].get<std::vector<int32_t>>());
    const json& t2 = pic["turn2"];
    GenerateParams second;
    second.max_new_tokens = n;
    second.ignore_eos = true;
    auto b = s.ask(t2["message"].get<std::string>(), second);
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(b->ids, t2["greedy_ids"].get<std::vector<int32_t>>());
    const auto turn_ids = t2["turn_ids"].get<std::vector<int32_t>>();
    EXPECT_LE(b->stats.prefill_tokens, static_cast<int>(turn_ids.size()) + 2);
  }
}

TEST_P(VisionGolden, TextOnlyQuestionOfAVisionModel) {
  const json& t = expected_["text_only"];
  Session s(model_);
  GenerateParams gp;
  gp.max_new_tokens = expected_["n_new"].get<int>();
  gp.ignore_eos = true;
  auto g = s.ask(t["question"].get<std::string>(), gp);
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->ids, t["greedy_ids"].get<std::vector<int32_t>>());
}

TEST_P(VisionGolden, BadPicturesAreClearErrorsAndTheSessionGoesOn) {
  Session s(model_);
  GenerateParams gp;
  gp.max_new_tokens = 2;
  const auto missing = ImageInput::from_file(dir_ + "/no_such_picture.png");
  auto r = s.ask("What is this?", gp, &missing);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("no_such_picture.png"), std::string::npos) << r.error().message;
  const auto text = ImageInput::from_file(dir_ + "/config.json");
  EXPECT_FALSE(s.ask("What is this?", gp, &text).ok());
  const auto garbage = ImageInput::from_encoded({1, 2, 3, 4, 5});
  EXPECT_FALSE(s.ask("What is this?", gp, &garbage).ok());
  const auto lying = ImageInput::from_rgb(10, 10, std::vector<uint8_t>(12));
  EXPECT_FALSE(s.ask("What is this?", gp, &lying).ok());
  EXPECT_EQ(s.tokens_seen(), 0);
  EXPECT_EQ(s.turns(), 0);
  EXPECT_TRUE(s.ask("What is this?", gp).ok());
}

TEST_P(VisionGolden, APictureInALaterTurnEntersTheStateThere) {
  // Turn 1 without a picture, turn 2 with one: the kept state must equal feeding the same rows
  // (turn 1, its reply and end-of-text, the picture, turn 2) in a fresh session.
  const json& pic = expected_["pictures"][0];
  const auto image = ImageInput::from_file(dir_ + "/" + pic["file"].get<std::string>());
  GenerateParams gp;
  gp.max_new_tokens = 6;
  gp.ignore_eos = true;
  Session kept(model_);
  auto a = kept.ask("Hello there.", gp);
  ASSERT_TRUE(a.ok());
  auto b = kept.ask("What shapes do you see?", gp, &image);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->stats.image_rows, impl_->config().vision.rows());

  auto t1 = model_->tokenize(model_->format_user_turn("Hello there.", true));
  auto t2 = model_->tokenize(model_->format_user_turn("What shapes do you see?", false));
  ASSERT_TRUE(t1.ok() && t2.ok());
  std::vector<int32_t> before = *t1;
  before.insert(before.end(), a->ids.begin(), a->ids.end());
  before.push_back(model_->info().eos_token_id);
  Session fresh(model_);
  GenerateParams none;
  none.max_new_tokens = 0;  // feed only
  ASSERT_TRUE(fresh.generate_from_ids(before, none).ok());
  auto c = fresh.generate_from_ids(*t2, gp, &image);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(b->ids, c->ids);
  EXPECT_EQ(kept.tokens_seen(), fresh.tokens_seen());
}

TEST_P(VisionGolden, AMissingOrMisShapedTensorIsNamed) {
  namespace fs = std::filesystem;
  const fs::path tmp =
      fs::temp_directory_path() / ("mlmamba_pkg_" + GetParam() + std::to_string(::getpid()));
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  for (const char* f : {"model.safetensors", "tokenizer.json"})
    fs::copy_file(dir_ + "/" + f, tmp / f);
  std::ifstream in(dir_ + "/config.json");
  const json config = json::parse(in);
  auto load_with = [&](const json& c) {
    std::ofstream(tmp / "config.json") << c.dump();
    LoadParams p;
    p.model_dir = tmp;
    return Model::load(p);
  };
  json deeper = config;
  deeper["vision_backbone"]["encoders"][0]["feature_layer"] = 7;
  auto r = load_with(deeper);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("blocks."), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("missing"), std::string::npos) << r.error().message;
  json narrower = config;
  narrower["mlp"]["out_dim"] = 32;
  r = load_with(narrower);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("mlp.0.weight"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("expected [32,"), std::string::npos) << r.error().message;
  fs::remove_all(tmp);
}

TEST_P(VisionGolden, ATurnFedFromTextEqualsTheSameRowsFedByHand) {
  // A conversation reopened from disk is rebuilt from its text: picture, turn 1 in the template,
  // its known reply and end-of-text; then turn 2 in the follow-up form.
  const json& pic = expected_["pictures"][0];
  const auto image = ImageInput::from_file(dir_ + "/" + pic["file"].get<std::string>());
  const std::string q1 = pic["question"].get<std::string>(),
                    reply = "a red circle and a blue square",
                    q2 = pic["turn2"]["message"].get<std::string>();
  GenerateParams gp;
  gp.max_new_tokens = 8;
  gp.ignore_eos = true;
  Session s(model_);
  ASSERT_TRUE(s.feed_turn(q1, reply, &image).ok());
  EXPECT_EQ(s.turns(), 1);
  auto b = s.ask(q2, gp);
  ASSERT_TRUE(b.ok());

  Session by_hand(model_);
  auto t1 = model_->tokenize(model_->format_user_turn(q1, true) + reply + "<|endoftext|>");
  auto t2 = model_->tokenize(model_->format_user_turn(q2, false));
  ASSERT_TRUE(t1.ok() && t2.ok());
  GenerateParams none;
  none.max_new_tokens = 0;
  ASSERT_TRUE(by_hand.generate_from_ids(*t1, none, &image).ok());
  auto c = by_hand.generate_from_ids(*t2, gp);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(b->ids, c->ids);
  EXPECT_EQ(s.tokens_seen(), by_hand.tokens_seen());
}

INSTANTIATE_TEST_SUITE_P(Packages, VisionGolden,
                         ::testing::Values("mlmamba_tiny_dual", "mlmamba_tiny_siglip_odd"));

}  // namespace
}  // namespace mlmamba
