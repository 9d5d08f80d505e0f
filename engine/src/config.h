// Model folder configuration: the project's own package format, transformers' Mamba-2 and
// mamba_ssm's config.json, read into one description. Every size comes from the file.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "mlmamba/result.h"

namespace mlmamba {

struct Mamba2Dims {
  int d_model = 0;
  int d_inner = 0;
  int d_state = 0;
  int headdim = 0;
  int nheads = 0;
  int ngroups = 0;
  int d_conv = 0;
  int chunk_size = 0;
  // The gated RMSNorm normalises groups of this many channels (mamba_ssm: d_inner / ngroups).
  int norm_group_size = 0;
  float norm_eps = 1e-5f;
  bool proj_bias = false;  // in_proj / out_proj carry a bias
  bool conv_bias = true;

  int conv_dim() const { return d_inner + 2 * ngroups * d_state; }
  int d_in_proj() const { return 2 * d_inner + 2 * ngroups * d_state + nheads; }
};

struct LlmConfig {
  Mamba2Dims mixer;
  int n_layer = 0;
  int vocab_size = 0;  // rows of the embedding (already padded)
  float norm_eps = 1e-5f;
  int max_sequence_length = 0;
};

// One ViT in timm's layout (docs/model-format.md, "encoders").
struct VitConfig {
  std::string name;  // tensor prefix under vision_backbone.
  int patch_size = 0;
  int dim = 0;
  int heads = 0;
  int mlp_hidden = 0;
  bool class_token = false;
  int register_tokens = 0;
  bool layer_scale = false;
  int feature_layer = 0;  // 0-based block whose output is the feature
  float norm_eps = 1e-6f;
  float mean[3] = {0, 0, 0};
  float std[3] = {1, 1, 1};
  int head_dim() const { return dim / heads; }
  int prefix_tokens() const { return (class_token ? 1 : 0) + register_tokens; }
};

// The image half of a package: encoders, mlp, MSC connector, projector.
struct VisionConfig {
  int image_size = 0;
  std::string resize;  // "resize-naive" | "letterbox" | "resize-crop"
  std::vector<VitConfig> encoders;
  int grid = 0;     // patches per side, the same for every encoder
  int mlp_out = 0;  // width of the connector
  int msc_layers = 0;
  Mamba2Dims msc;  // mixer sizes of the connector, d_model = mlp_out
  float msc_layer_norm_eps = 1e-5f;
  int projector_hidden = 0;
  int feature_dim() const {
    int d = 0;
    for (const auto& e : encoders) d += e.dim;
    return d;
  }
  int rows() const { return grid * grid; }
};

enum class ModelFormat { kPackage, kTransformers, kMambaSsm };
const char* model_format_name(ModelFormat format);

struct ModelConfig {
  ModelFormat format = ModelFormat::kPackage;
  std::string name;
  LlmConfig llm;
  bool has_vision = false;
  VisionConfig vision;
  // Where the language model's tensors live inside the weight files.
  std::string llm_prefix;     // e.g. "backbone." or "llm_backbone.backbone."
  std::string embedding_key;  // full name of the embedding matrix
  std::string lm_head_key;    // full name of an untied head (used only if present)
  std::string tokenizer_file = "tokenizer.json";
  int eos_token_id = -1;  // -1: take `<|endoftext|>` from the tokenizer
  std::string prompt_template = "zephyr";
  int default_max_new_tokens = 512;
};

// Reads `dir/config.json` and recognises its form.
Result<ModelConfig> read_model_config(const std::filesystem::path& dir);
// Same, from text (tests). `origin` names the source in error messages.
Result<ModelConfig> parse_model_config(const std::string& json_text, const std::string& origin);

// Checks sizes for consistency (divisibility, positivity, bounds); shared by every form.
Result<void> validate(const LlmConfig& llm, const std::string& origin);

// Sequence cap for formats that do not state one: Mamba has no positional limit, this only bounds
// the work one session can be asked for.
inline constexpr int kDefaultMaxSequenceLength = 1 << 17;

}  // namespace mlmamba
