// Conversations: state kept between turns, snapshots, cancellation, limits, and the public API's
// errors on bad model folders.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "mlmamba/mlmamba.h"

namespace mlmamba {
namespace {

namespace fs = std::filesystem;
const std::string kTiny = std::string(MLMAMBA_FIXTURES) + "/mamba2_tiny_g1";

std::shared_ptr<const Model> load_tiny() {
  LoadParams p;
  p.model_dir = kTiny;
  p.device = Device::kCpu;
  auto m = Model::load(p);
  EXPECT_TRUE(m.ok()) << (m.ok() ? "" : m.error().message);
  return m.ok() ? *m : nullptr;
}

GenerateParams greedy(int n) {
  GenerateParams g;
  g.max_new_tokens = n;
  g.ignore_eos = true;
  return g;
}

TEST(Session, FollowUpReusesTheStateAndEqualsReRunningEverything) {
  auto model = load_tiny();
  ASSERT_TRUE(model);
  const std::vector<int32_t> first = {5, 17, 99, 250, 3, 8, 400}, second = {12, 13, 14, 600};
  Session s(model);
  auto a = s.generate_from_ids(first, greedy(6));
  ASSERT_TRUE(a.ok());
  auto b = s.generate_from_ids(second, greedy(6));
  ASSERT_TRUE(b.ok());
  // The follow-up fed only its own tokens plus the one sampled token not yet run.
  EXPECT_EQ(b->stats.prefill_tokens, static_cast<int>(second.size()) + 1);

  // Same conversation fed at once to a fresh session.
  std::vector<int32_t> all = first;
  all.insert(all.end(), a->ids.begin(), a->ids.end());
  all.insert(all.end(), second.begin(), second.end());
  Session fresh(model);
  auto c = fresh.generate_from_ids(all, greedy(6));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(b->ids, c->ids);
  EXPECT_EQ(s.tokens_seen(), fresh.tokens_seen());
}

TEST(Session, SnapshotAndRestoreGiveTheSameAnswerAgain) {
  auto model = load_tiny();
  ASSERT_TRUE(model);
  Session s(model);
  ASSERT_TRUE(s.generate_from_ids({1, 2, 3, 4, 5}, greedy(3)).ok());
  const auto snap = s.snapshot();
  auto x = s.generate_from_ids({42, 43}, greedy(8));
  ASSERT_TRUE(x.ok());
  ASSERT_TRUE(s.generate_from_ids({7, 7, 7}, greedy(4)).ok());  // moves the state on
  s.restore(snap);
  auto y = s.generate_from_ids({42, 43}, greedy(8));
  ASSERT_TRUE(y.ok());
  EXPECT_EQ(x->ids, y->ids);
}

TEST(Session, ChatTurnsUseTheTemplateAndCloseEachReply) {
  auto model = load_tiny();
  ASSERT_TRUE(model);
  // This transformers-format model has no chat template: ask() feeds the text as given.
  EXPECT_EQ(model->format_user_turn("  hi  ", true), "  hi  ");
  Session s(model);
  GenerateParams g;
  g.max_new_tokens = 4;
  auto r = s.ask("What color is the circle?", g);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(s.turns(), 1);
  auto r2 = s.ask("And the square?", g);
  ASSERT_TRUE(r2.ok());
  // The second prompt carried the unfed last token and the end-of-text closing the first reply.
  auto ids2 = model->tokenize("And the square?");
  ASSERT_TRUE(ids2.ok());
  EXPECT_EQ(r2->stats.prefill_tokens, static_cast<int>(ids2->size()) + 2);
}

TEST(Session, CancelFromAnotherThreadStopsWithinATokenAndKeepsThePartialAnswer) {
  auto model = load_tiny();
  ASSERT_TRUE(model);
  Session s(model);
  std::atomic<int> seen{0};
  GenerateParams g = greedy(1 << 20);
  g.on_token = [&](const Token&) { seen++; };
  std::thread stopper([&] {
    while (seen.load() < 5) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    s.cancel();
  });
  auto r = s.generate_from_ids({1, 2, 3}, g);
  stopper.join();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stop, StopReason::kCancelled);
  EXPECT_GE(r->ids.size(), 5u);
  EXPECT_LT(r->ids.size(), 1000u);
  // The session stays usable after a cancel.
  auto again = s.generate_from_ids({4}, greedy(2));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->ids.size(), 2u);
}

TEST(Session, StopsAtEndOfTextUnlessToldNotTo) {
  auto model = load_tiny();
  ASSERT_TRUE(model);
  const int eos = model->info().eos_token_id;
  ASSERT_EQ(eos, 0);
  // Find a prompt whose greedy continuation reaches id 0 within 64 tokens, then check the stop.
  for (int32_t start = 1; start < 200; ++start) {
    Session s(model);
    auto r = s.generate_from_ids({start}, greedy(64));
    ASSERT_TRUE(r.ok());
    const auto it = std::find(r->ids.begin(), r->ids.end(), eos);
    if (it == r->ids.end()) continue;
    Session t(model);
    GenerateParams g;
    g.max_new_tokens = 64;
    auto stopped = t.generate_from_ids({start}, g);
    ASSERT_TRUE(stopped.ok());
    EXPECT_EQ(stopped->stop, StopReason::kEndOfText);
    EXPECT_EQ(stopped->ids, std::vector<int32_t>(r->ids.begin(), it));
    return;
  }
  GTEST_SKIP() << "no prompt reached end-of-text";
}

