#include "safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace mlmamba {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// ---- a minimal safetensors writer, so every test builds exactly the bytes it needs ----

struct TestTensor {
  std::string name;
  std::string dtype;  // as written in the header: "F32", "F16", "BF16", ...
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

template <class T>
std::vector<uint8_t> raw_bytes(const std::vector<T>& v) {
  std::vector<uint8_t> out(v.size() * sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), v.data(), out.size());
  return out;
}

std::string u64_le(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

// Length prefix + header text + data, with no validation at all: lying files are built with it.
std::string raw_file(const std::string& header, const std::string& data) {
  return u64_le(header.size()) + header + data;
}

std::string make_file(const std::vector<TestTensor>& tensors, const json& metadata = nullptr) {
  json header = json::object();
  if (!metadata.is_null()) header["__metadata__"] = metadata;
  std::string data;
  for (const TestTensor& t : tensors) {
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
    data.append(t.bytes.begin(), t.bytes.end());
  }
  std::string text = header.dump();
  // Writers pad the header with spaces to keep the data 8-byte aligned; readers must accept it.
  while ((text.size() + 8) % 8 != 0) text += ' ';
  return raw_file(text, data);
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ =
        fs::temp_directory_path() / ("mlmamba_st_" + std::to_string(getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  fs::path write(const std::string& name, const std::string& content) {
    const fs::path p = dir_ / name;
    fs::create_directories(p.parent_path());
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    out.close();
    EXPECT_TRUE(out.good()) << p;
    return p;
  }

  // Opens `content` written to a file and returns the error, failing the test if it opened.
  Error open_error(const std::string& content) {
    auto r = WeightStore::open(write("t.safetensors", content));
    EXPECT_FALSE(r.ok());
    if (r.ok()) return Error{ErrorCode::kInvalidArgument, "unexpectedly opened"};
    return r.error();
  }

  fs::path dir_;
};

#define EXPECT_ERROR(err, expected_code, ...)                                            \
  do {                                                                                   \
    const Error& e_ = (err);                                                             \
    EXPECT_EQ(e_.code, expected_code) << error_code_name(e_.code) << ": " << e_.message; \
    for (const char* part : {__VA_ARGS__})                                               \
      EXPECT_NE(e_.message.find(part), std::string::npos)                                \
          << "'" << part << "' not in: " << e_.message;                                  \
  } while (0)

uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Independent f16 reference: decodes the fields arithmetically (ldexp), not by moving bits.
uint32_t f16_reference_bits(uint16_t h) {
  const bool neg = (h & 0x8000) != 0;
  const int exp = (h >> 10) & 0x1f;
  const int mant = h & 0x3ff;
  if (exp == 0x1f) {
    if (mant == 0) return float_bits(neg ? -INFINITY : INFINITY);
    // NaN: same sign, payload kept in the top of the f32 mantissa.
    return (neg ? 0x80000000u : 0u) | 0x7f800000u | (static_cast<uint32_t>(mant) << 13);
  }
  const double mag = exp == 0 ? std::ldexp(mant, -24) : std::ldexp(1024 + mant, exp - 25);
  return float_bits(static_cast<float>(neg ? -mag : mag));
}

std::vector<uint16_t> all_16bit_patterns() {
  std::vector<uint16_t> v(65536);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint16_t>(i);
  return v;
}

// ---- round trips ----

TEST_F(SafetensorsTest, F32RoundTripKeepsEveryBit) {
  const std::vector<float> values = {0.0f,
                                     -0.0f,
                                     1.5f,
                                     -3.25e10f,
                                     std::numeric_limits<float>::infinity(),
                                     -std::numeric_limits<float>::infinity(),
                                     std::numeric_limits<float>::quiet_NaN(),
                                     std::numeric_limits<float>::denorm_min(),
                                     std::numeric_limits<float>::max()};
  const auto path = write("a.safetensors", make_file({{"w", "F32", {3, 3}, raw_bytes(values)}}));
  auto store = WeightStore::open(path);
  ASSERT_TRUE(store.ok()) << store.error().message;
  const TensorView* t = store->find("w");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->name, "w");
  EXPECT_EQ(t->dtype, DType::kF32);
  EXPECT_EQ(t->shape, (std::vector<int64_t>{3, 3}));
  EXPECT_EQ(t->numel(), 9);
  EXPECT_EQ(t->nbytes, 36u);
  const std::vector<float> got = to_f32(*t);
  ASSERT_EQ(got.size(), values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(float_bits(got[i]), float_bits(values[i])) << i;
  }
}

TEST_F(SafetensorsTest, F16WidensAllPatternsExactly) {
  const std::vector<uint16_t> all = all_16bit_patterns();
  const auto path = write("a.safetensors", make_file({{"h", "F16", {256, 256}, raw_bytes(all)}}));
  auto store = WeightStore::open(path);
  ASSERT_TRUE(store.ok()) << store.error().message;
  const TensorView* t = store->find("h");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, DType::kF16);
  const std::vector<float> got = to_f32(*t);
  ASSERT_EQ(got.size(), all.size());
  int mismatches = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    if (float_bits(got[i]) != f16_reference_bits(all[i]) && ++mismatches < 10) {
      ADD_FAILURE() << std::hex << "f16 0x" << all[i] << " -> 0x" << float_bits(got[i])
                    << ", expected 0x" << f16_reference_bits(all[i]);
    }
  }
  EXPECT_EQ(mismatches, 0);
  // Landmarks, independent of the reference decoder.
  EXPECT_EQ(got[0x0000], 0.0f);
  EXPECT_TRUE(std::signbit(got[0x8000]) && got[0x8000] == 0.0f);
  EXPECT_EQ(got[0x3c00], 1.0f);
  EXPECT_EQ(got[0xc000], -2.0f);
  EXPECT_EQ(got[0x7bff], 65504.0f);
  EXPECT_EQ(got[0x0001], 0x1p-24f);         // smallest subnormal
  EXPECT_EQ(got[0x03ff], 1023 * 0x1p-24f);  // largest subnormal
  EXPECT_EQ(got[0x0400], 0x1p-14f);         // smallest normal
  EXPECT_EQ(got[0x7c00], std::numeric_limits<float>::infinity());
  EXPECT_EQ(got[0xfc00], -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(got[0x7e00]));
  EXPECT_TRUE(std::isnan(got[0xfc01]) && std::signbit(got[0xfc01]));
}

