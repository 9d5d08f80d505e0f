// safetensors weights over mmap. The header is validated before anything in it is trusted.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "mlmamba/result.h"

namespace mlmamba {

enum class DType { kF32, kF16, kBF16 };
const char* dtype_name(DType dtype);
size_t dtype_size(DType dtype);

struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const std::byte* data = nullptr;  // inside the mapping; not necessarily aligned
  size_t nbytes = 0;
  int64_t numel() const;
};

// One or more mapped safetensors files seen as one name -> tensor table.
class WeightStore {
 public:
  // `path` is a .safetensors file, or a folder holding model.safetensors or
  // model.safetensors.index.json (+ its shards).
  static Result<WeightStore> open(const std::filesystem::path& path);

  WeightStore(WeightStore&&) noexcept;
  WeightStore& operator=(WeightStore&&) noexcept;
  ~WeightStore();

  const TensorView* find(std::string_view name) const;  // nullptr if absent
  std::vector<std::string> names() const;               // sorted
  size_t size() const;
  const std::map<std::string, std::string>& metadata() const;  // "__metadata__" of the first file

 private:
  struct Impl;
  explicit WeightStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Converts any supported dtype to f32 (bf16/f16 widened exactly).
void convert_to_f32(const TensorView& t, float* out);
std::vector<float> to_f32(const TensorView& t);

}  // namespace mlmamba
