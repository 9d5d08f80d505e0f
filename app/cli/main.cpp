// mlmamba-cli: the engine for scripts and terminals. Exit codes are part of the interface:
//   0 success, 1 generation failed, 2 bad command line, 3 model could not be loaded,
//   4 input rejected (prompt too long, bad token id, unreadable picture), 5 requested device
//   unavailable, 6 eval accuracy below the asked minimum, 130 interrupted.
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "mlmamba/mlmamba.h"
#include "options.h"

namespace {

using mlmamba::ErrorCode;
using nlohmann::json;

enum Exit {
  kOk = 0,
  kFailed = 1,
  kUsage = 2,
  kModel = 3,
  kInput = 4,
  kDevice = 5,
  kBelowTarget = 6,
  kInterrupted = 130
};

constexpr const char* kUsageText = R"(usage: mlmamba-cli <command> [options]

commands:
  generate   answer a prompt (about a picture with --image), streaming the answer
  chat       interactive conversation: /image PATH attaches a picture, /reset, /stats, /quit
  tokenize   show the token ids of a text
  info       describe a model
  bench      time prefill and decode (JSON)
  eval       accuracy over a JSONL of {"image", "question", "answer", "family"}

common options:
  --model DIR              model folder (package, transformers Mamba-2 or mamba_ssm); default: the
                           bundled Shapes demo model
  --device auto|cpu|cuda   where to run (default auto; the reason for any fallback is reported)
  --threads N              CPU threads (default: one per core)
  --json                   print one JSON object instead of text

generate:
  --prompt TEXT            the question or text
  --image FILE             a picture to ask about (PNG, JPEG, BMP, WebP, TIFF)
  --raw                    tokenise TEXT exactly as given (no chat template)
  --max-tokens N           new tokens at most (default: the model's own; 512 for the released one)
  --ignore-eos             do not stop at end-of-text
  --temperature T          0 = greedy (default)
  --top-k K  --top-p P  --repetition-penalty R  --seed S

chat:      --image FILE (for the first question), the sampling options of generate
tokenize:  --text TEXT
eval:      --data FILE.jsonl [--predictions OUT.jsonl] [--min-accuracy A] [--min-family-accuracy A]
           [--limit N]; exit code 6 when below a minimum
bench:     --prompt-tokens N (default 512)  --gen-tokens N (default 128)  --repeat N (default 3)
)";

std::atomic<mlmamba::Session*> g_session{nullptr};
std::atomic<bool> g_interrupted{false};

void on_sigint(int) {
  g_interrupted.store(true);
  if (mlmamba::Session* s = g_session.load()) s->cancel();  // only sets an atomic flag
}

int fail(int code, const std::string& message, bool as_json) {
  if (as_json) {
    std::cout << json{{"error", message}, {"exit_code", code}}.dump() << std::endl;
  }
  std::cerr << "mlmamba-cli: " << message << std::endl;
  return code;
}

int exit_for(const mlmamba::Error& e) {
  switch (e.code) {
    // Past loading, these are all about what was asked: the prompt, the picture file or its
    // content.
    case ErrorCode::kLimitExceeded:
    case ErrorCode::kNotFound:
    case ErrorCode::kCorruptFile:
    case ErrorCode::kUnsupported:
    case ErrorCode::kInvalidArgument:
      return kInput;
    case ErrorCode::kBackend:
      return kDevice;
    case ErrorCode::kCancelled:
      return kInterrupted;
    default:
      return kFailed;
  }
}

json stats_json(const mlmamba::Stats& s) {
  return json{{"image_encode_ms", s.image_encode_ms},
              {"image_rows", s.image_rows},
              {"prefill_tokens", s.prefill_tokens},
              {"prefill_ms", s.prefill_ms},
              {"time_to_first_token_ms", s.time_to_first_token_ms},
              {"generated_tokens", s.generated_tokens},
              {"decode_ms", s.decode_ms},
              {"decode_tokens_per_s", s.decode_tokens_per_s},
              {"total_ms", s.total_ms},
              {"peak_memory_bytes", s.peak_memory_bytes}};
}

json info_json(const mlmamba::ModelInfo& i) {
  return json{{"format", i.format},
              {"name", i.name},
              {"device", i.device},
              {"fallback_reason", i.fallback_reason},
              {"weight_dtype", i.weight_dtype},
              {"parameters", i.parameters},
              {"d_model", i.d_model},
              {"n_layer", i.n_layer},
              {"vocab_size", i.vocab_size},
              {"d_state", i.d_state},
              {"headdim", i.headdim},
              {"nheads", i.nheads},
              {"ngroups", i.ngroups},
              {"chunk_size", i.chunk_size},
              {"max_sequence_length", i.max_sequence_length},
              {"eos_token_id", i.eos_token_id},
              {"default_max_new_tokens", i.default_max_new_tokens},
              {"has_vision", i.has_vision},
              {"image_size", i.image_size},
              {"image_rows", i.image_rows},
              {"encoders", i.encoders}};
}

struct Loaded {
  std::shared_ptr<const mlmamba::Model> model;
  int exit = kOk;
};

// The demo model shipped with the program: ../share/mlmamba/models/shapes-demo when installed,
// resources/models/shapes-demo in the source tree when run from a build folder.
std::string bundled_model() {
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  std::vector<std::filesystem::path> candidates;
  if (!ec)
    candidates.push_back(self.parent_path() / ".." / "share" / "mlmamba" / "models" /
                         "shapes-demo");
  candidates.push_back(std::filesystem::path(MLMAMBA_SOURCE_DIR) / "resources" / "models" /
                       "shapes-demo");
  for (const auto& c : candidates) {
    if (std::filesystem::is_regular_file(c / "config.json", ec))
      return c.lexically_normal().string();
  }
  return {};
}

Loaded load_model(const mlmamba::cli::Options& o, bool as_json) {
  Loaded l;
  const std::string folder = o.has("model") ? o.str("model") : bundled_model();
  if (folder.empty()) {
    l.exit = fail(kUsage, "no --model DIR given and no bundled model found", as_json);
    return l;
  }
  auto device = mlmamba::parse_device(o.str("device", "auto"));
  if (!device.ok()) {
    l.exit = fail(kUsage, device.error().message, as_json);
    return l;
  }
  auto threads = o.integer("threads", 0, 0, 1024);
  if (!threads.ok()) {
    l.exit = fail(kUsage, threads.error().message, as_json);
    return l;
  }
  mlmamba::LoadParams p;
  p.model_dir = folder;
  p.device = *device;
  p.threads = *threads;
  auto m = mlmamba::Model::load(p);
  if (!m.ok()) {
    l.exit = fail(m.error().code == ErrorCode::kBackend ? kDevice : kModel,
                  "cannot load model: " + m.error().message, as_json);
    return l;
  }
  l.model = *m;
  if (!l.model->info().fallback_reason.empty() && !as_json) {
    std::cerr << "mlmamba-cli: running on " << l.model->info().device << ": "
              << l.model->info().fallback_reason << std::endl;
  }
  return l;
}

const std::set<std::string> kCommon = {"model", "device", "threads"};
std::set<std::string> with_common(std::set<std::string> s) {
  s.insert(kCommon.begin(), kCommon.end());
  return s;
}

const std::set<std::string> kSamplingOptions = {"max-tokens", "temperature",        "top-k",
                                                "top-p",      "repetition-penalty", "seed"};

// Sampling flags into params; the answer length defaults to the model's own.
mlmamba::Result<mlmamba::GenerateParams> generate_params(const mlmamba::cli::Options& o,
                                                         const mlmamba::ModelInfo& info) {
  mlmamba::GenerateParams gp;
  MLM_ASSIGN_OR_RETURN(gp.max_new_tokens,
                       o.integer("max-tokens", info.default_max_new_tokens, 0, 1 << 20));
  MLM_ASSIGN_OR_RETURN(const double temperature, o.number("temperature", 0.0, 0.0, 100.0));
  MLM_ASSIGN_OR_RETURN(gp.sampling.top_k, o.integer("top-k", 0, 0, 1 << 24));
  MLM_ASSIGN_OR_RETURN(const double top_p, o.number("top-p", 1.0, 1e-6, 1.0));
  MLM_ASSIGN_OR_RETURN(const double rep, o.number("repetition-penalty", 1.0, 1e-3, 1e3));
  MLM_ASSIGN_OR_RETURN(gp.sampling.seed, o.u64("seed", 0));
  gp.sampling.temperature = static_cast<float>(temperature);
  gp.sampling.top_p = static_cast<float>(top_p);
  gp.sampling.repetition_penalty = static_cast<float>(rep);
  gp.ignore_eos = o.has("ignore-eos");
  return gp;
}

void stream_to_stdout(const mlmamba::Token& t) {
  std::fwrite(t.text.data(), 1, t.text.size(), stdout);
  std::fflush(stdout);
}

int cmd_generate(const std::vector<std::string>& args) {
  std::set<std::string> valued = with_common(kSamplingOptions);
  valued.insert({"prompt", "image"});
  auto opts = mlmamba::cli::Options::parse(args, valued, {"raw", "json", "ignore-eos"});
  if (!opts.ok()) return fail(kUsage, opts.error().message, false);
  const auto& o = *opts;
  const bool as_json = o.has("json");
  if (!o.has("prompt")) return fail(kUsage, "--prompt TEXT is required", as_json);

  Loaded l = load_model(o, as_json);
  if (!l.model) return l.exit;
  auto gp = generate_params(o, l.model->info());
  if (!gp.ok()) return fail(kUsage, gp.error().message, as_json);
  const std::string prompt = o.str("prompt");
  const bool raw = o.has("raw");
  auto ids = l.model->tokenize(raw ? prompt : l.model->format_user_turn(prompt, true));
  if (!ids.ok()) return fail(kInput, ids.error().message, as_json);
  std::optional<mlmamba::ImageInput> image;
  if (o.has("image")) image = mlmamba::ImageInput::from_file(o.str("image"));
  if (!as_json) gp->on_token = stream_to_stdout;

  mlmamba::Session session(l.model);
  g_session.store(&session);
  std::signal(SIGINT, on_sigint);
  auto gen = session.generate_from_ids(*ids, *gp, image ? &*image : nullptr);
  g_session.store(nullptr);
  if (!gen.ok()) return fail(exit_for(gen.error()), gen.error().message, as_json);

  const auto& info = l.model->info();
  if (as_json) {
    json out{{"prompt_ids", *ids},
             {"generated_ids", gen->ids},
             {"text", gen->text},
             {"stop", mlmamba::stop_reason_name(gen->stop)},
             {"device", info.device},
             {"fallback_reason", info.fallback_reason},
             {"stats", stats_json(gen->stats)}};
    // Replacement characters keep the JSON valid if the model emits broken UTF-8.
    std::cout << out.dump(-1, ' ', false, json::error_handler_t::replace) << std::endl;
  } else {
    std::cout << std::endl;
  }
  return gen->stop == mlmamba::StopReason::kCancelled ? kInterrupted : kOk;
}

void print_stats(const mlmamba::Stats& s) {
  std::cout << "image " << s.image_encode_ms << " ms (" << s.image_rows << " rows), prompt "
            << s.prefill_tokens << " rows in " << s.prefill_ms << " ms, first token after "
            << s.time_to_first_token_ms << " ms, " << s.generated_tokens << " tokens at "
            << s.decode_tokens_per_s << " tokens/s, peak memory " << s.peak_memory_bytes / (1 << 20)
            << " MiB" << std::endl;
}

// An interactive conversation. The session keeps the model's state between turns, so each
// follow-up costs only its own tokens. Ctrl+C stops the answer being written, not the program.
int cmd_chat(const std::vector<std::string>& args) {
  std::set<std::string> valued = with_common(kSamplingOptions);
  valued.insert("image");
  auto opts = mlmamba::cli::Options::parse(args, valued, {"ignore-eos"});
  if (!opts.ok()) return fail(kUsage, opts.error().message, false);
  Loaded l = load_model(*opts, false);
  if (!l.model) return l.exit;
  auto gp = generate_params(*opts, l.model->info());
  if (!gp.ok()) return fail(kUsage, gp.error().message, false);
  gp->on_token = stream_to_stdout;
  const auto& info = l.model->info();
  std::cerr << "mlmamba-cli chat: " << info.name << " on " << info.device
            << (info.has_vision ? "; /image PATH attaches a picture" : "")
            << ", /reset, /stats, /quit" << std::endl;

  mlmamba::Session session(l.model);
  std::optional<mlmamba::ImageInput> image;
  if (opts->has("image")) image = mlmamba::ImageInput::from_file(opts->str("image"));
  mlmamba::Stats last{};
  bool have_stats = false;
  std::signal(SIGINT, on_sigint);
  std::string line;
  while (true) {
    std::cout << "> " << std::flush;
    if (!std::getline(std::cin, line)) break;
    if (line.empty()) continue;
    if (line == "/quit" || line == "/exit") break;
    if (line == "/reset") {
      session.reset();
      image.reset();
      std::cout << "(new conversation)" << std::endl;
      continue;
    }
    if (line == "/stats") {
      if (have_stats) {
        print_stats(last);
      } else {
        std::cout << "(no answer yet)" << std::endl;
      }
      continue;
    }
    if (line.rfind("/image", 0) == 0) {
      const auto b = line.find_first_not_of(' ', 6);
      if (b == std::string::npos) {
        std::cout << "usage: /image PATH" << std::endl;
        continue;
      }
      image = mlmamba::ImageInput::from_file(line.substr(b));
      std::cout << "(picture attached to the next question)" << std::endl;
      continue;
    }
    g_session.store(&session);
    auto gen = session.ask(line, *gp, image ? &*image : nullptr);
    g_session.store(nullptr);
    if (!gen.ok()) {
      std::cout << "error: " << gen.error().message << std::endl;
      if (image) image.reset();  // a bad picture is not retried with every question
      continue;
    }
    image.reset();
    std::cout << std::endl;
    last = gen->stats;
    have_stats = true;
  }
  std::cout << std::endl;
  return kOk;
}

int cmd_tokenize(const std::vector<std::string>& args) {
  auto opts = mlmamba::cli::Options::parse(args, with_common({"text"}), {"json"});
  if (!opts.ok()) return fail(kUsage, opts.error().message, false);
  const bool as_json = opts->has("json");
  if (!opts->has("text")) return fail(kUsage, "--text TEXT is required", as_json);
  Loaded l = load_model(*opts, as_json);
  if (!l.model) return l.exit;
  auto ids = l.model->tokenize(opts->str("text"));
  if (!ids.ok()) return fail(kInput, ids.error().message, as_json);
  const std::string decoded = l.model->detokenize(*ids);
  if (as_json) {
    std::cout << json{{"ids", *ids}, {"decoded", decoded}}.dump(-1, ' ', false,
                                                                json::error_handler_t::replace)
              << std::endl;
  } else {
    for (size_t i = 0; i < ids->size(); ++i) std::cout << (i ? " " : "") << (*ids)[i];
    std::cout << std::endl;
  }
  return kOk;
}

// The contract's scoring: lowercase, spaces trimmed, one final period dropped.
std::string normalise_answer(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  auto trim = [](std::string& t) {
    const auto b = t.find_first_not_of(" \t\r\n");
    const auto e = t.find_last_not_of(" \t\r\n");
    t = b == std::string::npos ? std::string() : t.substr(b, e - b + 1);
  };
  trim(s);
  if (!s.empty() && s.back() == '.') s.pop_back();
  trim(s);
  return s;
}

// Accuracy over a JSONL of {"image", "question", "answer", "family"}. Every line gets a fresh
// conversation. A bad line or a missing picture is reported and counted wrong, never fatal.
int cmd_eval(const std::vector<std::string>& args) {
  std::set<std::string> valued = with_common(
      {"data", "predictions", "max-tokens", "min-accuracy", "min-family-accuracy", "limit"});
  auto opts = mlmamba::cli::Options::parse(args, valued, {"json"});
  if (!opts.ok()) return fail(kUsage, opts.error().message, false);
  const auto& o = *opts;
  const bool as_json = o.has("json");
  if (!o.has("data")) return fail(kUsage, "--data FILE.jsonl is required", as_json);
  auto min_all = o.number("min-accuracy", 0.0, 0.0, 1.0);
  auto min_family = o.number("min-family-accuracy", 0.0, 0.0, 1.0);
  auto limit = o.integer("limit", 1 << 30, 1, 1 << 30);
  if (!min_all.ok()) return fail(kUsage, min_all.error().message, as_json);
  if (!min_family.ok()) return fail(kUsage, min_family.error().message, as_json);
  if (!limit.ok()) return fail(kUsage, limit.error().message, as_json);
  const std::filesystem::path data = o.str("data");
  std::ifstream in(data);
  if (!in) return fail(kInput, "cannot read " + data.string(), as_json);
  std::ofstream predictions;
  if (o.has("predictions")) {
    predictions.open(o.str("predictions"), std::ios::trunc);
    if (!predictions) return fail(kUsage, "cannot write " + o.str("predictions"), as_json);
  }
  Loaded l = load_model(o, as_json);
  if (!l.model) return l.exit;
  auto gp = generate_params(o, l.model->info());
  if (!gp.ok()) return fail(kUsage, gp.error().message, as_json);

  struct Tally {
    int correct = 0, total = 0;
  };
  std::map<std::string, Tally> families;
  Tally all;
  int errors = 0, line_no = 0;
  std::string line;
  const auto t0 = std::chrono::steady_clock::now();
  while (all.total < *limit && std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json item = json::parse(line, nullptr, false);
    std::string family = "unknown", prediction, error;
    bool ok = false;
    if (item.is_discarded() || !item.is_object() || !item.contains("question") ||
        !item["question"].is_string() || !item.contains("answer") || !item["answer"].is_string()) {
      error = "line " + std::to_string(line_no) +
              ": not an object with string \"question\" and \"answer\"";
    } else {
      if (item.contains("family") && item["family"].is_string())
        family = item["family"].get<std::string>();
      std::optional<mlmamba::ImageInput> image;
      if (item.contains("image") && item["image"].is_string()) {
        std::filesystem::path p = item["image"].get<std::string>();
        if (p.is_relative()) p = data.parent_path() / p;
        image = mlmamba::ImageInput::from_file(p);
      }
      mlmamba::Session session(l.model);
      auto gen = session.ask(item["question"].get<std::string>(), *gp, image ? &*image : nullptr);
      if (!gen.ok()) {
        error = "line " + std::to_string(line_no) + ": " + gen.error().message;
      } else {
        prediction = gen->text;
        ok = normalise_answer(prediction) == normalise_answer(item["answer"].get<std::string>());
      }
    }
    if (!error.empty()) {
      ++errors;
      std::cerr << "mlmamba-cli eval: " << error << std::endl;
    }
    Tally& f = families[family];
    f.total++;
    all.total++;
    if (ok) {
      f.correct++;
      all.correct++;
    }
    if (predictions.is_open()) {
      json out = item.is_object() ? item : json{{"line", line}};
      out["prediction"] = prediction;
      out["correct"] = ok;
      if (!error.empty()) out["error"] = error;
      predictions << out.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto acc = [](const Tally& t) {
    return t.total ? static_cast<double>(t.correct) / t.total : 0.0;
  };
  bool below = all.total == 0 || acc(all) < *min_all;
  json fam = json::object();
  for (const auto& [name, t] : families) {
    fam[name] = {{"correct", t.correct}, {"total", t.total}, {"accuracy", acc(t)}};
    if (acc(t) < *min_family) below = true;
  }
  if (as_json) {
    std::cout << json{{"overall",
                       {{"correct", all.correct}, {"total", all.total}, {"accuracy", acc(all)}}},
                      {"families", fam},
                      {"errors", errors},
                      {"seconds", seconds}}
                     .dump(2)
              << std::endl;
  } else {
    std::printf("%-12s %8s %8s %9s\n", "family", "correct", "total", "accuracy");
    for (const auto& [name, t] : families)
      std::printf("%-12s %8d %8d %8.1f%%\n", name.c_str(), t.correct, t.total, 100 * acc(t));
    std::printf("%-12s %8d %8d %8.1f%%\n", "overall", all.correct, all.total, 100 * acc(all));
    std::printf("%d lines could not be answered; %.1f s\n", errors, seconds);
  }
  return below ? kBelowTarget : kOk;
}

int cmd_info(const std::vector<std::string>& args) {
  auto opts = mlmamba::cli::Options::parse(args, kCommon, {"json"});
  if (!opts.ok()) return fail(kUsage, opts.error().message, false);
  const bool as_json = opts->has("json");
  Loaded l = load_model(*opts, as_json);
  if (!l.model) return l.exit;
  const json j = info_json(l.model->info());
  if (as_json) {
    std::cout << j.dump() << std::endl;
  } else {
    for (auto it = j.begin(); it != j.end(); ++it)
      std::cout << it.key() << ": " << it.value().dump() << "\n";
  }
  return kOk;
}

// A picture, a question, a follow-up: the follow-up's time to first token with the state kept,
// against re-reading the whole conversation (picture included) as the released chat loop does.
mlmamba::Result<json> bench_conversation(const std::shared_ptr<const mlmamba::Model>& model,
                                         int repeat) {
  const auto& info = model->info();
  const int side = 640;
  std::vector<uint8_t> px(static_cast<size_t>(side) * side * 3);
  for (int y = 0; y < side; ++y)
    for (int x = 0; x < side; ++x) {
      uint8_t* p = &px[(static_cast<size_t>(y) * side + x) * 3];
      p[0] = static_cast<uint8_t>(x * 255 / side);
      p[1] = static_cast<uint8_t>(y * 255 / side);
      p[2] = static_cast<uint8_t>((x / 80 + y / 80) % 2 ? 220 : 40);
    }
  const auto picture = mlmamba::ImageInput::from_rgb(side, side, px);
  mlmamba::GenerateParams gp;
  gp.max_new_tokens = 16;
  gp.ignore_eos = true;
  std::vector<double> encode, first, follow, rerun;
  for (int r = 0; r < repeat; ++r) {
    mlmamba::Session s(model);
    MLM_ASSIGN_OR_RETURN(auto a, s.ask("Describe the image.", gp, &picture));
    MLM_ASSIGN_OR_RETURN(auto b, s.ask("How many shapes are there?", gp));
    // The same conversation fed from scratch: picture, first turn, reply, second turn.
    std::string text = model->format_user_turn("Describe the image.", true) + a.text +
                       "<|endoftext|>" +
                       model->format_user_turn("How many shapes are there?", false);
    MLM_ASSIGN_OR_RETURN(auto ids, model->tokenize(text));
    mlmamba::Session fresh(model);
    MLM_ASSIGN_OR_RETURN(auto c, fresh.generate_from_ids(ids, gp, &picture));
    encode.push_back(a.stats.image_encode_ms);
    first.push_back(a.stats.time_to_first_token_ms);
    follow.push_back(b.stats.time_to_first_token_ms);
    rerun.push_back(c.stats.time_to_first_token_ms);
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  return json{{"image_rows", info.image_rows},
              {"image_encode_ms", median(encode)},
              {"first_question_ttft_ms", median(first)},
              {"follow_up_ttft_ms", median(follow)},
              {"follow_up_rereading_everything_ttft_ms", median(rerun)},
              {"follow_up_saving", median(rerun) / median(follow)}};
}

int cmd_bench(const std::vector<std::string>& args) {
  auto opts = mlmamba::cli::Options::parse(
      args, with_common({"prompt-tokens", "gen-tokens", "repeat"}), {"json"});
  if (!opts.ok()) return fail(kUsage, opts.error().message, false);
  auto n_prompt = opts->integer("prompt-tokens", 512, 1, 1 << 20);
  auto n_gen = opts->integer("gen-tokens", 128, 1, 1 << 20);
  auto repeat = opts->integer("repeat", 3, 1, 1000);
  for (const mlmamba::Error* e :
       {n_prompt.ok() ? nullptr : &n_prompt.error(), n_gen.ok() ? nullptr : &n_gen.error(),
        repeat.ok() ? nullptr : &repeat.error()}) {
    if (e) return fail(kUsage, e->message, true);
  }
  Loaded l = load_model(*opts, true);
  if (!l.model) return l.exit;
  const auto& info = l.model->info();
  // Random ids (seeded) avoid the end-of-text id so every run decodes the same number of tokens.
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int> pick(0, info.vocab_size - 1);
  std::vector<int32_t> prompt(static_cast<size_t>(*n_prompt));
  for (auto& id : prompt) {
    do id = pick(rng);
    while (id == info.eos_token_id);
  }
  mlmamba::GenerateParams gp;
  gp.max_new_tokens = *n_gen;
  gp.ignore_eos = true;
  std::vector<double> prefill, decode, ttft;
  int64_t peak = 0;
  for (int r = 0; r < *repeat + 1; ++r) {
    mlmamba::Session s(l.model);
    auto g = s.generate_from_ids(prompt, gp);
    if (!g.ok()) return fail(exit_for(g.error()), g.error().message, true);
    if (r == 0) continue;  // warm-up: page-in of the weights, thread pool start
    prefill.push_back(g->stats.prefill_tokens * 1000.0 / g->stats.prefill_ms);
    decode.push_back(g->stats.decode_tokens_per_s);
    ttft.push_back(g->stats.time_to_first_token_ms);
    peak = std::max(peak, g->stats.peak_memory_bytes);
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  json out{{"model", info_json(info)},
           {"prompt_tokens", *n_prompt},
           {"generated_tokens", *n_gen},
           {"repeat", *repeat},
           {"prefill_tokens_per_s", median(prefill)},
           {"decode_tokens_per_s", median(decode)},
           {"time_to_first_token_ms", median(ttft)},
           {"peak_memory_bytes", peak}};
  if (info.has_vision) {
    auto conv = bench_conversation(l.model, *repeat);
    if (!conv.ok()) return fail(exit_for(conv.error()), conv.error().message, true);
    out["conversation"] = *conv;
  }
  std::cout << out.dump(2) << std::endl;
  return kOk;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "help" || args[0] == "--help" || args[0] == "-h") {
    std::cout << kUsageText;
    return args.empty() ? kUsage : kOk;
  }
  if (args[0] == "--version" || args[0] == "version") {
    std::cout << "mlmamba-cli " << mlmamba::version() << std::endl;
    return kOk;
  }
  const std::string cmd = args[0];
  args.erase(args.begin());
  if (cmd == "generate") return cmd_generate(args);
  if (cmd == "chat") return cmd_chat(args);
  if (cmd == "tokenize") return cmd_tokenize(args);
  if (cmd == "info") return cmd_info(args);
  if (cmd == "bench") return cmd_bench(args);
  if (cmd == "eval") return cmd_eval(args);
  std::cerr << "mlmamba-cli: unknown command \"" << cmd << "\"\n\n" << kUsageText;
  return kUsage;
}