TEST_F(SafetensorsTest, BF16WidensAllPatternsExactly) {
  const std::vector<uint16_t> all = all_16bit_patterns();
  const auto path = write("a.safetensors", make_file({{"b", "BF16", {65536}, raw_bytes(all)}}));
  auto store = WeightStore::open(path);
  ASSERT_TRUE(store.ok()) << store.error().message;
  const TensorView* t = store->find("b");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, DType::kBF16);
  std::vector<float> got(all.size(), 123.0f);
  convert_to_f32(*t, got.data());
  for (size_t i = 0; i < all.size(); ++i) {
    ASSERT_EQ(float_bits(got[i]), static_cast<uint32_t>(all[i]) << 16) << i;
  }
  EXPECT_EQ(got[0x3f80], 1.0f);
  EXPECT_EQ(got[0xc040], -3.0f);
  EXPECT_TRUE(std::signbit(got[0x8000]) && got[0x8000] == 0.0f);
  EXPECT_EQ(got[0x0001], std::ldexp(1.0f, -133));  // smallest bf16 subnormal
  EXPECT_EQ(got[0x7f80], std::numeric_limits<float>::infinity());
  EXPECT_EQ(got[0xff80], -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(got[0x7fc0]));
}

TEST_F(SafetensorsTest, LargeTensorsConvertIdenticallyAcrossBlocks) {
  // Large enough to take the multi-threaded path; every element must match the scalar rule.
  const size_t n = (size_t{5} << 20) + 7;
  std::vector<uint16_t> src(n);
  for (size_t i = 0; i < n; ++i) src[i] = static_cast<uint16_t>(i * 2654435761u >> 7);
  TensorView t;
  t.shape = {static_cast<int64_t>(n)};
  t.data = reinterpret_cast<const std::byte*>(src.data());
  t.nbytes = n * 2;
  t.dtype = DType::kBF16;
  std::vector<float> got = to_f32(t);
  ASSERT_EQ(got.size(), n);
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(float_bits(got[i]), uint32_t{src[i]} << 16) << i;
  t.dtype = DType::kF16;
  got = to_f32(t);
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(float_bits(got[i]), f16_reference_bits(src[i])) << i;
}

