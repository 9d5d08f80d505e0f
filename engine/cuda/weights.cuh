// Weights from host memory (a mapped checkpoint, any alignment) to the device: copied through two
// pinned staging buffers so the next piece is copied on the host while the last one crosses the
// bus, then converted on the device (f32 / f16 / bf16 to the resident bf16 or fp32).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "common.cuh"

namespace mlmamba::cuda {

class WeightUploader {
 public:
  WeightUploader() = default;
  WeightUploader(const WeightUploader&) = delete;
  WeightUploader& operator=(const WeightUploader&) = delete;
  ~WeightUploader();

  Status init(cudaStream_t stream);
  Status to_bf16(const mlmamba_tensor& t, bf16* dst);
  Status to_f32(const mlmamba_tensor& t, float* dst);
  // Waits for every upload; the host tensors may be released afterwards.
  Status finish();

 private:
  Status upload(const mlmamba_tensor& t, void* dst, bool dst_bf16);

  static constexpr int kSlots = 2;
  static constexpr size_t kSlotBytes = size_t{32} << 20;
  cudaStream_t stream_ = nullptr;
  void* pinned_[kSlots] = {};
  void* staging_[kSlots] = {};
  cudaEvent_t done_[kSlots] = {};
  int next_ = 0;
};

// Where one named tensor of a description goes: its required shape, and whether it is kept in
// bf16 (matrices) or fp32 (vectors, convolutions, embeddings that are added).
struct ExpectedTensor {
  std::vector<int64_t> shape;
  bool to_bf16;
  void* dst;
};

// Uploads a description's tensor table: every name in `want` must appear exactly once, with its
// shape, a known dtype and data; a name not in `want` is refused unless it is `may_skip` (a tied
// head given anyway). `owner` names the model part in the messages.
Status upload_tensor_table(const mlmamba_tensor* tensors, int n_tensors,
                           const std::map<std::string, ExpectedTensor>& want, cudaStream_t stream,
                           const std::string& owner, const std::string& may_skip = "");

size_t dtype_bytes(int dtype);
int64_t numel(const mlmamba_tensor& t);

}  // namespace mlmamba::cuda