TEST(Session, RejectsBadInputWithoutChangingTheConversation) {
  auto model = load_tiny();
  ASSERT_TRUE(model);
  Session s(model);
  ASSERT_TRUE(s.generate_from_ids({1, 2}, greedy(2)).ok());
  const int seen = s.tokens_seen();
  auto empty = s.generate_from_ids({}, greedy(2));
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.error().code, ErrorCode::kInvalidArgument);
  auto bad_id = s.generate_from_ids({1, 5000}, greedy(2));
  ASSERT_FALSE(bad_id.ok());
  EXPECT_NE(bad_id.error().message.find("5000"), std::string::npos);
  auto too_long =
      s.generate_from_ids(std::vector<int32_t>(model->info().max_sequence_length, 3), greedy(1));
  ASSERT_FALSE(too_long.ok());
  EXPECT_EQ(too_long.error().code, ErrorCode::kLimitExceeded);
  GenerateParams bad = greedy(2);
  bad.sampling.top_p = 0;
  EXPECT_FALSE(s.generate_from_ids({1}, bad).ok());
  EXPECT_EQ(s.tokens_seen(), seen);
}

class BadFolder : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mlmamba_bad_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    for (const char* f : {"config.json", "model.safetensors", "tokenizer.json"})
      fs::copy_file(kTiny + "/" + f, dir_ / f);
  }
  void TearDown() override { fs::remove_all(dir_); }
  Error load_error() {
    LoadParams p;
    p.model_dir = dir_;
    auto m = Model::load(p);
    EXPECT_FALSE(m.ok());
    return m.ok() ? Error{ErrorCode::kIo, ""} : m.error();
  }
  void write(const char* name, const std::string& text) {
    std::ofstream(dir_ / name, std::ios::binary) << text;
  }
  fs::path dir_;
};

TEST_F(BadFolder, MissingFolder) {
  LoadParams p;
  p.model_dir = dir_ / "nope";
  auto m = Model::load(p);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().code, ErrorCode::kNotFound);
}

TEST_F(BadFolder, ConfigWithAMissingField) {
  std::ifstream in(dir_ / "config.json");
  std::string text((std::istreambuf_iterator<char>(in)), {});
  const auto pos = text.find("\"state_size\"");
  ASSERT_NE(pos, std::string::npos);
  text.replace(pos, std::string("\"state_size\"").size(), "\"state_sizeX\"");
  write("config.json", text);
  const Error e = load_error();
  EXPECT_EQ(e.code, ErrorCode::kCorruptFile);
  EXPECT_NE(e.message.find("state_size"), std::string::npos) << e.message;
}

TEST_F(BadFolder, TruncatedWeightsNameTheFile) {
  const auto size = fs::file_size(dir_ / "model.safetensors");
  fs::resize_file(dir_ / "model.safetensors", size / 2);
  const Error e = load_error();
  EXPECT_EQ(e.code, ErrorCode::kCorruptFile);
  EXPECT_NE(e.message.find("model.safetensors"), std::string::npos) << e.message;
}

TEST_F(BadFolder, WeightsOfAnotherSizeNameTheTensor) {
  std::ifstream in(dir_ / "config.json");
  std::string text((std::istreambuf_iterator<char>(in)), {});
  const auto pos = text.find("\"state_size\": 16");
  ASSERT_NE(pos, std::string::npos);
  text.replace(pos, std::string("\"state_size\": 16").size(), "\"state_size\": 32");
  write("config.json", text);
  const Error e = load_error();
  EXPECT_NE(e.message.find("in_proj.weight"), std::string::npos) << e.message;
}

TEST_F(BadFolder, TokenizerThatIsNotOne) {
  write("tokenizer.json", "{\"hello\": 1}");
  const Error e = load_error();
  EXPECT_NE(e.message.find("tokenizer.json"), std::string::npos) << e.message;
}

TEST_F(BadFolder, CudaRequestedWithoutABackendIsAClearError) {
  LoadParams p;
  p.model_dir = dir_;
  p.device = Device::kCuda;
  auto m = Model::load(p);
  if (m.ok()) GTEST_SKIP() << "a CUDA device is present";
  EXPECT_EQ(m.error().code, ErrorCode::kBackend);
  EXPECT_FALSE(m.error().message.empty());
}

TEST(Session, AutoDeviceReportsWhyItFellBack) {
  LoadParams p;
  p.model_dir = kTiny;
  p.device = Device::kAuto;
  auto m = Model::load(p);
  ASSERT_TRUE(m.ok());
  if ((*m)->info().device == "cpu") {
    EXPECT_FALSE((*m)->info().fallback_reason.empty());
  }
  EXPECT_TRUE(load_tiny()->info().fallback_reason.empty());  // cpu asked, cpu given
}

}  // namespace
}  // namespace mlmamba