TEST_F(SafetensorsTest, UnalignedDataConvertsCorrectly) {
  // A 1-element bf16 first puts the f32 and f16 data at odd-even offsets not aligned to 4.
  const std::vector<uint16_t> one = {0x3f80};
  const std::vector<float> f = {1.0f, -2.5f, 3.0e-40f};
  const std::vector<uint16_t> h = {0x3c00, 0x0001, 0xfbff};
  const auto path = write("a.safetensors", make_file({{"a", "BF16", {1}, raw_bytes(one)},
                                                      {"b", "F32", {3}, raw_bytes(f)},
                                                      {"c", "F16", {3}, raw_bytes(h)}}));
  auto store = WeightStore::open(path);
  ASSERT_TRUE(store.ok()) << store.error().message;
  const TensorView* b = store->find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_NE(reinterpret_cast<uintptr_t>(b->data) % 4, 0u);
  const auto bf = to_f32(*b);
  ASSERT_EQ(bf.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(float_bits(bf[i]), float_bits(f[i]));
  const auto cf = to_f32(*store->find("c"));
  EXPECT_EQ(cf, (std::vector<float>{1.0f, 0x1p-24f, -65504.0f}));
  EXPECT_EQ(to_f32(*store->find("a")), std::vector<float>{1.0f});
}

TEST_F(SafetensorsTest, MetadataIsRead) {
  const auto path =
      write("a.safetensors", make_file({{"w", "F32", {1}, raw_bytes(std::vector<float>{1})}},
                                       {{"format", "pt"}, {"note", "x y"}}));
  auto store = WeightStore::open(path);
  ASSERT_TRUE(store.ok()) << store.error().message;
  EXPECT_EQ(store->metadata(),
            (std::map<std::string, std::string>{{"format", "pt"}, {"note", "x y"}}));
  EXPECT_EQ(store->size(), 1u);
  EXPECT_EQ(store->find("__metadata__"), nullptr);
}

TEST_F(SafetensorsTest, MetadataMustMapStringsToStrings) {
  EXPECT_ERROR(open_error(make_file({}, {{"n", 3}})), ErrorCode::kCorruptFile, "__metadata__", "n");
  EXPECT_ERROR(open_error(make_file({}, json::array({1}))), ErrorCode::kCorruptFile,
               "__metadata__");
}

TEST_F(SafetensorsTest, ScalarAndZeroSizeTensors) {
  const auto path = write(
      "a.safetensors", make_file({{"empty", "F32", {0, 4}, {}},
                                  {"scalar", "BF16", {}, raw_bytes(std::vector<uint16_t>{0x4040})},
                                  {"empty2", "F16", {3, 0}, {}}}));
  auto store = WeightStore::open(path);
  ASSERT_TRUE(store.ok()) << store.error().message;
  EXPECT_EQ(store->names(), (std::vector<std::string>{"empty", "empty2", "scalar"}));
  const TensorView* s = store->find("scalar");
  ASSERT_NE(s, nullptr);
  EXPECT_TRUE(s->shape.empty());
  EXPECT_EQ(s->numel(), 1);
  EXPECT_EQ(to_f32(*s), std::vector<float>{3.0f});
  const TensorView* e = store->find("empty");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->numel(), 0);
  EXPECT_EQ(e->nbytes, 0u);
  EXPECT_EQ(e->shape, (std::vector<int64_t>{0, 4}));
  EXPECT_TRUE(to_f32(*e).empty());
  EXPECT_TRUE(to_f32(*store->find("empty2")).empty());
}

TEST_F(SafetensorsTest, DtypeNamesAndSizes) {
  EXPECT_STREQ(dtype_name(DType::kF32), "f32");
  EXPECT_STREQ(dtype_name(DType::kF16), "f16");
  EXPECT_STREQ(dtype_name(DType::kBF16), "bf16");
  EXPECT_EQ(dtype_size(DType::kF32), 4u);
  EXPECT_EQ(dtype_size(DType::kF16), 2u);
  EXPECT_EQ(dtype_size(DType::kBF16), 2u);
}

