#include "cuda_lm.h"

#include <string>

#include "cuda_module.h"

namespace mlmamba {

CudaLmState& CudaLmState::operator=(CudaLmState&& o) noexcept {
  if (this != &o) {
    if (state_) module_->state_free(state_);
    module_ = o.module_;
    state_ = o.state_;
    o.state_ = nullptr;
  }
  return *this;
}

CudaLmState::~CudaLmState() {
  if (state_) module_->state_free(state_);
}

Result<std::unique_ptr<CudaLm>> CudaLm::load(const WeightStore& store, const ModelConfig& config,
                                             const mlmamba_backend* module,
                                             const Options& options) {
  if (!module) return make_error(ErrorCode::kBackend, "the CUDA backend module is not loaded");
  const LlmConfig& c = config.llm;
  const Mamba2Dims& m = c.mixer;
  // The module's names are the mamba_ssm keys below `backbone.`; the embedding and an untied
  // head are named by the config (transformers says `embeddings`).
  std::vector<std::pair<std::string, std::string>> names;  // module name, name in the store
  names.emplace_back("embedding.weight", config.embedding_key);
  if (!config.lm_head_key.empty() && store.find(config.lm_head_key))
    names.emplace_back("lm_head.weight", config.lm_head_key);
  names.emplace_back("norm_f.weight", config.llm_prefix + "norm_f.weight");
  for (int i = 0; i < c.n_layer; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    names.emplace_back(p + "norm.weight", config.llm_prefix + p + "norm.weight");
    for (const char* k : {"in_proj.weight", "conv1d.weight", "dt_bias", "A_log", "D", "norm.weight",
                          "out_proj.weight"})
      names.emplace_back(p + "mixer." + k, config.llm_prefix + p + "mixer." + k);
    if (m.conv_bias)
      names.emplace_back(p + "mixer.conv1d.bias", config.llm_prefix + p + "mixer.conv1d.bias");
    if (m.proj_bias) {
      for (const char* k : {"in_proj.bias", "out_proj.bias"})
        names.emplace_back(p + "mixer." + k, config.llm_prefix + p + "mixer." + k);
    }
  }
  std::vector<mlmamba_tensor> tensors;
  tensors.reserve(names.size());
  int64_t parameters = 0;
  for (const auto& [mine, theirs] : names) {
    auto mt = module_tensor(store, theirs, mine.c_str());
    if (!mt.ok()) return mt.error();
    tensors.push_back(*mt);
    int64_t n = 1;
    for (int k = 0; k < mt->ndim; ++k) n *= mt->shape[k];
    parameters += n;
  }
  mlmamba_lm_desc d{};
  d.device = options.device;
  d.d_model = m.d_model;
  d.n_layer = c.n_layer;
  d.vocab_size = c.vocab_size;
  d.d_inner = m.d_inner;
  d.d_state = m.d_state;
  d.headdim = m.headdim;
  d.nheads = m.nheads;
  d.ngroups = m.ngroups;
  d.d_conv = m.d_conv;
  d.chunk_size = m.chunk_size;
  d.norm_group_size = m.norm_group_size;
  d.norm_eps = c.norm_eps;
  d.mixer_norm_eps = m.norm_eps;
  d.proj_bias = m.proj_bias ? 1 : 0;
  d.conv_bias = m.conv_bias ? 1 : 0;
  d.max_segment = options.max_segment;
  d.scan_form = options.recurrent_scan ? MLMAMBA_SCAN_RECURRENT : MLMAMBA_SCAN_CHUNKED;
  d.poison = options.poison ? 1 : 0;
  d.tensors = tensors.data();
  d.n_tensors = static_cast<int>(tensors.size());
  std::unique_ptr<CudaLm> lm(new CudaLm());
  lm->module_ = module;
  lm->config_ = c;
  lm->parameters_ = parameters;
  MLM_TRY(module_call(module->lm_create, static_cast<const mlmamba_lm_desc*>(&d), &lm->lm_));
  return lm;
}

CudaLm::~CudaLm() {
  if (lm_) module_->lm_free(lm_);
}

mlmamba_lm_info CudaLm::info() const {
  const std::lock_guard lock(mutex_);
  mlmamba_lm_info i{};
  module_->lm_info(lm_, &i);
  return i;
}

Result<CudaLmState> CudaLm::new_state() const {
  const std::lock_guard lock(mutex_);
  mlmamba_lm_state* s = nullptr;
  MLM_TRY(module_call(module_->state_create, lm_, &s));
  return CudaLmState(module_, s);
}

Result<void> CudaLm::reset(CudaLmState& state) const {
  const std::lock_guard lock(mutex_);
  return module_call(module_->state_reset, lm_, state.get());
}

Result<std::vector<float>> CudaLm::read(const CudaLmState& state) const {
  const std::lock_guard lock(mutex_);
  std::vector<float> v(module_->state_floats(lm_));
  MLM_TRY(module_call(module_->state_read, lm_, static_cast<const mlmamba_lm_state*>(state.get()),
                      v.data(), v.size()));
  return v;
}

Result<void> CudaLm::write(CudaLmState& state, const std::vector<float>& values) const {
  const std::lock_guard lock(mutex_);
  return module_call(module_->state_write, lm_, state.get(), values.data(), values.size());
}

Result<void> CudaLm::feed_ids(CudaLmState& state, const int32_t* ids, int T, float* logits,
                              int32_t* argmax) const {
  const std::lock_guard lock(mutex_);
  return module_call(module_->lm_feed_ids, lm_, state.get(), ids, T, logits, argmax);
}

Result<void> CudaLm::feed_rows(CudaLmState& state, const float* rows, int T, float* logits,
                               int32_t* argmax) const {
  const std::lock_guard lock(mutex_);
  return module_call(module_->lm_feed_rows, lm_, state.get(), rows, T, logits, argmax);
}

Result<void> CudaLm::copy(CudaLmState& dst, const CudaLmState& src) const {
  const std::lock_guard lock(mutex_);
  return module_call(module_->state_copy, lm_, dst.get(),
                     static_cast<const mlmamba_lm_state*>(src.get()));
}

Result<void> CudaLm::decode(CudaLmState& state, int32_t id, float* logits, int32_t* argmax) const {
  const std::lock_guard lock(mutex_);
  return module_call(module_->lm_decode, lm_, state.get(), id, logits, argmax);
}

}  // namespace mlmamba
