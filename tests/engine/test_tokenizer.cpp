// The tokenizer against encodings written by the Hugging Face `tokenizers` library
// (tools/reference/make_tokenizer.py), plus error handling, streaming and speed.
#include "tokenizer.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

namespace mlmamba {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const fs::path kFixtures = fs::path(MLMAMBA_FIXTURES) / "tokenizer";

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json read_json(const fs::path& path) {
  return json::parse(read_text(path));
}

Tokenizer load(const std::string& name) {
  auto t = Tokenizer::from_file(kFixtures / name);
  if (!t.ok()) {
    ADD_FAILURE() << t.error().message;
    std::abort();
  }
  return std::move(t).value();
}

// Well-formed UTF-8 by the Unicode table, written independently of the tokenizer's own check.
bool well_formed_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
    const unsigned char c = b(i);
    size_t n = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c < 0x80) {
      n = 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
      n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      const unsigned char x = b(i + k);
      if (k == 1 ? (x < lo || x > hi) : (x & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

std::string printable(const std::string& s) {
  return json(s).dump();
}

// Every case of a fixture: the library's ids, its decode, and streaming that decode id by id.
void check_cases(const Tokenizer& tok, const json& cases, size_t* encoded_count) {
  size_t encoded = 0;
  for (const json& c : cases) {
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    const auto expected_text = c["decoded"].get<std::string>();
    const bool decode_only = c.value("decode_only", false);
    const std::string label =
        decode_only ? "decode-only " + c["ids"].dump() : printable(c["text"].get<std::string>());
    SCOPED_TRACE(label);
    if (!decode_only) {
      const auto got = tok.encode(c["text"].get<std::string>());
      ASSERT_TRUE(got.ok()) << got.error().message;
      EXPECT_EQ(got.value(), ids);
      ++encoded;
    }
    EXPECT_EQ(tok.decode(ids), expected_text);

    StreamDecoder stream(tok);
    std::string streamed;
    for (const int32_t id : ids) {
      const std::string chunk = stream.push(id);
      EXPECT_TRUE(well_formed_utf8(chunk)) << printable(chunk);
      streamed += chunk;
    }
    const std::string rest = stream.flush();
    EXPECT_TRUE(well_formed_utf8(rest));
    streamed += rest;
    EXPECT_EQ(streamed, expected_text);
  }
  if (encoded_count != nullptr) *encoded_count = encoded;
}

TEST(TokenizerFixture, MatchesLibraryOnHardCases) {
  const Tokenizer tok = load("tokenizer.json");
  const json cases = read_json(kFixtures / "cases.json");
  size_t encoded = 0;
  check_cases(tok, cases, &encoded);
  // Guards against a truncated or regenerated fixture quietly testing less.
  EXPECT_GE(encoded, 60u);
  EXPECT_GE(cases.size() - encoded, 10u);
}

TEST(TokenizerFixture, AddedTokenFlagsNfkcAndPrefixSpace) {
  const Tokenizer tok = load("flags_tokenizer.json");
  size_t encoded = 0;
  check_cases(tok, read_json(kFixtures / "flags_cases.json"), &encoded);
  EXPECT_GE(encoded, 30u);
}

TEST(TokenizerFixture, ByteLevelWithoutRegexAndWithoutNormalizer) {
  const Tokenizer tok = load("noregex_tokenizer.json");
  size_t encoded = 0;
  check_cases(tok, read_json(kFixtures / "noregex_cases.json"), &encoded);
  EXPECT_GE(encoded, 5u);
}

TEST(TokenizerFixture, MatchesLibraryOnRandomTexts) {
  const json fuzz = read_json(kFixtures / "fuzz_cases.json");
  const std::vector<std::pair<std::string, std::string>> sets = {
      {"main", "tokenizer.json"},
      {"flags", "flags_tokenizer.json"},
      {"noregex", "noregex_tokenizer.json"}};
  for (const auto& [key, file] : sets) {
    SCOPED_TRACE(file);
    ASSERT_TRUE(fuzz.contains(key));
    const Tokenizer tok = load(file);
    size_t encoded = 0;
    check_cases(tok, fuzz[key], &encoded);
    EXPECT_GE(encoded, 1000u);
  }
}

TEST(TokenizerFixture, LegacyMergeStringsGiveTheSameIds) {
  json file = read_json(kFixtures / "tokenizer.json");
  json& merges = file["model"]["merges"];
  ASSERT_TRUE(merges[0].is_array());
  for (json& m : merges) m = m[0].get<std::string>() + " " + m[1].get<std::string>();
  auto tok = Tokenizer::from_json(file.dump());
  ASSERT_TRUE(tok.ok()) << tok.error().message;
  check_cases(tok.value(), read_json(kFixtures / "cases.json"), nullptr);
}

TEST(TokenizerFixture, MergesChangeTheResult) {
  // Without merges every byte is its own token: proves the fixture ids depend on the merge table.
  json file = read_json(kFixtures / "tokenizer.json");
  file["model"]["merges"] = json::array();
  auto tok = Tokenizer::from_json(file.dump());
  ASSERT_TRUE(tok.ok()) << tok.error().message;
  const auto ids = tok->encode("Hello world");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(ids->size(), 11u);
  EXPECT_EQ(tok->decode(ids.value()), "Hello world");
}

TEST(Tokenizer, VocabularyLookups) {
  const Tokenizer tok = load("tokenizer.json");
  const json file = read_json(kFixtures / "tokenizer.json");
  int64_t max_id = -1;
  for (const auto& [token, id] : file["model"]["vocab"].items()) {
    max_id = std::max<int64_t>(max_id, id.get<int64_t>());
    EXPECT_EQ(tok.token_to_id(token), id.get<int32_t>()) << token;
  }
  for (const json& t : file["added_tokens"]) max_id = std::max<int64_t>(max_id, t["id"]);
  EXPECT_EQ(tok.vocab_size(), max_id + 1);
  EXPECT_LT(tok.vocab_size(), 1024);

  EXPECT_EQ(tok.token_to_id("<|endoftext|>"), 0);
  EXPECT_EQ(tok.token_to_id("<|padding|>"), 1);
  EXPECT_EQ(tok.token_to_id("  "), file["added_tokens"][4]["id"].get<int32_t>());
  EXPECT_EQ(tok.token_to_id("no such token"), -1);
  EXPECT_EQ(tok.token_to_id(""), -1);

  EXPECT_EQ(tok.token_bytes(0), "<|endoftext|>");
  EXPECT_EQ(tok.token_bytes(tok.token_to_id("\xC4\xA0")), " ");   // "Ġ" is the space byte
  EXPECT_EQ(tok.token_bytes(tok.token_to_id("\xC4\x8A")), "\n");  // "Ċ"
  EXPECT_EQ(tok.token_bytes(tok.token_to_id("    ")), "    ");
  EXPECT_EQ(tok.token_bytes(-1), "");
  EXPECT_EQ(tok.token_bytes(tok.vocab_size()), "");
}

TEST(Tokenizer, ChatTemplateUsesEndOfTextAsOneToken) {
  const Tokenizer tok = load("tokenizer.json");
  const auto ids = tok.encode("<|user|>\nhi<|endoftext|>\n<|assistant|>\n");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(std::count(ids->begin(), ids->end(), 0), 1);
  EXPECT_EQ(tok.decode(ids.value()), "<|user|>\nhi<|endoftext|>\n<|assistant|>\n");
}

TEST(StreamDecoder, HoldsBackSplitCharacters) {
  const Tokenizer tok = load("tokenizer.json");
  // "€" is E2 82 AC; the single-byte tokens are the byte-level characters for those bytes.
  const int32_t e2 = tok.token_to_id("\xC3\xA2");   // "â"
  const int32_t b82 = tok.token_to_id("\xC4\xA4");  // "Ĥ"
  const int32_t bac = tok.token_to_id("\xC2\xAC");  // "¬"
  ASSERT_GE(e2, 0);
  ASSERT_GE(b82, 0);
  ASSERT_GE(bac, 0);
  ASSERT_EQ(tok.token_bytes(b82), "\x82");
  StreamDecoder stream(tok);
  EXPECT_EQ(stream.push(e2), "");
  EXPECT_EQ(stream.push(b82), "");
  EXPECT_EQ(stream.push(bac), "\xE2\x82\xAC");
  EXPECT_EQ(stream.flush(), "");

  // A broken character becomes U+FFFD as soon as it can no longer be completed.
  const int32_t a = tok.token_to_id("a");
  EXPECT_EQ(stream.push(e2), "");
  EXPECT_EQ(stream.push(a),
            "\xEF\xBF\xBD"
            "a");
  EXPECT_EQ(stream.push(e2), "");
  EXPECT_EQ(stream.flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(stream.flush(), "");
}

TEST(Tokenizer, RoundTripsRandomText) {
  const Tokenizer tok = load("tokenizer.json");
  // Pieces that NFC leaves alone (the lone mark follows a space, which it cannot compose with), so
  // decode(encode(x)) must give x back exactly.
  const std::vector<std::string> pool = {
      "a",           "b",      "the",    "The",    " ",  "  ", "\n",
      "\t",          "\r\n",   "1",      "42",     "'s", "'",  "!",
      "...",         "é",      "Ж",      "λ",      "我", "한", "😀",
      "👍🏽",    "\u00a0", "\u3000", "_",      "-",  "x",  "<|endoftext|>",
      "<|padding|>", "<|",     "|>",     " \u0301"};
  std::mt19937 rng(1234);
  for (int round = 0; round < 300; ++round) {
    std::string text;
    const int n = static_cast<int>(rng() % 40);
    for (int k = 0; k < n; ++k) text += pool[rng() % pool.size()];
    SCOPED_TRACE(printable(text));
    const auto ids = tok.encode(text);
    ASSERT_TRUE(ids.ok()) << ids.error().message;
    EXPECT_EQ(tok.decode(ids.value()), text);
  }
}

TEST(Tokenizer, NeverFailsOnArbitraryBytes) {
  const Tokenizer tok = load("tokenizer.json");
  std::mt19937 rng(99);
  int invalid = 0;
  for (int round = 0; round < 2000; ++round) {
    std::string bytes(rng() % 24, '\0');
    for (char& c : bytes) c = static_cast<char>(rng() % 256);
    const auto ids = tok.encode(bytes);
    if (well_formed_utf8(bytes)) {
      EXPECT_TRUE(ids.ok()) << printable(bytes);
    } else {
      ++invalid;
      ASSERT_FALSE(ids.ok());
      EXPECT_EQ(ids.error().code, ErrorCode::kInvalidArgument);
    }
    // Any id sequence decodes to well-formed text.
    std::vector<int32_t> random_ids(rng() % 8);
    for (int32_t& id : random_ids) id = static_cast<int32_t>(rng() % 1100) - 20;
    EXPECT_TRUE(well_formed_utf8(tok.decode(random_ids)));
  }
  EXPECT_GT(invalid, 1000);
  for (const char* bad : {"\xC0\x80", "\xED\xA0\x80", "\xF4\x90\x80\x80", "abc\xE2\x82", "\xFF"}) {
    const auto ids = tok.encode(bad);
    ASSERT_FALSE(ids.ok()) << printable(bad);
    EXPECT_EQ(ids.error().code, ErrorCode::kInvalidArgument);
  }
}

TEST(Tokenizer, ConcurrentEncodesAgree) {
  const Tokenizer tok = load("tokenizer.json");
  const json cases = read_json(kFixtures / "cases.json");
  std::vector<std::string> texts;
  std::vector<std::vector<int32_t>> expected;
  for (const json& c : cases) {
    if (c.value("decode_only", false)) continue;
    texts.push_back(c["text"].get<std::string>());
    expected.push_back(c["ids"].get<std::vector<int32_t>>());
  }
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round) {
        for (size_t i = 0; i < texts.size(); ++i) {
          const size_t k = (i + static_cast<size_t>(t) * 7) % texts.size();
          const auto ids = tok.encode(texts[k]);
          if (!ids.ok() || ids.value() != expected[k]) ++mismatches[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(mismatches[t], 0) << "thread " << t;
}

// About 1 MB of English-like text: frequent words repeat (the word cache helps), and a long tail
// of rarer made-up words keeps missing it, as real prose does.
std::string english_like_megabyte() {
  const std::vector<std::string> common = {
      "the",    "model",     "reads",     "an",      "image",    "and",    "answers",   "questions",
      "about",  "what",      "it",        "sees",    "colour",   "circle", "square",    "red",
      "blue",   "because",   "selective", "state",   "space",    "scan",   "remembers", "forgets",
      "tokens", "quickly",   "they're",   "it's",    "2024",     "3.14",   "(see",      "below)",
      "Mamba",  "projector", "vision",    "encoder", "language", "is",     "a",         "of"};
  const std::vector<std::string> syllables = {"con", "ter", "ing", "pre",  "ment", "al",  "tion",
                                              "ver", "ble", "ous", "ex",   "ly",   "de",  "ri",
                                              "ca",  "po",  "sta", "ness", "un",   "ward"};
  std::mt19937 rng(7);
  std::string text;
  text.reserve((1 << 20) + 64);
  while (text.size() < (1u << 20)) {
    std::string w;
    if (rng() % 4 != 0) {
      w = common[rng() % common.size()];
    } else {
      for (int k = 0, n = 2 + static_cast<int>(rng() % 3); k < n; ++k) {
        w += syllables[rng() % syllables.size()];
      }
    }
    if (rng() % 9 == 0) w[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(w[0])));
    text += w;
    text += rng() % 17 == 0 ? ".\n" : (rng() % 11 == 0 ? ", " : " ");
  }
  return text;
}

TEST(Tokenizer, EncodesAMegabyteOfEnglish) {
  const Tokenizer tok = load("tokenizer.json");
  const std::string text = english_like_megabyte();
  const auto start = std::chrono::steady_clock::now();
  const auto ids = tok.encode(text);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(ids.ok());
  std::printf(
      "encoded %.2f MB of English-like text into %zu tokens in %.3f s (%.1f MB/s, one thread)\n",
      static_cast<double>(text.size()) / 1e6, ids->size(), seconds,
      static_cast<double>(text.size()) / 1e6 / seconds);
  EXPECT_GT(ids->size(), text.size() / 10);
  // Not EXPECT_EQ: a megabyte in a failure message helps nobody.
  EXPECT_TRUE(tok.decode(ids.value()) == text);
}

TEST(Tokenizer, LongWordWithoutSpaces) {
  // One 200k-byte word: merging must not be quadratic and the cache must not keep it.
  const Tokenizer tok = load("tokenizer.json");
  std::string text;
  for (int i = 0; i < 20000; ++i) text += "我们abcdef";
  const auto ids = tok.encode(text);
  ASSERT_TRUE(ids.ok());
  EXPECT_LT(ids->size(), text.size());
  EXPECT_TRUE(tok.decode(ids.value()) == text);
}

// --- errors -------------------------------------------------------------------------------------

class TokenizerErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mlmamba_tok_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    base_ = read_json(kFixtures / "tokenizer.json");
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path write(const std::string& name, const std::string& text) {
    const fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }

  static void expect_error(const Result<Tokenizer>& r, ErrorCode code, const std::string& needle) {
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, code) << r.error().message;
    EXPECT_NE(r.error().message.find(needle), std::string::npos) << r.error().message;
  }

  fs::path dir_;
  json base_;
};

TEST_F(TokenizerErrors, MissingFile) {
  const fs::path p = dir_ / "absent" / "tokenizer.json";
  expect_error(Tokenizer::from_file(p), ErrorCode::kNotFound, p.string());
}

TEST_F(TokenizerErrors, NotJson) {
  const fs::path p = write("garbage.json", "{ this is not json");
  expect_error(Tokenizer::from_file(p), ErrorCode::kCorruptFile, "garbage.json");
  expect_error(Tokenizer::from_json(""), ErrorCode::kCorruptFile, "JSON");
}

TEST_F(TokenizerErrors, JsonThatIsNotATokenizer) {
  const fs::path p = write("config.json", R"({"d_model": 768, "n_layer": 24})");
  expect_error(Tokenizer::from_file(p), ErrorCode::kCorruptFile, "config.json");
  expect_error(Tokenizer::from_json("[1, 2, 3]"), ErrorCode::kCorruptFile, "model");
  json j = base_;
  j["model"]["vocab"] = json::array({"a", "b"});
  expect_error(Tokenizer::from_json(j.dump()), ErrorCode::kCorruptFile, "vocab");
  j = base_;
  j["model"]["vocab"]["a"] = "seven";
  expect_error(Tokenizer::from_json(j.dump()), ErrorCode::kCorruptFile, "'a'");
  j = base_;
  j["model"]["vocab"]["a"] = -3;
  expect_error(Tokenizer::from_json(j.dump()), ErrorCode::kCorruptFile, "out of range");
  j = base_;
  j["added_tokens"][0]["special"] = "yes";
  expect_error(Tokenizer::from_json(j.dump()), ErrorCode::kCorruptFile, "tokenizer.json");
}

TEST_F(TokenizerErrors, MergeOfUnknownTokens) {
  json j = base_;
  j["model"]["merges"].push_back(json::array({"zzzq", "y"}));
  const fs::path p = write("badmerge.json", j.dump());
  expect_error(Tokenizer::from_file(p), ErrorCode::kCorruptFile, "zzzq");
  expect_error(Tokenizer::from_file(p), ErrorCode::kCorruptFile, "badmerge.json");
  // Both halves known, but their concatenation is not a token.
  j = base_;
  j["model"]["merges"].push_back(json::array({"q", "\xC4\xA0"}));
  expect_error(Tokenizer::from_json(j.dump()), ErrorCode::kCorruptFile, "not in the vocabulary");
  j = base_;
  j["model"]["merges"].push_back("a b c");
  expect_error(Tokenizer::from_json(j.dump()), ErrorCode::kCorruptFile, "merge");
  j = base_;
  j["model"]["merges"].push_back(7);
  expect_error(Tokenizer::from_json(j.dump()), ErrorCode::kCorruptFile, "merge");
}

TEST_F(TokenizerErrors, UnsupportedPieces) {
  json j = base_;
  j["model"]["type"] = "WordPiece";
  expect_error(Tokenizer::from_json(j.dump()), ErrorCode::kUnsupported, "WordPiece");
  j = base_;
  j["normalizer"] = {{"type", "Lowercase"}};
  expect_error(Tokenizer::from_json(j.dump()), ErrorCode::kUnsupported, "Lowercase");
  j = base_;
  j["normalizer"] = {{"type", "Sequence"},
                     {"normalizers", {{{"type", "NFC"}}, {{"type", "Strip"}}}}};
  expect_error(Tokenizer::from_json(j.dump()), ErrorCode::kUnsupported, "Strip");
  j = base_;
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  expect_error(Tokenizer::from_json(j.dump()), ErrorCode::kUnsupported, "Whitespace");
  j = base_;
  j["pre_tokenizer"] = nullptr;
  expect_error(Tokenizer::from_json(j.dump()), ErrorCode::kUnsupported, "pre_tokenizer");
  j = base_;
  j["decoder"] = {{"type", "WordPiece"}};
  expect_error(Tokenizer::from_json(j.dump()), ErrorCode::kUnsupported, "decoder");
  j = base_;
  j["model"]["dropout"] = 0.1;
  expect_error(Tokenizer::from_json(j.dump()), ErrorCode::kUnsupported, "dropout");
}

TEST_F(TokenizerErrors, NormalizerSequenceIsAccepted) {
  // The counterpart of the refusals above: an NFC inside a Sequence loads and still composes.
  json j = base_;
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFC"}}}}};
  auto tok = Tokenizer::from_json(j.dump());
  ASSERT_TRUE(tok.ok()) << tok.error().message;
  const auto composed = tok->encode("caf\xC3\xA9");
  const auto decomposed = tok->encode("cafe\xCC\x81");
  ASSERT_TRUE(composed.ok() && decomposed.ok());
  EXPECT_EQ(composed.value(), decomposed.value());
}

}  // namespace
}  // namespace mlmamba