TEST_F(SafetensorsTest, MovedStoreKeepsViewsValid) {
  const std::vector<float> v = {4.0f, 5.0f};
  const auto path = write("a.safetensors", make_file({{"w", "F32", {2}, raw_bytes(v)}}));
  auto opened = WeightStore::open(path);
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  const TensorView* before = opened->find("w");
  ASSERT_NE(before, nullptr);
  WeightStore a = std::move(opened).value();
  WeightStore b = std::move(a);
  EXPECT_EQ(a.size(), 0u);  // NOLINT: a moved-from store must stay usable
  EXPECT_EQ(a.find("w"), nullptr);
  EXPECT_EQ(b.find("w"), before);
  EXPECT_EQ(to_f32(*before), v);
  auto other = WeightStore::open(path);
  ASSERT_TRUE(other.ok());
  b = std::move(other).value();
  EXPECT_EQ(to_f32(*b.find("w")), v);
}

TEST_F(SafetensorsTest, FolderWithSingleFile) {
  write("m/model.safetensors", make_file({{"x", "F32", {1}, raw_bytes(std::vector<float>{7})}}));
  auto store = WeightStore::open(dir_ / "m");
  ASSERT_TRUE(store.ok()) << store.error().message;
  EXPECT_EQ(to_f32(*store->find("x")), std::vector<float>{7.0f});
}

// ---- sharded folders ----

json index_of(const std::map<std::string, std::string>& weight_map) {
  return {{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}};
}

