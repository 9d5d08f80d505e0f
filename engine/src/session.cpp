#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <optional>

#include "model_impl.h"
#include "sampler.h"

namespace mlmamba {
namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

int64_t peak_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<int64_t>(u.ru_maxrss) * 1024;
}

}  // namespace

struct Session::Snapshot {
  LmState state;  // on the CPU
  // On the GPU: a host copy of the device state; null for the zero state of an empty conversation.
  std::shared_ptr<const std::vector<float>> device_state;
  std::vector<int32_t> pending;
  std::vector<int32_t> history;
  int tokens_seen = 0;
  int turns = 0;
};

struct Session::Impl {
  std::shared_ptr<const ModelImpl> model;
  Snapshot s;  // the live conversation (on the GPU its state lives in `device`)
  std::atomic<bool> cancel{false};

  // GPU only. The device state is made when first needed and brought up to date (zeroed after a
  // reset, written from a restored snapshot) at the start of the next call, where a failure can be
  // returned: reset() and restore() cannot fail.
  std::optional<CudaLmState> device;
  std::optional<CudaLmState> device_before;  // the state a failed or cancelled call goes back to
  enum class Sync { kCurrent, kZero, kHost } sync = Sync::kZero;

  Result<Generation> run(const std::vector<int32_t>& prompt, const GenerateParams& params,
                         bool as_turn, const ImageInput* image = nullptr);
  Result<void> sync_device();
};

Session::Session(std::shared_ptr<const Model> model) : impl_(std::make_unique<Impl>()) {
  impl_->model = std::static_pointer_cast<const ModelImpl>(std::move(model));
  if (!impl_->model->cuda_lm()) impl_->s.state = impl_->model->lm().new_state();
}

Session::~Session() = default;

void Session::cancel() {
  impl_->cancel.store(true);
}

void Session::reset() {
  for (auto& l : impl_->s.state.layers) l.clear();
  impl_->s.device_state.reset();
  impl_->sync = Impl::Sync::kZero;
  impl_->s.pending.clear();
  impl_->s.history.clear();
  impl_->s.tokens_seen = 0;
  impl_->s.turns = 0;
}

int Session::tokens_seen() const {
  return impl_->s.tokens_seen;
}
int Session::turns() const {
  return impl_->s.turns;
}

std::shared_ptr<const Session::Snapshot> Session::snapshot() const {
  Impl& d = *impl_;
  const CudaLm* gpu = d.model->cuda_lm();
  if (!gpu || d.sync != Impl::Sync::kCurrent) return std::make_shared<const Snapshot>(d.s);
  // The device state is read back once; the snapshot then costs host memory only.
  auto host = gpu->read(*d.device);
  if (!host.ok()) return nullptr;  // documented: null when the device state cannot be read
  auto snap = std::make_shared<Snapshot>(d.s);
  snap->device_state = std::make_shared<const std::vector<float>>(std::move(host).value());
  return snap;
}

void Session::restore(const std::shared_ptr<const Snapshot>& snapshot) {
  if (!snapshot) return;
  impl_->s = *snapshot;
  if (impl_->model->cuda_lm())
    impl_->sync = snapshot->device_state ? Impl::Sync::kHost : Impl::Sync::kZero;
}

Result<void> Session::Impl::sync_device() {
  const CudaLm& gpu = *model->cuda_lm();
  if (!device) {
    MLM_ASSIGN_OR_RETURN(CudaLmState st, gpu.new_state());  // zero when created
    device = std::move(st);
    if (sync == Sync::kZero) sync = Sync::kCurrent;
  }
  if (!device_before) {
    MLM_ASSIGN_OR_RETURN(CudaLmState st, gpu.new_state());
    device_before = std::move(st);
  }
  if (sync == Sync::kZero) MLM_TRY(gpu.reset(*device));
  if (sync == Sync::kHost) MLM_TRY(gpu.write(*device, *s.device_state));
  sync = Sync::kCurrent;
  s.device_state.reset();
  return {};
}

Result<Generation> Session::generate_from_ids(const std::vector<int32_t>& prompt_ids,
                                              const GenerateParams& params,
                                              const ImageInput* image) {
  return impl_->run(prompt_ids, params, false, image);
}

Result<Generation> Session::ask(std::string_view message, const GenerateParams& params,
                                const ImageInput* image) {
  const ModelImpl& m = *impl_->model;
  MLM_ASSIGN_OR_RETURN(std::vector<int32_t> ids,
                       m.tokenize(m.format_user_turn(message, impl_->s.turns == 0)));
  return impl_->run(ids, params, true, image);
}

Result<void> Session::feed_turn(std::string_view message, std::string_view reply,
                                const ImageInput* image) {
  const ModelImpl& m = *impl_->model;
  const std::string text = m.format_user_turn(message, impl_->s.turns == 0) + std::string(reply);
  MLM_ASSIGN_OR_RETURN(std::vector<int32_t> ids, m.tokenize(text));
  GenerateParams feed_only;
  feed_only.max_new_tokens = 0;  // the turn's end-of-text is left pending, as after a real answer
  MLM_TRY(impl_->run(ids, feed_only, true, image));
  return {};
}

