// mlmamba-cli as scripts use it: stdout JSON, exit codes, error messages on stderr.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

namespace {

using nlohmann::json;

struct CliRun {
  int code = -1;
  std::string out;  // stdout; stderr goes to the test log
};

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

CliRun cli(const std::vector<std::string>& args) {
  std::string cmd = quote(MLMAMBA_CLI);
  for (const auto& a : args) cmd += " " + quote(a);
  CliRun r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

const std::string kFixtures = MLMAMBA_FIXTURES;

json expected(const std::string& folder) {
  std::ifstream in(kFixtures + "/" + folder + "/expected.json");
  return json::parse(in);
}

TEST(Cli, GenerateRawJsonEqualsTransformersGreedy) {
  for (const char* folder : {"mamba2_tiny_g1", "mamba2_tiny_g2"}) {
    for (const auto& pr : expected(folder)["prompts"]) {
      if (pr["text"].is_null()) continue;
      const auto want = pr["greedy_ids"].get<std::vector<int>>();
      CliRun r = cli({"generate", "--model", kFixtures + "/" + folder, "--prompt",
                      pr["text"].get<std::string>(), "--raw", "--json", "--ignore-eos",
                      "--max-tokens", std::to_string(want.size())});
      ASSERT_EQ(r.code, 0) << r.out;
      const json j = json::parse(r.out);  // exactly one JSON object on stdout
      EXPECT_EQ(j["prompt_ids"].get<std::vector<int>>(), pr["ids"].get<std::vector<int>>());
      EXPECT_EQ(j["generated_ids"].get<std::vector<int>>(), want) << folder << " " << pr["name"];
      EXPECT_EQ(j["stop"], "max_tokens");
      for (const char* k : {"prefill_tokens", "prefill_ms", "time_to_first_token_ms",
                            "decode_tokens_per_s", "peak_memory_bytes"})
        EXPECT_TRUE(j["stats"].contains(k)) << k;
    }
  }
}

TEST(Cli, AnswersAboutAPictureLikeTheReference) {
  const std::string pkg = kFixtures + "/mlmamba_tiny_dual";
  std::ifstream in(pkg + "/expected.json");
  const json e = json::parse(in);
  const json& pic = e["pictures"][0];
  CliRun r = cli({"generate", "--model", pkg, "--image", pkg + "/" + pic["file"].get<std::string>(),
                  "--prompt", pic["question"].get<std::string>(), "--json", "--ignore-eos",
                  "--max-tokens", "24"});
  ASSERT_EQ(r.code, 0) << r.out;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["generated_ids"], pic["greedy_ids"]);
  EXPECT_EQ(j["stats"]["image_rows"], e["visual_rows"]);
  EXPECT_GT(j["stats"]["image_encode_ms"].get<double>(), 0);
}

TEST(Cli, PictureErrorsHaveTheirExitCode) {
  const std::string pkg = kFixtures + "/mlmamba_tiny_dual";
  EXPECT_EQ(cli({"generate", "--model", pkg, "--image", "/no/such.png", "--prompt", "x"}).code, 4);
  EXPECT_EQ(
      cli({"generate", "--model", pkg, "--image", pkg + "/config.json", "--prompt", "x"}).code, 4);
  // A text-only model cannot take a picture.
  EXPECT_EQ(cli({"generate", "--model", kFixtures + "/mamba2_tiny_g1", "--image",
                 pkg + "/shapes_96x80.png", "--prompt", "x"})
                .code,
            4);
}

TEST(Cli, ChatKeepsTheConversationAndTakesCommands) {
  const std::string pkg = kFixtures + "/mlmamba_tiny_dual";
  const std::string script =
      "/image " + pkg +
      "/shapes_96x80.png\\nWhat shapes do you see?\\n/stats\\n"
      "And what colour is the circle?\\n/stats\\n/reset\\n/image /no/such.png\\nHi\\n"
      "Hello again\\n/quit\\n";
  const std::string cmd = "printf '" + script + "' | " + quote(MLMAMBA_CLI) + " chat --model " +
                          quote(pkg) + " --max-tokens 8";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int status = pclose(p);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << out;
  EXPECT_NE(out.find("(picture attached to the next question)"), std::string::npos) << out;
  // The first /stats shows the picture's rows, the second (a follow-up) none.
  const auto first = out.find("image ");
  ASSERT_NE(first, std::string::npos) << out;
  EXPECT_NE(out.find("(64 rows)", first), std::string::npos) << out;
  EXPECT_NE(out.find("(0 rows)", first), std::string::npos) << out;
  EXPECT_NE(out.find("(new conversation)"), std::string::npos);
  EXPECT_NE(out.find("error: "), std::string::npos)
      << out;  // the missing picture, reported in place
}

TEST(Cli, EvalScoresCountsBadLinesAndWritesPredictions) {
  const std::string pkg = kFixtures + "/mlmamba_tiny_dual";
  const std::string picture = pkg + "/shapes_96x80.png";
  // The model's own answer, then judged with the contract's normalisation (case, spaces, a period).
  CliRun g = cli({"generate", "--model", pkg, "--image", picture, "--prompt", "What is here?",
                  "--json", "--max-tokens", "12"});
  ASSERT_EQ(g.code, 0);
  std::string answer = json::parse(g.out)["text"];
  for (char& c : answer) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  const std::string dir = ::testing::TempDir() + "/mlmamba_eval";
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(picture, dir + "/pic.png",
                             std::filesystem::copy_options::overwrite_existing);
  {
    std::ofstream f(dir + "/data.jsonl");
    f << json{{"image", "pic.png"},
              {"question", "What is here?"},
              {"answer", "  " + answer + ". "},
              {"family", "a"}}
             .dump()
      << "\n";
    f << json{{"image", "pic.png"},
              {"question", "What is here?"},
              {"answer", "surely not this"},
              {"family", "a"}}
             .dump()
      << "\n";
    f << "{this is not json\n";
    f << json{{"image", "missing.png"}, {"question", "x"}, {"answer", "y"}, {"family", "b"}}.dump()
      << "\n";
  }
  CliRun r = cli({"eval", "--model", pkg, "--data", dir + "/data.jsonl", "--json", "--predictions",
                  dir + "/pred.jsonl", "--max-tokens", "12"});
  ASSERT_EQ(r.code, 0) << r.out;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["overall"]["total"], 4);
  EXPECT_EQ(j["overall"]["correct"], 1);
  EXPECT_EQ(j["errors"], 2);
  EXPECT_EQ(j["families"]["a"]["correct"], 1);
  EXPECT_EQ(j["families"]["a"]["total"], 2);
  EXPECT_EQ(j["families"]["b"]["total"], 1);
  std::ifstream p(dir + "/pred.jsonl");
  std::vector<json> lines;
  for (std::string line; std::getline(p, line);) lines.push_back(json::parse(line));
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0]["correct"], true);
  EXPECT_EQ(lines[1]["correct"], false);
  EXPECT_FALSE(lines[1]["prediction"].get<std::string>().empty());
  EXPECT_TRUE(lines[2].contains("error"));
  EXPECT_TRUE(lines[3].contains("error"));
  // A minimum the result misses is its own exit code.
  EXPECT_EQ(
      cli({"eval", "--model", pkg, "--data", dir + "/data.jsonl", "--min-accuracy", "0.9"}).code,
      6);
  EXPECT_EQ(cli({"eval", "--model", pkg, "--data", dir + "/nothing.jsonl"}).code, 4);
}