TEST_F(SafetensorsTest, ShardedFolderViaIndex) {
  write("m/model-00001-of-00002.safetensors",
        make_file({{"a", "F32", {2}, raw_bytes(std::vector<float>{1, 2})},
                   {"b", "BF16", {1}, raw_bytes(std::vector<uint16_t>{0x4000})}},
                  {{"shard", "1"}}));
  write("m/model-00002-of-00002.safetensors",
        make_file({{"c", "F16", {1}, raw_bytes(std::vector<uint16_t>{0xc400})}}, {{"shard", "2"}}));
  write("m/model.safetensors.index.json", index_of({{"a", "model-00001-of-00002.safetensors"},
                                                    {"b", "model-00001-of-00002.safetensors"},
                                                    {"c", "model-00002-of-00002.safetensors"}})
                                              .dump());
  auto store = WeightStore::open(dir_ / "m");
  ASSERT_TRUE(store.ok()) << store.error().message;
  EXPECT_EQ(store->names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(to_f32(*store->find("a")), (std::vector<float>{1, 2}));
  EXPECT_EQ(to_f32(*store->find("b")), std::vector<float>{2});
  EXPECT_EQ(to_f32(*store->find("c")), std::vector<float>{-4});
  EXPECT_EQ(store->metadata().at("shard"), "1");

  auto via_index = WeightStore::open(dir_ / "m" / "model.safetensors.index.json");
  ASSERT_TRUE(via_index.ok()) << via_index.error().message;
  EXPECT_EQ(via_index->names(), store->names());
}

TEST_F(SafetensorsTest, MissingShardIsNotFound) {
  write("m/s1.safetensors", make_file({{"a", "F32", {1}, raw_bytes(std::vector<float>{1})}}));
  write("m/model.safetensors.index.json",
        index_of({{"a", "s1.safetensors"}, {"b", "s2.safetensors"}}).dump());
  auto r = WeightStore::open(dir_ / "m");
  ASSERT_FALSE(r.ok());
  EXPECT_ERROR(r.error(), ErrorCode::kNotFound, "s2.safetensors");
}

TEST_F(SafetensorsTest, NameMissingFromItsShard) {
  write("m/s1.safetensors", make_file({{"a", "F32", {1}, raw_bytes(std::vector<float>{1})}}));
  write("m/s2.safetensors", make_file({{"c", "F32", {1}, raw_bytes(std::vector<float>{1})}}));
  write(
      "m/model.safetensors.index.json",
      index_of({{"a", "s1.safetensors"}, {"b", "s2.safetensors"}, {"c", "s2.safetensors"}}).dump());
  auto r = WeightStore::open(dir_ / "m");
  ASSERT_FALSE(r.ok());
  EXPECT_ERROR(r.error(), ErrorCode::kCorruptFile, "'b'", "s2.safetensors");
}

TEST_F(SafetensorsTest, NameListedUnderTheWrongShard) {
  write("m/s1.safetensors", make_file({{"a", "F32", {1}, raw_bytes(std::vector<float>{1})},
                                       {"b", "F32", {1}, raw_bytes(std::vector<float>{1})}}));
  write("m/s2.safetensors", make_file({{"c", "F32", {1}, raw_bytes(std::vector<float>{1})}}));
  write(
      "m/model.safetensors.index.json",
      index_of({{"a", "s1.safetensors"}, {"b", "s2.safetensors"}, {"c", "s2.safetensors"}}).dump());
  auto r = WeightStore::open(dir_ / "m");
  ASSERT_FALSE(r.ok());
  EXPECT_ERROR(r.error(), ErrorCode::kCorruptFile, "'b'", "s2.safetensors");
}

TEST_F(SafetensorsTest, DuplicateAcrossShards) {
  write("m/s1.safetensors", make_file({{"a", "F32", {1}, raw_bytes(std::vector<float>{1})}}));
  write("m/s2.safetensors", make_file({{"a", "F32", {1}, raw_bytes(std::vector<float>{2})},
                                       {"b", "F32", {1}, raw_bytes(std::vector<float>{3})}}));
  write("m/model.safetensors.index.json",
        index_of({{"a", "s1.safetensors"}, {"b", "s2.safetensors"}}).dump());
  auto r = WeightStore::open(dir_ / "m");
  ASSERT_FALSE(r.ok());
  EXPECT_ERROR(r.error(), ErrorCode::kCorruptFile, "'a'", "s1.safetensors", "s2.safetensors");
}

TEST_F(SafetensorsTest, BadIndexFiles) {
  write("m/s1.safetensors", make_file({{"a", "F32", {1}, raw_bytes(std::vector<float>{1})}}));
  const auto expect_corrupt = [&](const std::string& index_text, const char* needle) {
    write("m/model.safetensors.index.json", index_text);
    auto r = WeightStore::open(dir_ / "m");
    ASSERT_FALSE(r.ok()) << index_text;
    EXPECT_ERROR(r.error(), ErrorCode::kCorruptFile, "model.safetensors.index.json", needle);
  };
  expect_corrupt("{not json", "JSON");
  expect_corrupt("[]", "object");
  expect_corrupt(R"({"metadata": {}})", "weight_map");
  expect_corrupt(R"({"weight_map": []})", "weight_map");
  expect_corrupt(R"({"weight_map": {}})", "weight_map");
  expect_corrupt(R"({"weight_map": {"a": 1}})", "'a'");
  expect_corrupt(R"({"weight_map": {"a": "../s1.safetensors"}})", "../s1.safetensors");
  expect_corrupt(R"({"weight_map": {"a": "/etc/passwd"}})", "/etc/passwd");
  expect_corrupt(R"({"weight_map": {"a": "s1.safetensors"}, "weight_map": {}})", "twice");
}

TEST_F(SafetensorsTest, FolderWithoutWeights) {
  fs::create_directories(dir_ / "empty");
  write("empty/config.json", "{}");
  auto r = WeightStore::open(dir_ / "empty");
  ASSERT_FALSE(r.ok());
  const std::string folder = (dir_ / "empty").string();
  EXPECT_ERROR(r.error(), ErrorCode::kNotFound, folder.c_str(), "model.safetensors",
               "model.safetensors.index.json");
}

TEST_F(SafetensorsTest, MissingPathIsNotFound) {
  auto r = WeightStore::open(dir_ / "nope.safetensors");
  ASSERT_FALSE(r.ok());
  EXPECT_ERROR(r.error(), ErrorCode::kNotFound, "nope.safetensors");
}

// ---- files that lie ----

const std::string kValidData(16, '\0');
std::string one_tensor_header(const std::string& dtype, const std::string& shape,
                              const std::string& offsets) {
  return R"({"w":{"dtype":")" + dtype + R"(","shape":)" + shape + R"(,"data_offsets":)" + offsets +
         "}}";
}

TEST_F(SafetensorsTest, EmptyAndTinyFiles) {
  EXPECT_ERROR(open_error(""), ErrorCode::kCorruptFile, "t.safetensors", "empty");
  EXPECT_ERROR(open_error("abc"), ErrorCode::kCorruptFile, "t.safetensors");
  EXPECT_ERROR(open_error(u64_le(0)), ErrorCode::kCorruptFile, "header length 0");
  EXPECT_ERROR(open_error(raw_file("{", "")), ErrorCode::kCorruptFile, "header length 1");
}

TEST_F(SafetensorsTest, EmptyHeaderObjectIsAValidEmptyFile) {
  auto store = WeightStore::open(write("a.safetensors", raw_file("{}", "")));
  ASSERT_TRUE(store.ok()) << store.error().message;
  EXPECT_EQ(store->size(), 0u);
}

TEST_F(SafetensorsTest, HeaderLengthLargerThanFile) {
  std::string f = make_file({{"w", "F32", {4}, raw_bytes(std::vector<float>{1, 2, 3, 4})}});
  f.replace(0, 8, u64_le(f.size()));  // one past what the file can hold
  EXPECT_ERROR(open_error(f), ErrorCode::kCorruptFile, "t.safetensors", "header length");
  f.replace(0, 8, u64_le(~uint64_t{0}));  // must not wrap when added to 8
  EXPECT_ERROR(open_error(f), ErrorCode::kCorruptFile, "header length");
  f.replace(0, 8, u64_le(uint64_t{200} << 20));  // past the sanity bound
  EXPECT_ERROR(open_error(f), ErrorCode::kCorruptFile, "header length");
}

TEST_F(SafetensorsTest, TruncatedFile) {
  const std::string f = make_file({{"w", "F32", {4}, raw_bytes(std::vector<float>{1, 2, 3, 4})}});
  EXPECT_ERROR(open_error(f.substr(0, f.size() - 1)), ErrorCode::kCorruptFile, "t.safetensors",
               "'w'", "data_offsets");
  EXPECT_ERROR(open_error(f.substr(0, 20)), ErrorCode::kCorruptFile, "t.safetensors",
               "header length");
}

TEST_F(SafetensorsTest, HeaderThatIsNotAJsonObject) {
  EXPECT_ERROR(open_error(raw_file("hello world", "")), ErrorCode::kCorruptFile, "t.safetensors",
               "JSON");
  EXPECT_ERROR(open_error(raw_file("[1, 2, 3]", "")), ErrorCode::kCorruptFile, "'{'");
  EXPECT_ERROR(open_error(raw_file(" {}", "")), ErrorCode::kCorruptFile, "'{'");
  EXPECT_ERROR(open_error(raw_file("{\"w\": 1", "")), ErrorCode::kCorruptFile, "JSON");
  EXPECT_ERROR(open_error(raw_file(std::string("{}\0\0", 4), "")), ErrorCode::kCorruptFile, "JSON");
  EXPECT_ERROR(open_error(raw_file("\"\xff\xfe\"", "")), ErrorCode::kCorruptFile, "JSON");
  EXPECT_ERROR(open_error(raw_file(R"({"w": 3})", "")), ErrorCode::kCorruptFile, "'w'");
}

TEST_F(SafetensorsTest, DuplicateKeyInHeader) {
  const std::string h = R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                        R"("w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  EXPECT_ERROR(open_error(raw_file(h, std::string(8, '\0'))), ErrorCode::kCorruptFile, "'w'",
               "twice");
}

TEST_F(SafetensorsTest, BadShapes) {
  EXPECT_ERROR(open_error(raw_file(one_tensor_header("F32", "[-1]", "[0,4]"), kValidData)),
               ErrorCode::kCorruptFile, "'w'", "shape");
  EXPECT_ERROR(open_error(raw_file(one_tensor_header("F32", "[1.5]", "[0,4]"), kValidData)),
               ErrorCode::kCorruptFile, "'w'", "shape");
  EXPECT_ERROR(open_error(raw_file(one_tensor_header("F32", "4", "[0,16]"), kValidData)),
               ErrorCode::kCorruptFile, "'w'", "shape");
  EXPECT_ERROR(open_error(raw_file(one_tensor_header("F32", "[4294967296,4294967296]", "[0,0]"),
                                   kValidData)),
               ErrorCode::kCorruptFile, "'w'", "overflows");
  EXPECT_ERROR(open_error(raw_file(one_tensor_header("F32", "[2305843009213693952,4]", "[0,0]"),
                                   kValidData)),
               ErrorCode::kCorruptFile, "'w'", "overflows");
  EXPECT_ERROR(open_error(raw_file(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", kValidData)),
               ErrorCode::kCorruptFile, "'w'", "shape");
}

TEST_F(SafetensorsTest, LyingDataOffsets) {
  // Out of range: 16 bytes of data, the tensor claims bytes 16..32.
  EXPECT_ERROR(open_error(raw_file(one_tensor_header("F32", "[4]", "[16,32]"), kValidData)),
               ErrorCode::kCorruptFile, "t.safetensors", "'w'", "past the end");
  // Span does not match the shape.
  EXPECT_ERROR(open_error(raw_file(one_tensor_header("F32", "[4]", "[0,12]"), kValidData)),
               ErrorCode::kCorruptFile, "'w'", "needs 16");
  // Reversed.
  EXPECT_ERROR(open_error(raw_file(one_tensor_header("F32", "[0]", "[8,4]"), kValidData)),
               ErrorCode::kCorruptFile, "'w'", "begin > end");
  // Wrong arity, negative, float, huge.
  for (const char* off : {"[0]", "[0,4,8]", "[-4,0]", "[0.0,16.0]", "\"0,16\"",
                          "[18446744073709551615,18446744073709551615]"}) {
    EXPECT_ERROR(open_error(raw_file(one_tensor_header("F32", "[4]", off), kValidData)),
                 ErrorCode::kCorruptFile, "'w'", "data_offsets");
  }
  // Overlap: b starts inside a.
  const std::string h = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
  EXPECT_ERROR(open_error(raw_file(h, kValidData)), ErrorCode::kCorruptFile, "t.safetensors", "'b'",
               "overlaps", "'a'");
  // Two tensors on the same bytes.
  const std::string same = R"({"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},)"
                           R"("b":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}})";
  EXPECT_ERROR(open_error(raw_file(same, kValidData)), ErrorCode::kCorruptFile, "overlaps");
}

TEST_F(SafetensorsTest, AdjacentAndGappedTensorsAreFine) {
  const std::string h = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                        R"("z":{"dtype":"F32","shape":[0],"data_offsets":[2,2]},)"
                        R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})";
  auto store = WeightStore::open(write("a.safetensors", raw_file(h, kValidData)));
  ASSERT_TRUE(store.ok()) << store.error().message;
  EXPECT_EQ(store->size(), 3u);
}

