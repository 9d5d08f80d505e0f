#include <cstdlib>
#include <set>

#include "backend.h"
#include "cpu_ops.h"
#include "model_impl.h"

namespace mlmamba {

std::string_view version() {
  return MLMAMBA_VERSION;
}

Result<Device> parse_device(std::string_view name) {
  if (name == "auto") return Device::kAuto;
  if (name == "cpu") return Device::kCpu;
  if (name == "cuda" || name == "gpu") return Device::kCuda;
  return make_error(ErrorCode::kInvalidArgument,
                    "unknown device \"" + std::string(name) + "\" (expected auto, cpu or cuda)");
}

const char* device_name(Device d) {
  switch (d) {
    case Device::kAuto:
      return "auto";
    case Device::kCpu:
      return "cpu";
    case Device::kCuda:
      return "cuda";
  }
  return "?";
}

const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::kEndOfText:
      return "end_of_text";
    case StopReason::kMaxTokens:
      return "max_tokens";
    case StopReason::kCancelled:
      return "cancelled";
    case StopReason::kContextFull:
      return "context_full";
  }
  return "?";
}

Result<std::shared_ptr<const Model>> Model::load(const LoadParams& params) {
  MLM_ASSIGN_OR_RETURN(ModelConfig config, read_model_config(params.model_dir));
  MLM_ASSIGN_OR_RETURN(DeviceChoice device, choose_device(params.device));
  const auto tok_path = params.model_dir / config.tokenizer_file;
  MLM_ASSIGN_OR_RETURN(Tokenizer tokenizer, Tokenizer::from_file(tok_path));
  MLM_ASSIGN_OR_RETURN(WeightStore weights, WeightStore::open(params.model_dir));
  cpu::set_threads(params.threads);

  auto model =
      std::make_shared<ModelImpl>(std::move(config), std::move(weights), std::move(tokenizer));
  const ModelConfig& c = model->config_;
  if (device.device != "cpu") {
    // The language model goes to the GPU (bf16 there) and no fp32 copy of it is made here; the
    // vision half follows it below.
    auto gpu = CudaLm::load(model->weights_, c, cuda_backend());
    if (gpu.ok()) {
      model->cuda_lm_ = std::move(gpu).value();
    } else if (params.device == Device::kCuda) {
      return make_error(gpu.error().code, params.model_dir.string() + ": the language model " +
                                              "could not be placed on " + device.name + ": " +
                                              gpu.error().message);
    } else {
      device = DeviceChoice{"cpu",
                            "the language model could not be placed on " + device.name + " (" +
                                gpu.error().message + ")",
                            ""};
    }
  }
  if (!model->cuda_lm_) {
    auto lm = Mamba2Lm::load(model->weights_, c);
    if (!lm.ok()) {
      return make_error(lm.error().code, params.model_dir.string() + ": " + lm.error().message);
    }
    model->lm_ = std::move(lm).value();
  }
  if (c.has_vision) {
    auto vision = VisionTower::load(model->weights_, c);
    if (!vision.ok()) {
      return make_error(vision.error().code,
                        params.model_dir.string() + ": " + vision.error().message);
    }
    model->vision_ = std::move(vision).value();
    // With the language model on the GPU, MLMAMBA_GPU_VISION=1 puts the encoders and the
    // connector there too; the CPU tower stays loaded as the fallback. Opt-in until the GPU vision
    // path has been checked on a GPU against the CPU tower (docs/gpu-log.md): by default pictures
    // are encoded on the CPU and their rows handed to the GPU language model.
    const char* gpu_vision = std::getenv("MLMAMBA_GPU_VISION");
    if (model->cuda_lm_ && gpu_vision && *gpu_vision && std::string(gpu_vision) != "0") {
      auto gpu = CudaVision::load(model->weights_, c, cuda_backend());
      if (gpu.ok()) {
        model->vision_->set_gpu(std::move(gpu).value(), "");
      } else {
        model->vision_->set_gpu(nullptr, "the vision encoders could not be placed on " +
                                             device.name + " (" + gpu.error().message + ")");
      }
    }
  }
  if (model->tokenizer_.vocab_size() > c.llm.vocab_size) {
    return make_error(ErrorCode::kCorruptFile, tok_path.string() + " has " +
                                                   std::to_string(model->tokenizer_.vocab_size()) +
                                                   " tokens, more than the model's vocabulary of " +
                                                   std::to_string(c.llm.vocab_size));
  }

  ModelInfo& info = model->info_;
  info.format = model_format_name(c.format);
  info.name = c.name;
  info.device = device.device;
  info.fallback_reason = device.fallback_reason;
  std::set<std::string> dtypes;
  for (const auto& n : model->weights_.names())
    dtypes.insert(dtype_name(model->weights_.find(n)->dtype));
  info.weight_dtype = dtypes.size() == 1 ? *dtypes.begin() : "mixed";
  info.parameters = (model->cuda_lm_ ? model->cuda_lm_->parameters() : model->lm_->parameters()) +
                    (model->vision_ ? model->vision_->parameters() : 0);
  info.default_max_new_tokens = c.default_max_new_tokens;
  info.has_vision = c.has_vision;
  if (c.has_vision) {
    info.image_size = c.vision.image_size;
    info.image_rows = c.vision.rows();
    for (const auto& e : c.vision.encoders) info.encoders.push_back(e.name);
  }
  const Mamba2Dims& m = c.llm.mixer;
  info.d_model = m.d_model;
  info.n_layer = c.llm.n_layer;
  info.vocab_size = c.llm.vocab_size;
  info.d_state = m.d_state;
  info.headdim = m.headdim;
  info.nheads = m.nheads;
  info.ngroups = m.ngroups;
  info.chunk_size = m.chunk_size;
  info.max_sequence_length = c.llm.max_sequence_length;
  info.eos_token_id =
      c.eos_token_id >= 0 ? c.eos_token_id : model->tokenizer_.token_to_id("<|endoftext|>");
  if (info.eos_token_id >= c.llm.vocab_size) {
    return make_error(ErrorCode::kCorruptFile, "the end-of-text id is outside the vocabulary");
  }
  return std::shared_ptr<const Model>(std::move(model));
}

Result<std::vector<int32_t>> ModelImpl::tokenize(std::string_view text) const {
  return tokenizer_.encode(text);
}

std::string ModelImpl::detokenize(const std::vector<int32_t>& ids) const {
  return tokenizer_.decode(ids);
}

std::string ModelImpl::format_user_turn(std::string_view message, bool first_turn) const {
  if (config_.prompt_template != "zephyr") return std::string(message);
  // The released model's Zephyr template: the first message is stripped, later turns are opened
  // by a newline after the previous reply's end-of-text.
  if (first_turn) {
    const auto b = message.find_first_not_of(" \t\n\r\f\v");
    const auto e = message.find_last_not_of(" \t\n\r\f\v");
    message = b == std::string_view::npos ? std::string_view() : message.substr(b, e - b + 1);
    return "<|user|>\n" + std::string(message) + "<|endoftext|>\n<|assistant|>\n";
  }
  return "\n<|user|>\n" + std::string(message) + "<|endoftext|>\n<|assistant|>\n";
}

}  // namespace mlmamba
