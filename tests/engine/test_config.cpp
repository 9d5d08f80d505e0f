// The three config forms, and a clear error naming the field for every missing or absurd value.
#include "config.h"

#include <gtest/gtest.h>

#include <functional>
#include <nlohmann/json.hpp>

namespace mlmamba {
namespace {

using nlohmann::json;

json package_config() {
  return json{{"format", "mlmamba-package"},
              {"format_version", 1},
              {"name", "test"},
              {"llm_backbone",
               {{"d_model", 64},
                {"n_layer", 2},
                {"vocab_size", 1024},
                {"d_state", 16},
                {"headdim", 16},
                {"ngroups", 2},
                {"expand", 2},
                {"d_conv", 4},
                {"chunk_size", 16},
                {"norm_eps", 1e-5},
                {"max_sequence_length", 4096}}},
              {"tokenizer", {{"file", "tokenizer.json"}, {"eos_token_id", 0}}},
              {"prompt", {{"template", "zephyr"}}},
              {"generation", {{"max_new_tokens", 512}}}};
}

json transformers_config() {
  return json{{"model_type", "mamba2"}, {"hidden_size", 64},    {"num_hidden_layers", 3},
              {"num_heads", 8},         {"head_dim", 16},       {"state_size", 16},
              {"n_groups", 2},          {"expand", 2},          {"conv_kernel", 4},
              {"chunk_size", 16},       {"vocab_size", 1024},   {"layer_norm_epsilon", 1e-5},
              {"use_bias", false},      {"use_conv_bias", true}};
}

// The released Mamba-2 2.7B config as mamba_ssm writes it.
json mamba_ssm_config() {
  return json{{"d_model", 2560},
              {"d_intermediate", 0},
              {"n_layer", 64},
              {"vocab_size", 50277},
              {"ssm_cfg", {{"layer", "Mamba2"}}},
              {"attn_layer_idx", json::array()},
              {"attn_cfg", json::object()},
              {"rms_norm", true},
              {"residual_in_fp32", true},
              {"fused_add_norm", true},
              {"pad_vocab_size_multiple", 16},
              {"tie_embeddings", true}};
}

TEST(Config, PackageForm) {
  auto c = parse_model_config(package_config().dump(), "pkg");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->format, ModelFormat::kPackage);
  EXPECT_EQ(c->llm.mixer.d_inner, 128);
  EXPECT_EQ(c->llm.mixer.nheads, 8);
  EXPECT_EQ(c->llm.mixer.norm_group_size, 64);  // per group, as mamba_ssm (the release's code)
  EXPECT_EQ(c->llm.max_sequence_length, 4096);
  EXPECT_EQ(c->embedding_key, "llm_backbone.backbone.embedding.weight");
  EXPECT_EQ(c->prompt_template, "zephyr");
}

json with_vision(json j) {
  j["image"] = {{"size", 70}, {"resize", "letterbox"}};
  j["vision_backbone"] = {{"encoders",
                           {{{"name", "dino_featurizer"},
                             {"patch_size", 14},
                             {"dim", 48},
                             {"heads", 4},
                             {"mlp_hidden", 96},
                             {"class_token", true},
                             {"register_tokens", 4},
                             {"layer_scale", true},
                             {"feature_layer", 2},
                             {"norm_eps", 1e-6},
                             {"mean", {0.485, 0.456, 0.406}},
                             {"std", {0.229, 0.224, 0.225}}},
                            {{"name", "siglip_featurizer"},
                             {"patch_size", 14},
                             {"dim", 144},
                             {"heads", 2},
                             {"mlp_hidden", 96},
                             {"class_token", false},
                             {"register_tokens", 0},
                             {"layer_scale", false},
                             {"feature_layer", 0},
                             {"norm_eps", 1e-6},
                             {"mean", {0.5, 0.5, 0.5}},
                             {"std", {0.5, 0.5, 0.5}}}}}};
  j["mlp"] = {{"out_dim", 64}};
  j["bidirectional_mamba"] = {{"n_layer", 2},     {"d_state", 16},    {"headdim", 16},
                              {"ngroups", 2},     {"expand", 2},      {"d_conv", 4},
                              {"chunk_size", 16}, {"norm_eps", 1e-5}, {"layer_norm_eps", 1e-5}};
  j["projector"] = {{"hidden_dim", 96}};
  return j;
}

TEST(Config, PackageWithTheImageHalf) {
  auto c = parse_model_config(with_vision(package_config()).dump(), "pkg");
  ASSERT_TRUE(c.ok()) << c.error().message;
  ASSERT_TRUE(c->has_vision);
  const VisionConfig& v = c->vision;
  EXPECT_EQ(v.grid, 5);  // 70 / 14: the last pixels are never seen
  EXPECT_EQ(v.rows(), 25);
  EXPECT_EQ(v.feature_dim(), 48 + 144);
  ASSERT_EQ(v.encoders.size(), 2u);
  EXPECT_EQ(v.encoders[0].prefix_tokens(), 5);
  EXPECT_EQ(v.encoders[1].head_dim(), 72);
  EXPECT_FLOAT_EQ(v.encoders[0].std[2], 0.225f);
  EXPECT_EQ(v.msc.d_model, 64);
  EXPECT_EQ(v.msc.d_inner, 128);
  EXPECT_EQ(v.msc.norm_group_size, 64);
  EXPECT_EQ(v.resize, "letterbox");
  EXPECT_FALSE(parse_model_config(package_config().dump(), "pkg")->has_vision);
}

TEST(Config, ImageHalfErrorsNameTheField) {
  struct Case {
    const char* what;
    std::function<void(json&)> change;
  };
  const std::vector<Case> cases = {
      {"feature_layer",
       [](json& j) { j["vision_backbone"]["encoders"][0].erase("feature_layer"); }},
      {"mean",
       [](json& j) {
         j["vision_backbone"]["encoders"][1]["mean"] = {0.5, 0.5};
       }},
      {"grid", [](json& j) { j["vision_backbone"]["encoders"][1]["patch_size"] = 10; }},
      {"heads", [](json& j) { j["vision_backbone"]["encoders"][0]["heads"] = 5; }},
      {"resize", [](json& j) { j["image"]["resize"] = "stretch"; }},
      {"encoders", [](json& j) { j["vision_backbone"]["encoders"] = json::array(); }},
      {"layer_norm_eps", [](json& j) { j["bidirectional_mamba"].erase("layer_norm_eps"); }},
      {"hidden_dim", [](json& j) { j["projector"] = json::object(); }},
      {"out_dim", [](json& j) { j["mlp"]["out_dim"] = 0; }},
  };
  for (const auto& k : cases) {
    json j = with_vision(package_config());
    k.change(j);
    auto c = parse_model_config(j.dump(), "pkg");
    EXPECT_FALSE(c.ok()) << k.what;
  }
}

TEST(Config, TransformersForm) {
  auto c = parse_model_config(transformers_config().dump(), "hf");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->format, ModelFormat::kTransformers);
  EXPECT_EQ(c->llm.mixer.d_inner, 128);
  EXPECT_EQ(c->llm.mixer.norm_group_size, 128);  // transformers normalises the whole width
  EXPECT_EQ(c->llm.mixer.d_in_proj(), 2 * 128 + 2 * 2 * 16 + 8);
  EXPECT_EQ(c->embedding_key, "backbone.embeddings.weight");
}

