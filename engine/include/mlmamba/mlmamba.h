// ML-Mamba inference engine: the whole public API.
//
// Thread-safety: a Model is immutable once loaded and may be shared by any number of threads and
// Sessions. A Session is used by one thread at a time, except Session::cancel(), which any thread
// may call at any moment; the running generate() then returns within one token.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mlmamba/result.h"

namespace mlmamba {

std::string_view version();

enum class Device { kAuto, kCpu, kCuda };
Result<Device> parse_device(std::string_view name);  // "auto" | "cpu" | "cuda"
const char* device_name(Device device);

struct LoadParams {
  std::filesystem::path model_dir;
  Device device = Device::kAuto;
  int threads = 0;  // 0: one per hardware core
};

struct ModelInfo {
  std::string format;  // "mlmamba-package" | "transformers-mamba2" | "mamba_ssm"
  std::string name;
  std::string device;           // where it runs: "cpu" | "cuda:0"
  std::string fallback_reason;  // why it is not on the device asked for; empty if it is
  std::string
      weight_dtype;  // storage dtype of the weights on disk: "f32" | "f16" | "bf16" | "mixed"
  int64_t parameters = 0;
  int d_model = 0, n_layer = 0, vocab_size = 0, d_state = 0, headdim = 0, nheads = 0, ngroups = 0;
  int chunk_size = 0;
  int max_sequence_length = 0;  // prompt + generated tokens allowed in one session
  int eos_token_id = 0;
  int default_max_new_tokens = 512;  // the model's own answer length
  // The image half; absent for a text-only model.
  bool has_vision = false;
  int image_size = 0;  // pixels per side the picture is brought to
  int image_rows = 0;  // language-model rows one picture becomes
  std::vector<std::string> encoders;
};

// A picture for the model: a file, encoded bytes (PNG, JPEG, ... as dragged from a browser), or raw
// interleaved RGB.
struct ImageInput {
  std::filesystem::path file;
  std::vector<uint8_t> encoded;
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;

  static ImageInput from_file(std::filesystem::path path) {
    ImageInput i;
    i.file = std::move(path);
    return i;
  }
  static ImageInput from_encoded(std::vector<uint8_t> bytes) {
    ImageInput i;
    i.encoded = std::move(bytes);
    return i;
  }
  static ImageInput from_rgb(int w, int h, std::vector<uint8_t> pixels) {
    ImageInput i;
    i.width = w;
    i.height = h;
    i.rgb = std::move(pixels);
    return i;
  }
};

struct Sampling {
  float temperature = 0.0f;         // 0: greedy (the released model's behaviour)
  int top_k = 0;                    // 0: off
  float top_p = 1.0f;               // 1: off
  float repetition_penalty = 1.0f;  // 1: off; >1 divides positive / multiplies negative logits
  uint64_t seed = 0;
};

struct Token {
  int32_t id;
  std::string text;  // the complete UTF-8 characters this token finishes; may be empty
};

struct GenerateParams {
  int max_new_tokens = 512;
  bool ignore_eos = false;
  Sampling sampling;
  std::function<void(const Token&)> on_token;  // called on the generating thread, once per token
};

enum class StopReason { kEndOfText, kMaxTokens, kCancelled, kContextFull };
const char* stop_reason_name(StopReason reason);

struct Stats {
  double image_encode_ms = 0;  // decode, resize, encoders and connector
  int image_rows = 0;
  int prefill_tokens = 0;  // rows fed before the first new token, visual rows included
  double prefill_ms = 0;
  double time_to_first_token_ms = 0;  // from the call until the first new token is known
  int generated_tokens = 0;
  double decode_ms = 0;
  double decode_tokens_per_s = 0;
  double total_ms = 0;
  int64_t peak_memory_bytes = 0;  // peak resident set of the process
};

struct Generation {
  std::vector<int32_t> ids;
  std::string text;
  StopReason stop = StopReason::kMaxTokens;
  Stats stats;
};

class Model {
 public:
  static Result<std::shared_ptr<const Model>> load(const LoadParams& params);
  virtual ~Model() = default;

  virtual const ModelInfo& info() const = 0;
  // Tokenises exactly as given (special tokens in the text are recognised).
  virtual Result<std::vector<int32_t>> tokenize(std::string_view text) const = 0;
  virtual std::string detokenize(const std::vector<int32_t>& ids) const = 0;
  // The chat template around one user message; `first_turn` selects the opening form.
  virtual std::string format_user_turn(std::string_view message, bool first_turn) const = 0;
};

// The model's state after everything fed so far. A Mamba state has a fixed size, so it is kept
// between turns and a follow-up costs only its own tokens.
class Session {
 public:
  explicit Session(std::shared_ptr<const Model> model);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Feeds token ids (no template) and generates.
  // With a picture, its rows come first.
  Result<Generation> generate_from_ids(const std::vector<int32_t>& prompt_ids,
                                       const GenerateParams& params,
                                       const ImageInput* image = nullptr);
  // Wraps `message` in the chat template (first or follow-up turn), feeds it and generates; the
  // answer and its end-of-text become part of the conversation. A picture's rows enter the
  // conversation just before this turn's text (for the first turn: before all text, as the model
  // was trained).
  Result<Generation> ask(std::string_view message, const GenerateParams& params,
                         const ImageInput* image = nullptr);

  // Feeds a turn whose reply is already known (a conversation reopened from disk, or rebuilt after
  // an edit) without generating: the template around `message`, then `reply` and its end-of-text.
  Result<void> feed_turn(std::string_view message, std::string_view reply,
                         const ImageInput* image = nullptr);

  void cancel();  // any thread
  void reset();   // back to an empty conversation
  int tokens_seen() const;
  int turns() const;

  // A copy of the full conversation state (recurrent state, position, turn count). With the
  // language model on the GPU the recurrent state is read back into host memory; null if the
  // device could not be read (restore() ignores null).
  struct Snapshot;
  std::shared_ptr<const Snapshot> snapshot() const;
  void restore(const std::shared_ptr<const Snapshot>& snapshot);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mlmamba