TEST(Cli, TheBundledDemoModelIsTheDefault) {
  CliRun r = cli({"generate", "--image",
                  std::string(MLMAMBA_SOURCE_DIR) + "/resources/samples/shapes-3.png", "--prompt",
                  "How many shapes are there?", "--json"});
  ASSERT_EQ(r.code, 0) << r.out;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["stop"], "end_of_text");
  EXPECT_FALSE(j["text"].get<std::string>().empty());
  CliRun info = cli({"info", "--json"});
  ASSERT_EQ(info.code, 0);
  EXPECT_EQ(json::parse(info.out)["has_vision"], true);
}

TEST(Cli, StreamsTextWithoutJson) {
  CliRun r = cli({"generate", "--model", kFixtures + "/mamba2_tiny_g1", "--prompt", "hello",
                  "--max-tokens", "5", "--ignore-eos"});
  ASSERT_EQ(r.code, 0);
  EXPECT_FALSE(r.out.empty());
  EXPECT_EQ(r.out.back(), '\n');
}

TEST(Cli, SamplingIsReproducibleWithASeed) {
  const std::vector<std::string> args = {"generate",
                                         "--model",
                                         kFixtures + "/mamba2_tiny_g1",
                                         "--prompt",
                                         "hello",
                                         "--json",
                                         "--ignore-eos",
                                         "--max-tokens",
                                         "16",
                                         "--temperature",
                                         "1.0",
                                         "--top-k",
                                         "50",
                                         "--top-p",
                                         "0.9",
                                         "--seed",
                                         "3"};
  CliRun a = cli(args), b = cli(args);
  ASSERT_EQ(a.code, 0);
  EXPECT_EQ(json::parse(a.out)["generated_ids"], json::parse(b.out)["generated_ids"]);
}