TEST_F(SafetensorsTest, UnknownDtypeIsCorrupt) {
  for (const char* dt : {"F17", "f32", "", "FLOAT"}) {
    EXPECT_ERROR(open_error(raw_file(one_tensor_header(dt, "[4]", "[0,16]"), kValidData)),
                 ErrorCode::kCorruptFile, "t.safetensors", "'w'", "dtype");
  }
  EXPECT_ERROR(
      open_error(raw_file(R"({"w":{"dtype":3,"shape":[4],"data_offsets":[0,16]}})", kValidData)),
      ErrorCode::kCorruptFile, "'w'", "dtype");
}

TEST_F(SafetensorsTest, KnownButUnsupportedDtypes) {
  for (const char* dt : {"F64", "I64", "BOOL", "U8", "I32", "F8_E4M3"}) {
    EXPECT_ERROR(open_error(raw_file(one_tensor_header(dt, "[1]", "[0,1]"), kValidData)),
                 ErrorCode::kUnsupported, "t.safetensors", "'w'", dt);
  }
}

// ---- robustness ----

// Damages a valid file at every position in several ways; open() must return, never crash, and
// whatever it accepts must be self-consistent. Meant to be run under ASan/UBSan as well.
TEST_F(SafetensorsTest, DamagedFilesNeverCrash) {
  const std::string good =
      make_file({{"a.weight", "F32", {2, 3}, raw_bytes(std::vector<float>{1, 2, 3, 4, 5, 6})},
                 {"b", "F16", {3}, raw_bytes(std::vector<uint16_t>{0x3c00, 0x7c00, 0x0001})},
                 {"c", "BF16", {}, raw_bytes(std::vector<uint16_t>{0x3f80})},
                 {"d", "F32", {0}, {}}},
                {{"format", "pt"}});
  const fs::path path = dir_ / "fuzz.safetensors";
  int opened = 0, rejected = 0;
  const auto check = [&](const std::string& content) {
    {
      std::ofstream out(path, std::ios::binary | std::ios::trunc);
      out.write(content.data(), static_cast<std::streamsize>(content.size()));
    }
    auto r = WeightStore::open(path);
    if (!r.ok()) {
      ++rejected;
      EXPECT_FALSE(r.error().message.empty());
      return;
    }
    ++opened;
    size_t total = 0;
    for (const std::string& name : r->names()) {
      const TensorView* t = r->find(name);
      ASSERT_NE(t, nullptr);
      ASSERT_GE(t->numel(), 0);
      ASSERT_EQ(t->nbytes, static_cast<size_t>(t->numel()) * dtype_size(t->dtype)) << name;
      total += t->nbytes;
      const std::vector<float> f = to_f32(*t);  // touches every byte of the view
      ASSERT_EQ(f.size(), static_cast<size_t>(t->numel()));
    }
    ASSERT_LE(total, content.size());
  };
  static constexpr uint8_t kFlips[] = {0x01, 0x80, 0xff};
  static constexpr char kSubs[] = {'"', '{', '}', '[', ']', ',', ':', '0', '9', '-', ' ', '\0'};
  for (size_t pos = 0; pos < good.size(); ++pos) {
    for (uint8_t flip : kFlips) {
      std::string bad = good;
      bad[pos] = static_cast<char>(static_cast<uint8_t>(bad[pos]) ^ flip);
      check(bad);
    }
    for (char sub : kSubs) {
      std::string bad = good;
      bad[pos] = sub;
      check(bad);
    }
    check(good.substr(0, pos));  // every truncation
  }
  check(good);
  // Sanity: the loop saw both outcomes, so it is really exercising the parser.
  EXPECT_GT(opened, 0);
  EXPECT_GT(rejected, 0);
  std::printf("[ fuzz     ] %d damaged variants opened, %d rejected\n", opened, rejected);
}