namespace {

Result<RgbImage> decode(const ImageInput& in) {
  if (!in.file.empty()) return decode_image_file(in.file);
  if (!in.encoded.empty()) return decode_image_bytes(in.encoded);
  if (in.width <= 0 || in.height <= 0 ||
      in.rgb.size() != static_cast<size_t>(in.width) * in.height * 3) {
    return make_error(ErrorCode::kInvalidArgument,
                      "the raw picture's size does not match its pixels");
  }
  if (static_cast<int64_t>(in.width) * in.height > ImageLimits{}.max_pixels) {
    return make_error(ErrorCode::kLimitExceeded, "the picture has too many pixels");
  }
  return RgbImage{in.width, in.height, in.rgb};
}

}  // namespace

Result<Generation> Session::Impl::run(const std::vector<int32_t>& prompt,
                                      const GenerateParams& params, bool as_turn,
                                      const ImageInput* image) {
  const auto t_start = Clock::now();
  cancel.store(false);
  const ModelImpl& m = *model;
  const CudaLm* gpu = m.cuda_lm();
  const Mamba2Lm* lm = gpu ? nullptr : &m.lm();
  const int vocab = m.llm_config().vocab_size;
  const int limit = m.info().max_sequence_length;
  MLM_TRY(validate(params.sampling));
  if (params.max_new_tokens < 0)
    return make_error(ErrorCode::kInvalidArgument, "max new tokens must be >= 0");
  if (prompt.empty()) return make_error(ErrorCode::kInvalidArgument, "the prompt is empty");
  for (int32_t id : prompt) {
    if (id < 0 || id >= vocab) {
      return make_error(ErrorCode::kInvalidArgument, "token id " + std::to_string(id) +
                                                         " is outside the vocabulary (0.." +
                                                         std::to_string(vocab - 1) + ")");
    }
  }
  Generation gen;
  // Rows fed in order: what the last turn left unfed, the picture, this turn's text.
  const VisionTower* vision = m.vision();
  if (image && !vision) {
    return make_error(ErrorCode::kUnsupported,
                      "this model (" + m.info().name + ") does not read images");
  }
  const int image_rows = image ? vision->rows() : 0;
  const int64_t total =
      static_cast<int64_t>(s.pending.size()) + image_rows + static_cast<int64_t>(prompt.size());
  if (s.tokens_seen + total > limit) {
    return make_error(ErrorCode::kLimitExceeded,
                      "the prompt has " + std::to_string(total) + " rows; with the " +
                          std::to_string(s.tokens_seen) +
                          " already in this conversation that exceeds the limit of " +
                          std::to_string(limit));
  }
  std::vector<float> visual;
  if (image) {
    const auto t_image = Clock::now();
    auto picture = decode(*image);
    if (!picture.ok()) return picture.error();
    visual.resize(static_cast<size_t>(image_rows) * m.llm_config().mixer.d_model);
    vision->encode(*picture, visual.data());
    gen.stats.image_encode_ms = ms_since(t_image);
    gen.stats.image_rows = image_rows;
  }

  // A cancelled prefill leaves the recurrent state half-advanced: keep the state to go back to.
  // On the GPU the state to go back to is a device copy, and any failure of the device part-way
  // also goes back to it, so that the conversation stays as it was before this call.
  if (gpu) {
    MLM_TRY(sync_device());
    MLM_TRY(gpu->copy(*device_before, *device));
  }
  const Snapshot before = s;
  auto go_back = [&](Error e) -> Error {
    s = before;
    if (gpu) {
      if (auto r = gpu->copy(*device, *device_before); !r.ok()) {
        // The state is lost with the device: start the conversation again rather than continue
        // from a state nobody can vouch for.
        s = Snapshot{};
        sync = Sync::kZero;
        e.message += "; the conversation could not be kept (" + r.error().message + ")";
      }
    }
    return e;
  };
  // Greedy without a repetition penalty picks the argmax, which the GPU finds itself: only the id
  // comes back. Everything else reads the logits back for the CPU sampler.
  const bool device_argmax =
      gpu && params.sampling.temperature == 0.0f && params.sampling.repetition_penalty == 1.0f;
  std::vector<float> logits(static_cast<size_t>(vocab));
  float* const logits_out = device_argmax ? nullptr : logits.data();
  int32_t argmax = -1;
  int32_t* const argmax_out = device_argmax ? &argmax : nullptr;
  bool done = true;
  if (gpu) {
    // Pending ids, visual rows and this turn's ids continue one state: three calls at most, the
    // last of which returns the logits (or their argmax).
    std::vector<int32_t> head = s.pending;
    if (image_rows == 0) head.insert(head.end(), prompt.begin(), prompt.end());
    Result<void> r;
    if (!head.empty()) {
      const bool last = image_rows == 0;
      r = gpu->feed_ids(*device, head.data(), static_cast<int>(head.size()),
                        last ? logits_out : nullptr, last ? argmax_out : nullptr);
    }
    if (r.ok() && image_rows > 0) {
      done = !cancel.load();
      if (done) r = gpu->feed_rows(*device, visual.data(), image_rows, nullptr, nullptr);
      if (r.ok() && done) done = !cancel.load();
      if (r.ok() && done)
        r = gpu->feed_ids(*device, prompt.data(), static_cast<int>(prompt.size()), logits_out,
                          argmax_out);
    }
    if (!r.ok()) return go_back(r.error());
  } else if (image_rows == 0) {
    std::vector<int32_t> feed = s.pending;
    feed.insert(feed.end(), prompt.begin(), prompt.end());
    done = lm->forward_ids(feed.data(), static_cast<int>(feed.size()), &s.state, logits.data(),
                           ScanForm::kChunked, &cancel);
  } else {
    const int D = lm->config().mixer.d_model;
    std::vector<float> rows(static_cast<size_t>(total) * D);
    float* dst = rows.data();
    for (int32_t id : s.pending) dst = std::copy_n(lm->embedding_row(id), D, dst);
    dst = std::copy(visual.begin(), visual.end(), dst);
    for (int32_t id : prompt) dst = std::copy_n(lm->embedding_row(id), D, dst);
    done = lm->forward(rows.data(), static_cast<int>(total), &s.state, logits.data(),
                       ScanForm::kChunked, &cancel);
  }
  if (!done) return go_back(make_error(ErrorCode::kCancelled, "cancelled during the prompt"));
  s.tokens_seen += static_cast<int>(total);
  // Visual rows are not tokens: the repetition penalty sees only the text.
  s.history.insert(s.history.end(), s.pending.begin(), s.pending.end());
  s.history.insert(s.history.end(), prompt.begin(), prompt.end());
  s.pending.clear();
  gen.stats.prefill_tokens = static_cast<int>(total);
  gen.stats.prefill_ms = ms_since(t_start) - gen.stats.image_encode_ms;

  Sampler sampler(params.sampling);
  StreamDecoder decoder(m.tokenizer());
  const int eos = m.eos();
  Clock::time_point t_first{};
  int32_t unfed = -1;  // the last sampled token, not yet run through the model
  gen.stop = StopReason::kMaxTokens;
  while (static_cast<int>(gen.ids.size()) < params.max_new_tokens) {
    if (cancel.load()) {
      gen.stop = StopReason::kCancelled;
      break;
    }
    if (unfed >= 0) {
      if (s.tokens_seen + 1 > limit) {
        gen.stop = StopReason::kContextFull;
        break;
      }
      if (gpu) {
        auto r = gpu->decode(*device, unfed, logits_out, argmax_out);
        if (!r.ok()) {
          return go_back(make_error(r.error().code, r.error().message + " (after " +
                                                        std::to_string(gen.ids.size()) +
                                                        " tokens of the answer)"));
        }
      } else {
        lm->forward_ids(&unfed, 1, &s.state, logits.data());
      }
      s.history.push_back(unfed);
      s.tokens_seen += 1;
      unfed = -1;
    }
    const int32_t id = device_argmax ? argmax : sampler.next(logits, s.history);
    unfed = id;
    if (gen.ids.empty()) {
      t_first = Clock::now();
      gen.stats.time_to_first_token_ms = ms_since(t_start);
    }
    if (id == eos && !params.ignore_eos) {
      gen.stop = StopReason::kEndOfText;
      break;
    }
    gen.ids.push_back(id);
    std::string piece = decoder.push(id);
    gen.text += piece;
    if (params.on_token) params.on_token(Token{id, std::move(piece)});
  }
  std::string tail = decoder.flush();
  if (!tail.empty()) {
    gen.text += tail;
    if (params.on_token) params.on_token(Token{-1, std::move(tail)});
  }
  // What the next call must feed first: the last sampled token, and in a chat the end-of-text that
  // closes the reply (the template stores every reply as reply + <|endoftext|>).
  if (unfed >= 0) s.pending.push_back(unfed);
  if (as_turn && gen.stop != StopReason::kEndOfText && eos >= 0) s.pending.push_back(eos);
  if (as_turn) s.turns += 1;

  Stats& st = gen.stats;
  st.generated_tokens = static_cast<int>(gen.ids.size());
  st.total_ms = ms_since(t_start);
  if (!gen.ids.empty()) {
    st.decode_ms = std::chrono::duration<double, std::milli>(Clock::now() - t_first).count();
    // The first token comes from the prefill; the rate counts the tokens the decode loop produced.
    if (gen.ids.size() > 1 && st.decode_ms > 0)
      st.decode_tokens_per_s = (gen.ids.size() - 1) * 1000.0 / st.decode_ms;
  }
  st.peak_memory_bytes = peak_rss_bytes();
  return gen;
}

}  // namespace mlmamba
