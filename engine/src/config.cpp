#include "config.h"

#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

namespace mlmamba {
namespace {

using nlohmann::json;

// Reads required fields of one JSON object and remembers the first problem, so a config is checked
// with straight-line code and reports the exact field at fault.
class Fields {
 public:
  Fields(const json& obj, std::string where) : obj_(obj), where_(std::move(where)) {}

  int integer(const char* key, int lo, int hi) {
    const json* v = get(key);
    if (!v) return 0;
    if (!v->is_number_integer()) return fail(key, "must be an integer"), 0;
    const auto x = v->get<int64_t>();
    if (x < lo || x > hi) {
      return fail(key, "is " + std::to_string(x) + ", outside " + std::to_string(lo) + ".." +
                           std::to_string(hi)),
             0;
    }
    return static_cast<int>(x);
  }
  float number(const char* key, double lo, double hi) {
    const json* v = get(key);
    if (!v) return 0;
    if (!v->is_number()) return fail(key, "must be a number"), 0.0f;
    const double x = v->get<double>();
    if (!(x >= lo && x <= hi)) return fail(key, "is out of range"), 0.0f;
    return static_cast<float>(x);
  }
  bool boolean(const char* key) {
    const json* v = get(key);
    if (!v) return false;
    if (!v->is_boolean()) return fail(key, "must be true or false"), false;
    return v->get<bool>();
  }
  std::string string(const char* key) {
    const json* v = get(key);
    if (!v) return {};
    if (!v->is_string()) return fail(key, "must be a string"), std::string();
    return v->get<std::string>();
  }
  const json& object(const char* key) {
    static const json kEmpty = json::object();
    const json* v = get(key);
    if (!v) return kEmpty;
    if (!v->is_object()) return fail(key, "must be an object"), kEmpty;
    return *v;
  }
  bool has(const char* key) const { return obj_.contains(key) && !obj_[key].is_null(); }
  // An array of exactly `n` numbers.
  std::vector<float> numbers(const char* key, size_t n) {
    const json* v = get(key);
    std::vector<float> out;
    if (!v) return out;
    if (!v->is_array() || v->size() != n)
      return fail(key, "must be an array of " + std::to_string(n) + " numbers"), out;
    for (const auto& x : *v) {
      if (!x.is_number()) return fail(key, "must hold numbers only"), std::vector<float>();
      out.push_back(x.get<float>());
    }
    return out;
  }
  const json& array(const char* key) {
    static const json kEmpty = json::array();
    const json* v = get(key);
    if (!v) return kEmpty;
    if (!v->is_array()) return fail(key, "must be an array"), kEmpty;
    return *v;
  }

  Result<void> status() const {
    if (error_.empty()) return {};
    return make_error(ErrorCode::kCorruptFile, error_);
  }
  const std::string& where() const { return where_; }

 private:
  const json* get(const char* key) {
    if (!has(key)) {
      fail(key, "is missing");
      return nullptr;
    }
    return &obj_[key];
  }
  void fail(const char* key, const std::string& what) {
    if (error_.empty()) error_ = where_ + ": field \"" + key + "\" " + what;
  }