TEST_F(SafetensorsTest, DeeplyNestedHeaderIsRejectedWithoutOverflowingTheStack) {
  const size_t depth = 200000;
  const std::string h = "{\"w\":" + std::string(depth, '[') + std::string(depth, ']') + "}";
  EXPECT_ERROR(open_error(raw_file(h, "")), ErrorCode::kCorruptFile, "'w'");
  const std::string unclosed = "{\"w\":" + std::string(depth, '[');
  EXPECT_ERROR(open_error(raw_file(unclosed, "")), ErrorCode::kCorruptFile, "JSON");
}

// Prints conversion throughput; informational only, never asserted (machines differ).
TEST_F(SafetensorsTest, ConversionThroughput) {
  const size_t n = size_t{32} << 20;  // 64 MiB of 16-bit input, 128 MiB of f32 output
  std::vector<uint16_t> src(n);
  for (size_t i = 0; i < n; ++i) src[i] = static_cast<uint16_t>(i * 40503u);
  std::vector<float> out(n);
  TensorView t;
  t.shape = {static_cast<int64_t>(n)};
  t.data = reinterpret_cast<const std::byte*>(src.data());
  t.nbytes = n * 2;
  for (DType dt : {DType::kBF16, DType::kF16}) {
    t.dtype = dt;
    convert_to_f32(t, out.data());  // warm up: page in the output
    double best = 1e9;
    for (int rep = 0; rep < 5; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      convert_to_f32(t, out.data());
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best = std::min(best, s);
    }
    std::printf(
        "[ perf     ] %s->f32: %.2f GB/s read, %.2f GB/s written (%.1f ms for %zu M elems)\n",
        dtype_name(dt), n * 2 / best / 1e9, n * 4 / best / 1e9, best * 1e3, n >> 20);
    EXPECT_EQ(out[1], to_f32(TensorView{"x", dt, {1}, t.data + 2, 2})[0]);
  }
}

}  // namespace
}  // namespace mlmamba