TEST(Config, MambaSsmFormOfTheReleased27B) {
  auto c = parse_model_config(mamba_ssm_config().dump(), "ssm");
  ASSERT_TRUE(c.ok()) << c.error().message;
  const auto& m = c->llm.mixer;
  EXPECT_EQ(c->llm.vocab_size, 50288);  // 50277 padded to a multiple of 16
  EXPECT_EQ(m.d_inner, 5120);
  EXPECT_EQ(m.nheads, 80);
  EXPECT_EQ(m.d_state, 128);
  EXPECT_EQ(m.d_in_proj(), 10576);  // [z 5120 | xBC 5376 | dt 80]
  EXPECT_EQ(m.conv_dim(), 5376);
  EXPECT_EQ(m.chunk_size, 256);
  EXPECT_EQ(c->llm.n_layer, 64);
  EXPECT_EQ(c->embedding_key, "backbone.embedding.weight");
}

TEST(Config, EveryMissingRequiredFieldIsNamed) {
  for (const char* key : {"d_model", "n_layer", "vocab_size", "d_state", "headdim", "ngroups",
                          "expand", "d_conv", "chunk_size", "norm_eps", "max_sequence_length"}) {
    json j = package_config();
    j["llm_backbone"].erase(key);
    auto c = parse_model_config(j.dump(), "pkg");
    ASSERT_FALSE(c.ok()) << key;
    EXPECT_NE(c.error().message.find(key), std::string::npos) << c.error().message;
  }
  for (const char* key :
       {"hidden_size", "num_hidden_layers", "num_heads", "head_dim", "state_size", "n_groups",
        "expand", "conv_kernel", "chunk_size", "vocab_size", "layer_norm_epsilon"}) {
    json j = transformers_config();
    j.erase(key);
    auto c = parse_model_config(j.dump(), "hf");
    ASSERT_FALSE(c.ok()) << key;
    EXPECT_NE(c.error().message.find(key), std::string::npos) << c.error().message;
  }
}

