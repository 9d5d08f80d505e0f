// mlmamba-cli: the engine for scripts and terminals. Exit codes are part of the interface:
//   0 success, 1 generation failed, 2 bad command line, 3 model could not be loaded,
//   4 input rejected (prompt too long, bad token id), 5 requested device unavailable, 130
//   interrupted.
#include <csignal>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
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
  kInterrupted = 130
};

constexpr const char* kUsageText = R"(usage: mlmamba-cli <command> [options]

commands:
  generate   answer a prompt, streaming the answer to stdout
  tokenize   show the token ids of a text
  info       describe a model
  bench      time prefill and decode (JSON)

common options:
  --model DIR              model folder (package, transformers Mamba-2 or mamba_ssm)
  --device auto|cpu|cuda   where to run (default auto; the reason for any fallback is reported)
  --threads N              CPU threads (default: one per core)
  --json                   print one JSON object instead of text

generate:
  --prompt TEXT            the question or text
  --raw                    tokenise TEXT exactly as given (no chat template)
  --max-tokens N           new tokens at most (default: the model's, 512 for the released model)
  --ignore-eos             do not stop at end-of-text
  --temperature T          0 = greedy (default)
  --top-k K  --top-p P  --repetition-penalty R  --seed S

tokenize:  --text TEXT
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
    case ErrorCode::kLimitExceeded:
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
  return json{{"prefill_tokens", s.prefill_tokens},
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
              {"eos_token_id", i.eos_token_id}};
}

struct Loaded {
  std::shared_ptr<const mlmamba::Model> model;
  int exit = kOk;
};

Loaded load_model(const mlmamba::cli::Options& o, bool as_json) {
  Loaded l;
  if (!o.has("model")) {
    l.exit = fail(kUsage, "--model DIR is required", as_json);
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
  p.model_dir = o.str("model");
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

int cmd_generate(const std::vector<std::string>& args) {
  auto opts =
      mlmamba::cli::Options::parse(args,
                                   with_common({"prompt", "max-tokens", "temperature", "top-k",
                                                "top-p", "repetition-penalty", "seed"}),
                                   {"raw", "json", "ignore-eos"});
  const bool as_json = opts.ok() && opts->has("json");
  if (!opts.ok()) return fail(kUsage, opts.error().message, false);
  const auto& o = *opts;
  if (!o.has("prompt")) return fail(kUsage, "--prompt TEXT is required", as_json);

  mlmamba::GenerateParams gp;
  auto max_tokens = o.integer("max-tokens", 512, 0, 1 << 20);
  auto temperature = o.number("temperature", 0.0, 0.0, 100.0);
  auto top_k = o.integer("top-k", 0, 0, 1 << 24);
  auto top_p = o.number("top-p", 1.0, 1e-6, 1.0);
  auto rep = o.number("repetition-penalty", 1.0, 1e-3, 1e3);
  auto seed = o.u64("seed", 0);
  for (const mlmamba::Error* e :
       {max_tokens.ok() ? nullptr : &max_tokens.error(),
        temperature.ok() ? nullptr : &temperature.error(), top_k.ok() ? nullptr : &top_k.error(),
        top_p.ok() ? nullptr : &top_p.error(), rep.ok() ? nullptr : &rep.error(),
        seed.ok() ? nullptr : &seed.error()}) {
    if (e) return fail(kUsage, e->message, as_json);
  }
  gp.max_new_tokens = *max_tokens;
  gp.ignore_eos = o.has("ignore-eos");
  gp.sampling.temperature = static_cast<float>(*temperature);
  gp.sampling.top_k = *top_k;
  gp.sampling.top_p = static_cast<float>(*top_p);
  gp.sampling.repetition_penalty = static_cast<float>(*rep);
  gp.sampling.seed = *seed;

  Loaded l = load_model(o, as_json);
  if (!l.model) return l.exit;
  const std::string prompt = o.str("prompt");
  const bool raw = o.has("raw");
  auto ids = l.model->tokenize(raw ? prompt : l.model->format_user_turn(prompt, true));
  if (!ids.ok()) return fail(kInput, ids.error().message, as_json);

  if (!as_json) {
    gp.on_token = [](const mlmamba::Token& t) {
      std::fwrite(t.text.data(), 1, t.text.size(), stdout);
      std::fflush(stdout);
    };
  }
  mlmamba::Session session(l.model);
  g_session.store(&session);
  std::signal(SIGINT, on_sigint);
  auto gen = session.generate_from_ids(*ids, gp);
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
  if (cmd == "tokenize") return cmd_tokenize(args);
  if (cmd == "info") return cmd_info(args);
  if (cmd == "bench") return cmd_bench(args);
  std::cerr << "mlmamba-cli: unknown command \"" << cmd << "\"\n\n" << kUsageText;
  return kUsage;
}