  const json& obj_;
  std::string where_;
  std::string error_;
};

constexpr int kMaxDim = 1 << 20;

// Infinity as Python's json writes it (a bare Infinity is not JSON, so writers use a string, null
// or transformers' {"__float__": "Infinity"}).
bool is_infinity(const json& v) {
  if (v.is_null()) return true;
  if (v.is_number()) return v.get<double>() >= 1e30;
  if (v.is_string()) return v.get<std::string>() == "Infinity" || v.get<std::string>() == "inf";
  if (v.is_object() && v.contains("__float__")) return is_infinity(v["__float__"]);
  return false;
}

// The mixer sizes shared by the language model and the connector sections of a package.
void read_mixer(Fields& f, int d_model, Mamba2Dims* m) {
  m->d_model = d_model;
  m->d_state = f.integer("d_state", 1, 4096);
  m->headdim = f.integer("headdim", 1, 4096);
  m->ngroups = f.integer("ngroups", 1, 4096);
  const int expand = f.integer("expand", 1, 64);
  m->d_conv = f.integer("d_conv", 1, 64);
  m->chunk_size = f.integer("chunk_size", 1, 65536);
  m->norm_eps = f.number("norm_eps", 0, 1);
  m->d_inner = expand * d_model;
  m->nheads = m->headdim > 0 ? m->d_inner / m->headdim : 0;
  // Per-group gated norm, as mamba_ssm (the released model's code) computes it.
  m->norm_group_size = m->ngroups > 0 ? m->d_inner / m->ngroups : 0;
}

Result<VisionConfig> parse_vision(const json& root, const std::string& origin) {
  VisionConfig v;
  Fields top(root, origin);
  const json& image = top.object("image");
  const json& backbone = top.object("vision_backbone");
  const json& mlp = top.object("mlp");
  const json& msc = top.object("bidirectional_mamba");
  const json& projector = top.object("projector");
  MLM_TRY(top.status());
  Fields fi(image, origin + ": image");
  v.image_size = fi.integer("size", 8, 8192);
  v.resize = fi.string("resize");
  MLM_TRY(fi.status());
  if (v.resize != "resize-naive" && v.resize != "letterbox" && v.resize != "resize-crop") {
    return make_error(ErrorCode::kUnsupported,
                      origin + ": image.resize \"" + v.resize + "\" is not known");
  }
  Fields fb(backbone, origin + ": vision_backbone");
  const json& encoders = fb.array("encoders");
  MLM_TRY(fb.status());
  if (encoders.empty() || encoders.size() > 8) {
    return make_error(ErrorCode::kCorruptFile,
                      origin + ": vision_backbone.encoders must list 1 to 8 encoders");
  }
  for (size_t i = 0; i < encoders.size(); ++i) {
    if (!encoders[i].is_object())
      return make_error(ErrorCode::kCorruptFile, origin + ": encoders must be objects");
    Fields fe(encoders[i], origin + ": vision_backbone.encoders[" + std::to_string(i) + "]");
    VitConfig e;
    e.name = fe.string("name");
    e.patch_size = fe.integer("patch_size", 1, 1024);
    e.dim = fe.integer("dim", 1, 1 << 16);
    e.heads = fe.integer("heads", 1, 1024);
    e.mlp_hidden = fe.integer("mlp_hidden", 1, 1 << 18);
    e.class_token = fe.boolean("class_token");
    e.register_tokens = fe.integer("register_tokens", 0, 1024);
    e.layer_scale = fe.boolean("layer_scale");
    e.feature_layer = fe.integer("feature_layer", 0, 1023);
    e.norm_eps = fe.number("norm_eps", 0, 1);
    const auto mean = fe.numbers("mean", 3), sd = fe.numbers("std", 3);
    MLM_TRY(fe.status());
    for (int c = 0; c < 3; ++c) {
      e.mean[c] = mean[c];
      e.std[c] = sd[c];
      if (!(sd[c] > 0))
        return make_error(ErrorCode::kCorruptFile,
                          origin + ": encoder " + e.name + ": std must be > 0");
    }
    if (e.name.empty() || e.name.find_first_of("./") != std::string::npos) {
      return make_error(ErrorCode::kCorruptFile, origin + ": encoder names must be plain words");
    }
    if (e.dim % e.heads != 0) {
      return make_error(ErrorCode::kCorruptFile,
                        origin + ": encoder " + e.name + ": dim is not a multiple of heads");
    }
    const int grid = v.image_size / e.patch_size;
    if (grid < 1)
      return make_error(ErrorCode::kCorruptFile,
                        origin + ": encoder " + e.name + ": patch larger than the image");
    if (v.grid != 0 && grid != v.grid) {
      return make_error(ErrorCode::kCorruptFile,
                        origin + ": every encoder must give the same patch grid (" +
                            std::to_string(v.grid) + " vs " + std::to_string(grid) + ")");
    }
    v.grid = grid;
    v.encoders.push_back(e);
  }
  Fields fm(mlp, origin + ": mlp");
  v.mlp_out = fm.integer("out_dim", 1, 1 << 18);
  MLM_TRY(fm.status());
  Fields fc(msc, origin + ": bidirectional_mamba");
  v.msc_layers = fc.integer("n_layer", 0, 64);
  read_mixer(fc, v.mlp_out, &v.msc);
  v.msc_layer_norm_eps = fc.number("layer_norm_eps", 0, 1);
  MLM_TRY(fc.status());
  Fields fp(projector, origin + ": projector");
  v.projector_hidden = fp.integer("hidden_dim", 1, 1 << 18);
  MLM_TRY(fp.status());
  LlmConfig as_llm;  // reuse the mixer checks
  as_llm.mixer = v.msc;
  as_llm.n_layer = std::max(1, v.msc_layers);
  as_llm.vocab_size = 1;
  as_llm.norm_eps = v.msc.norm_eps;
  MLM_TRY(validate(as_llm, origin + ": bidirectional_mamba"));
  return v;
}

Result<ModelConfig> parse_package(const json& root, const std::string& origin) {
  ModelConfig c;
  c.format = ModelFormat::kPackage;
  Fields top(root, origin);
  const int version = top.integer("format_version", 1, 1);
  (void)version;
  c.name = top.string("name");
  const json& llm_obj = top.object("llm_backbone");
  const json& tok_obj = top.object("tokenizer");
  const json& prompt_obj = top.object("prompt");
  const json& gen_obj = top.object("generation");
  MLM_TRY(top.status());

  Fields f(llm_obj, origin + ": llm_backbone");
  LlmConfig& l = c.llm;
  const int d_model = f.integer("d_model", 1, kMaxDim);
  l.n_layer = f.integer("n_layer", 1, 4096);
  l.vocab_size = f.integer("vocab_size", 1, 1 << 24);
  read_mixer(f, d_model, &l.mixer);
  l.max_sequence_length = f.integer("max_sequence_length", 1, 1 << 24);
  MLM_TRY(f.status());
  l.norm_eps = l.mixer.norm_eps;

  Fields t(tok_obj, origin + ": tokenizer");
  c.tokenizer_file = t.string("file");
  c.eos_token_id = t.integer("eos_token_id", 0, 1 << 24);
  MLM_TRY(t.status());
  Fields p(prompt_obj, origin + ": prompt");
  c.prompt_template = p.string("template");
  MLM_TRY(p.status());
  Fields g(gen_obj, origin + ": generation");
  c.default_max_new_tokens = g.integer("max_new_tokens", 1, 1 << 20);
  MLM_TRY(g.status());
  if (c.prompt_template != "zephyr" && c.prompt_template != "none") {
    return make_error(ErrorCode::kUnsupported,
                      origin + ": prompt template \"" + c.prompt_template + "\" is not known");
  }
  if (c.tokenizer_file.empty() || c.tokenizer_file.find("..") != std::string::npos) {
    return make_error(ErrorCode::kCorruptFile,
                      origin + ": tokenizer.file must name a file inside the package");
  }
  if (root.contains("vision_backbone")) {
    MLM_ASSIGN_OR_RETURN(c.vision, parse_vision(root, origin));
    c.has_vision = true;
  }
  c.llm_prefix = "llm_backbone.backbone.";
  c.embedding_key = c.llm_prefix + "embedding.weight";
  c.lm_head_key = "llm_backbone.lm_head.weight";
  return c;
}

Result<ModelConfig> parse_transformers(const json& root, const std::string& origin) {
  ModelConfig c;
  c.format = ModelFormat::kTransformers;
  Fields f(root, origin);
  LlmConfig& l = c.llm;
  Mamba2Dims& m = l.mixer;
  m.d_model = f.integer("hidden_size", 1, kMaxDim);
  l.n_layer = f.integer("num_hidden_layers", 1, 4096);
  m.nheads = f.integer("num_heads", 1, 1 << 16);
  m.headdim = f.integer("head_dim", 1, 4096);
  m.d_state = f.integer("state_size", 1, 4096);
  m.ngroups = f.integer("n_groups", 1, 4096);
  const int expand = f.integer("expand", 1, 64);
  m.d_conv = f.integer("conv_kernel", 1, 64);
  m.chunk_size = f.integer("chunk_size", 1, 65536);
  l.vocab_size = f.integer("vocab_size", 1, 1 << 24);
  l.norm_eps = f.number("layer_norm_epsilon", 0, 1);
  m.proj_bias = f.boolean("use_bias");
  m.conv_bias = f.boolean("use_conv_bias");
  MLM_TRY(f.status());
  // transformers sizes the mixer from num_heads * head_dim; expand only has to agree with it.
  m.d_inner = m.nheads * m.headdim;
  if (m.d_inner != expand * m.d_model) {
    return make_error(ErrorCode::kCorruptFile, origin + ": num_heads * head_dim (" +
                                                   std::to_string(m.d_inner) +
                                                   ") differs from expand * hidden_size (" +
                                                   std::to_string(expand * m.d_model) + ")");
  }
  if (root.contains("residual_in_fp32") && root["residual_in_fp32"] == false) {
    return make_error(
        ErrorCode::kUnsupported,
        origin + ": residual_in_fp32 false is not supported (the residual stays fp32)");
  }
  if (root.contains("rms_norm") && root["rms_norm"] == false) {
    return make_error(ErrorCode::kUnsupported,
                      origin + ": rms_norm false (ungated output) is not supported");
  }
  if (root.contains("time_step_limit") && !root["time_step_limit"].is_null()) {
    const json& lim = root["time_step_limit"];
    if (!lim.is_array() || lim.size() != 2 || !lim[0].is_number() || lim[0].get<double>() > 0 ||
        !is_infinity(lim[1])) {
      return make_error(ErrorCode::kUnsupported,
                        origin + ": a dt clamp (time_step_limit) is not supported");
    }
  }
  // transformers' gated RMSNorm normalises across the whole inner width whatever n_groups is (its
  // MambaRMSNormGated has no groups; checked on 5.17), unlike mamba_ssm's per-group norm.
  m.norm_group_size = m.d_inner;
  m.norm_eps = l.norm_eps;
  l.max_sequence_length = kDefaultMaxSequenceLength;
  if (root.contains("eos_token_id") && root["eos_token_id"].is_number_integer()) {
    c.eos_token_id = root["eos_token_id"].get<int>();
  }
  c.name = root.value("_name_or_path", std::string("mamba2"));
  c.llm_prefix = "backbone.";
  c.embedding_key = "backbone.embeddings.weight";
  c.lm_head_key = "lm_head.weight";
  c.prompt_template = "none";
  return c;
}

Result<ModelConfig> parse_mamba_ssm(const json& root, const std::string& origin) {
  ModelConfig c;
  c.format = ModelFormat::kMambaSsm;
  Fields f(root, origin);
  LlmConfig& l = c.llm;
  Mamba2Dims& m = l.mixer;
  m.d_model = f.integer("d_model", 1, kMaxDim);
  l.n_layer = f.integer("n_layer", 1, 4096);
  const int vocab = f.integer("vocab_size", 1, 1 << 24);
  const json& ssm = f.object("ssm_cfg");
  MLM_TRY(f.status());
  const int pad = root.contains("pad_vocab_size_multiple") &&
                          root["pad_vocab_size_multiple"].is_number_integer()
                      ? root["pad_vocab_size_multiple"].get<int>()
                      : 8;  // MambaConfig's own default in mamba_ssm
  if (pad < 1)
    return make_error(ErrorCode::kCorruptFile, origin + ": pad_vocab_size_multiple must be >= 1");
  l.vocab_size = (vocab + pad - 1) / pad * pad;
  if (root.value("d_intermediate", 0) != 0) {
    return make_error(ErrorCode::kUnsupported,
                      origin + ": MLP layers (d_intermediate > 0) are not supported");
  }
  if (root.contains("attn_layer_idx") && root["attn_layer_idx"].is_array() &&
      !root["attn_layer_idx"].empty()) {
    return make_error(ErrorCode::kUnsupported, origin + ": attention layers are not supported");
  }
  if (ssm.value("layer", std::string()) != "Mamba2") {
    return make_error(ErrorCode::kUnsupported, origin + ": ssm_cfg.layer must be \"Mamba2\"");
  }
  // mamba_ssm writes only what differs from its Mamba2 module's constructor, so the format itself
  // defines these values when absent (they are the constructor's, not guesses).
  auto ssm_int = [&](const char* key, int def) {
    return ssm.contains(key) && ssm[key].is_number_integer() ? ssm[key].get<int>() : def;
  };
  m.d_state = ssm_int("d_state", 128);
  m.d_conv = ssm_int("d_conv", 4);
  const int expand = ssm_int("expand", 2);
  m.headdim = ssm_int("headdim", 64);
  m.ngroups = ssm_int("ngroups", 1);
  m.chunk_size = ssm_int("chunk_size", 256);
  m.proj_bias = ssm.value("bias", false);
  m.conv_bias = ssm.value("conv_bias", true);
  if (ssm.contains("rmsnorm") && ssm["rmsnorm"] == false) {
    return make_error(ErrorCode::kUnsupported, origin + ": ssm_cfg.rmsnorm false is not supported");
  }
  if (ssm.value("norm_before_gate", false)) {
    return make_error(ErrorCode::kUnsupported, origin + ": norm_before_gate true is not supported");
  }
  if (ssm.contains("D_has_hdim") && ssm["D_has_hdim"] == true) {
    return make_error(ErrorCode::kUnsupported, origin + ": D_has_hdim is not supported");
  }
  if (root.contains("rms_norm") && root["rms_norm"] == false) {
    return make_error(ErrorCode::kUnsupported,
                      origin + ": LayerNorm blocks (rms_norm false) are not supported");
  }
  m.d_inner = expand * m.d_model;
  m.nheads = m.headdim > 0 ? m.d_inner / m.headdim : 0;
  m.norm_group_size = m.ngroups > 0 ? m.d_inner / m.ngroups : 0;
  l.norm_eps = 1e-5f;  // mamba_ssm's RMSNorm and gated norm both use 1e-5
  m.norm_eps = l.norm_eps;
  l.max_sequence_length = kDefaultMaxSequenceLength;
  c.name = "mamba2";
  c.llm_prefix = "backbone.";
  c.embedding_key = "backbone.embedding.weight";
  c.lm_head_key = "lm_head.weight";
  c.prompt_template = "none";
  return c;
}

}  // namespace

const char* model_format_name(ModelFormat format) {
  switch (format) {
    case ModelFormat::kPackage:
      return "mlmamba-package";
    case ModelFormat::kTransformers:
      return "transformers-mamba2";
    case ModelFormat::kMambaSsm:
      return "mamba_ssm";
  }
  return "unknown";
}

Result<void> validate(const LlmConfig& l, const std::string& origin) {
  const Mamba2Dims& m = l.mixer;
  auto bad = [&](const std::string& what) {
    return make_error(ErrorCode::kCorruptFile, origin + ": " + what);
  };
  if (m.d_inner <= 0 || m.headdim <= 0 || m.d_inner % m.headdim != 0) {
    return bad("the inner width " + std::to_string(m.d_inner) + " is not a multiple of headdim " +
               std::to_string(m.headdim));
  }
  if (m.nheads * m.headdim != m.d_inner) return bad("nheads * headdim must equal the inner width");
  if (m.ngroups <= 0 || m.nheads % m.ngroups != 0) {
    return bad("nheads " + std::to_string(m.nheads) + " is not a multiple of ngroups " +
               std::to_string(m.ngroups));
  }
  if (m.norm_group_size <= 0 || m.d_inner % m.norm_group_size != 0)
    return bad("bad norm group size");
  if (!(l.norm_eps > 0)) return bad("the norm epsilon must be positive");
  // Products the engine forms from these sizes must stay far from overflow.
  const double params_per_layer =
      static_cast<double>(m.d_model) * m.d_in_proj() + static_cast<double>(m.d_inner) * m.d_model;
  if (params_per_layer * l.n_layer > 1e12) return bad("sizes are absurd (over 10^12 parameters)");
  if (static_cast<double>(l.vocab_size) * m.d_model > 4e10)
    return bad("vocabulary x width is absurd");
  return {};
}

Result<ModelConfig> parse_model_config(const std::string& text, const std::string& origin) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception& e) {
    return make_error(ErrorCode::kCorruptFile, origin + ": not valid JSON (" + e.what() + ")");
  }
  if (!root.is_object()) return make_error(ErrorCode::kCorruptFile, origin + ": not a JSON object");
  Result<ModelConfig> parsed = make_error(ErrorCode::kUnsupported, "");
  try {
    if (root.value("format", std::string()) == "mlmamba-package") {
      parsed = parse_package(root, origin);
    } else if (root.value("model_type", std::string()) == "mamba2") {
      parsed = parse_transformers(root, origin);
    } else if (root.contains("ssm_cfg") && root.contains("d_model")) {
      parsed = parse_mamba_ssm(root, origin);
    } else {
      const std::string mt = root.value("model_type", std::string());
      return make_error(
          ErrorCode::kUnsupported,
          origin +
              ": not a model this engine reads (expected \"format\": "
              "\"mlmamba-package\", \"model_type\": \"mamba2\" or a mamba_ssm config" +
              (mt.empty() ? std::string(")") : "; model_type is \"" + mt + "\")"));
    }
  } catch (const json::exception& e) {
    return make_error(ErrorCode::kCorruptFile, origin + ": " + e.what());
  }
  if (!parsed.ok()) return parsed.error();
  MLM_TRY(validate(parsed->llm, origin));
  return parsed;
}

Result<ModelConfig> read_model_config(const std::filesystem::path& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    return make_error(ErrorCode::kNotFound,
                      "model folder " + dir.string() + " does not exist or is not a folder");
  }
  const auto path = dir / "config.json";
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(ErrorCode::kNotFound, path.string() + " is missing");
  in.seekg(0, std::ios::end);
  const auto size = static_cast<std::streamoff>(in.tellg());
  if (size > (16 << 20))
    return make_error(ErrorCode::kCorruptFile, path.string() + " is too large for a config");
  in.seekg(0);
  std::string text(static_cast<size_t>(size), '\0');
  in.read(text.data(), size);
  return parse_model_config(text, path.string());
}

}  // namespace mlmamba