TEST(Config, AbsurdValuesAreRejected) {
  struct Case {
    const char* key;
    json value;
  };
  for (const Case& k :
       {Case{"d_model", -1}, Case{"d_model", 0}, Case{"n_layer", 1 << 30}, Case{"d_state", "16"},
        Case{"headdim", 7}, Case{"ngroups", 3}, Case{"norm_eps", -1.0}, Case{"chunk_size", 1.5},
        Case{"vocab_size", 1 << 30}}) {
    json j = package_config();
    j["llm_backbone"][k.key] = k.value;
    auto c = parse_model_config(j.dump(), "pkg");
    EXPECT_FALSE(c.ok()) << k.key << "=" << k.value.dump();
  }
  json huge = package_config();
  huge["llm_backbone"]["d_model"] = 1 << 20;
  huge["llm_backbone"]["n_layer"] = 4096;
  EXPECT_FALSE(parse_model_config(huge.dump(), "pkg").ok());
}

TEST(Config, TransformersShapesThatDisagreeAreRejected) {
  json j = transformers_config();
  j["num_heads"] = 6;  // 6 * 16 != 2 * 64
  EXPECT_FALSE(parse_model_config(j.dump(), "hf").ok());
  j = transformers_config();
  j["time_step_limit"] = {0.001, 0.1};
  auto c = parse_model_config(j.dump(), "hf");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code, ErrorCode::kUnsupported);
  for (json inf : {json(nullptr), json("Infinity"), json{{"__float__", "Infinity"}}}) {
    j = transformers_config();
    j["time_step_limit"] = {0.0, inf};
    EXPECT_TRUE(parse_model_config(j.dump(), "hf").ok()) << inf.dump();
  }
}

TEST(Config, NotAConfig) {
  EXPECT_EQ(parse_model_config("not json", "x").error().code, ErrorCode::kCorruptFile);
  EXPECT_EQ(parse_model_config("[1,2]", "x").error().code, ErrorCode::kCorruptFile);
  auto llama = parse_model_config(R"({"model_type": "llama"})", "x");
  ASSERT_FALSE(llama.ok());
  EXPECT_EQ(llama.error().code, ErrorCode::kUnsupported);
  EXPECT_NE(llama.error().message.find("llama"), std::string::npos);
  json j = mamba_ssm_config();
  j["d_intermediate"] = 4096;
  EXPECT_EQ(parse_model_config(j.dump(), "x").error().code, ErrorCode::kUnsupported);
  json p = package_config();
  p["tokenizer"]["file"] = "../../etc/passwd";
  EXPECT_FALSE(parse_model_config(p.dump(), "x").ok());
}

TEST(Config, MissingFolderAndFile) {
  EXPECT_EQ(read_model_config("/nonexistent/folder").error().code, ErrorCode::kNotFound);
  EXPECT_EQ(read_model_config("/").error().code, ErrorCode::kNotFound);
}

}  // namespace
}  // namespace mlmamba
