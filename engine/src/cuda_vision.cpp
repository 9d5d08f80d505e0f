#include "cuda_vision.h"

#include <string>
#include <vector>

#include "cuda_module.h"

namespace mlmamba {
namespace {

// The names the module reads (backend_module.h), which are the package's own.
std::vector<std::string> vision_tensor_names(const VisionConfig& v) {
  std::vector<std::string> n;
  for (const VitConfig& e : v.encoders) {
    const std::string p = "vision_backbone." + e.name + ".";
    for (const char* k : {"patch_embed.proj.weight", "patch_embed.proj.bias", "pos_embed"})
      n.push_back(p + k);
    if (e.class_token) n.push_back(p + "cls_token");
    if (e.register_tokens > 0) n.push_back(p + "reg_token");
    for (int j = 0; j <= e.feature_layer; ++j) {
      const std::string b = p + "blocks." + std::to_string(j) + ".";
      for (const char* k : {"norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias",
                            "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias",
                            "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"})
        n.push_back(b + k);
      if (e.layer_scale) {
        n.push_back(b + "ls1.gamma");
        n.push_back(b + "ls2.gamma");
      }
    }
  }
  n.push_back("mlp.0.weight");
  n.push_back("mlp.0.bias");
  for (int l = 0; l < v.msc_layers; ++l) {
    const std::string p = "bidirectional_mamba.layers." + std::to_string(l) + ".";
    const std::string m = p + "mixer.";
    for (const char* k : {"in_proj.weight", "out_proj.weight", "norm.weight"}) n.push_back(m + k);
    for (const char* s : {"", "_b"}) {
      n.push_back(m + "conv1d" + s + ".weight");
      if (v.msc.conv_bias) n.push_back(m + "conv1d" + s + ".bias");
      for (const char* k : {"dt_bias", "A_log", "D"}) n.push_back(m + k + s);
    }
    for (const char* k : {"norm.weight", "norm.bias", "mlp.w1.weight", "mlp.w1.bias",
                          "mlp.w2.weight", "mlp.w2.bias", "mlp.w3.weight", "mlp.w3.bias"})
      n.push_back(p + k);
  }
  for (const char* k : {"bidirectional_mamba.norm_f.weight", "bidirectional_mamba.norm_f.bias",
                        "projector.projector.0.weight", "projector.projector.0.bias",
                        "projector.projector.2.weight", "projector.projector.2.bias",
                        "projector.projector.4.weight", "projector.projector.4.bias"})
    n.push_back(k);
  return n;
}

}  // namespace

Result<std::unique_ptr<CudaVision>> CudaVision::load(const WeightStore& store,
                                                     const ModelConfig& config,
                                                     const mlmamba_backend* module,
                                                     const Options& options) {
  if (!module) return make_error(ErrorCode::kBackend, "the CUDA backend module is not loaded");
  if (!config.has_vision) return make_error(ErrorCode::kInvalidArgument, "the model has no vision");
  const VisionConfig& v = config.vision;
  if (v.encoders.empty() || v.encoders.size() > MLMAMBA_MAX_ENCODERS)
    return make_error(ErrorCode::kUnsupported,
                      "the CUDA module runs 1 to " + std::to_string(MLMAMBA_MAX_ENCODERS) +
                          " encoders, the model has " + std::to_string(v.encoders.size()));
  if (v.msc.proj_bias)
    return make_error(ErrorCode::kUnsupported, "the connector's in_proj / out_proj carry a bias");
  const std::vector<std::string> names = vision_tensor_names(v);
  std::vector<mlmamba_tensor> tensors;
  tensors.reserve(names.size());
  for (const std::string& name : names) {
    auto mt = module_tensor(store, name, name.c_str());
    if (!mt.ok()) return mt.error();
    tensors.push_back(*mt);
  }
  mlmamba_vision_desc d{};
  d.device = options.device;
  d.image_size = v.image_size;
  d.n_encoders = static_cast<int>(v.encoders.size());
  for (size_t i = 0; i < v.encoders.size(); ++i) {
    const VitConfig& e = v.encoders[i];
    mlmamba_vit_desc& o = d.encoders[i];
    o.name = e.name.c_str();
    o.patch_size = e.patch_size;
    o.dim = e.dim;
    o.heads = e.heads;
    o.mlp_hidden = e.mlp_hidden;
    o.class_token = e.class_token ? 1 : 0;
    o.register_tokens = e.register_tokens;
    o.layer_scale = e.layer_scale ? 1 : 0;
    o.feature_layer = e.feature_layer;
    o.norm_eps = e.norm_eps;
    for (int k = 0; k < 3; ++k) {
      o.mean[k] = e.mean[k];
      o.std[k] = e.std[k];
    }
  }
  d.mlp_out = v.mlp_out;
  d.msc_layers = v.msc_layers;
  d.msc_d_inner = v.msc.d_inner;
  d.msc_d_state = v.msc.d_state;
  d.msc_headdim = v.msc.headdim;
  d.msc_nheads = v.msc.nheads;
  d.msc_ngroups = v.msc.ngroups;
  d.msc_d_conv = v.msc.d_conv;
  d.msc_chunk_size = v.msc.chunk_size;
  d.msc_norm_group_size = v.msc.norm_group_size;
  d.msc_mixer_norm_eps = v.msc.norm_eps;
  d.msc_conv_bias = v.msc.conv_bias ? 1 : 0;
  d.msc_layer_norm_eps = v.msc_layer_norm_eps;
  d.projector_hidden = v.projector_hidden;
  d.llm_d_model = config.llm.mixer.d_model;
  d.poison = options.poison ? 1 : 0;
  d.tensors = tensors.data();
  d.n_tensors = static_cast<int>(tensors.size());
  std::unique_ptr<CudaVision> gpu(new CudaVision());
  gpu->module_ = module;
  gpu->image_size_ = v.image_size;
  gpu->floats_ = static_cast<size_t>(v.rows()) * config.llm.mixer.d_model;
  MLM_TRY(module_call(module->vision_create, static_cast<const mlmamba_vision_desc*>(&d),
                      &gpu->vision_));
  return gpu;
}

CudaVision::~CudaVision() {
  if (vision_) module_->vision_free(vision_);
}

mlmamba_vision_info CudaVision::info() const {
  const std::lock_guard lock(mutex_);
  mlmamba_vision_info i{};
  module_->vision_info(vision_, &i);
  return i;
}

Result<void> CudaVision::encode(const RgbImage& square, float* rows) const {
  if (square.width != image_size_ || square.height != image_size_ ||
      square.pixels.size() != static_cast<size_t>(image_size_) * image_size_ * 3)
    return make_error(ErrorCode::kInvalidArgument, "the picture is not the encoders' square");
  const std::lock_guard lock(mutex_);
  return module_call(module_->vision_encode, vision_, square.pixels.data(), image_size_, rows,
                     floats_);
}

float CudaVision::last_ms() const {
  const std::lock_guard lock(mutex_);
  float ms = 0.0f;
  module_->vision_last_elapsed_ms(vision_, &ms);
  return ms;
}

}  // namespace mlmamba