TEST(Cli, TokenizeAndInfo) {
  CliRun r = cli(
      {"tokenize", "--model", kFixtures + "/mamba2_tiny_g1", "--text", "Hello world", "--json"});
  ASSERT_EQ(r.code, 0);
  const json j = json::parse(r.out);
  EXPECT_FALSE(j["ids"].empty());
  EXPECT_EQ(j["decoded"], "Hello world");
  CliRun i = cli({"info", "--model", kFixtures + "/mamba2_tiny_g2", "--json"});
  ASSERT_EQ(i.code, 0);
  const json k = json::parse(i.out);
  EXPECT_EQ(k["ngroups"], 2);
  EXPECT_EQ(k["format"], "transformers-mamba2");
  EXPECT_EQ(k["n_layer"], 3);
}

TEST(Cli, BenchPrintsRates) {
  CliRun r = cli({"bench", "--model", kFixtures + "/mamba2_tiny_g1", "--prompt-tokens", "40",
                  "--gen-tokens", "8", "--repeat", "1"});
  ASSERT_EQ(r.code, 0);
  const json j = json::parse(r.out);
  EXPECT_GT(j["prefill_tokens_per_s"].get<double>(), 0);
  EXPECT_GT(j["decode_tokens_per_s"].get<double>(), 0);
}

TEST(Cli, ExitCodesScriptsCanRelyOn) {
  EXPECT_EQ(cli({}).code, 2);
  EXPECT_EQ(cli({"frobnicate"}).code, 2);
  EXPECT_EQ(cli({"generate", "--model", kFixtures + "/mamba2_tiny_g1"}).code, 2);  // no prompt
  EXPECT_EQ(
      cli({"generate", "--model", kFixtures + "/mamba2_tiny_g1", "--prompt", "x", "--top-p", "7"})
          .code,
      2);
  EXPECT_EQ(
      cli({"generate", "--model", kFixtures + "/mamba2_tiny_g1", "--prompt", "x", "--bogus"}).code,
      2);
  EXPECT_EQ(cli({"generate", "--model", kFixtures + "/mamba2_tiny_g1", "--prompt", "x", "--device",
                 "tpu"})
                .code,
            2);
  CliRun missing = cli({"generate", "--model", "/no/such/model", "--prompt", "x", "--json"});
  EXPECT_EQ(missing.code, 3);
  EXPECT_TRUE(json::parse(missing.out).contains("error"));
  EXPECT_EQ(cli({"info", "--model", kFixtures + "/tokenizer"}).code,
            3);  // a folder without a model
  // Without a usable GPU, asking for one is its own exit code; with one, it just works.
  const int cuda = cli({"generate", "--model", kFixtures + "/mamba2_tiny_g1", "--prompt", "x",
                        "--raw", "--device", "cuda", "--max-tokens", "1"})
                       .code;
  EXPECT_TRUE(cuda == 5 || cuda == 0) << cuda;
  CliRun v = cli({"--version"});
  EXPECT_EQ(v.code, 0);
  EXPECT_NE(v.out.find("mlmamba-cli "), std::string::npos);
}

}  // namespace
