#include <algorithm>
#include <cstring>
#include <type_traits>

#include "weights.cuh"

namespace mlmamba::cuda {
namespace {

template <class Src>
__device__ __forceinline__ float widen(Src v);
template <>
__device__ __forceinline__ float widen<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ float widen<__half>(__half v) {
  return __half2float(v);
}
template <>
__device__ __forceinline__ float widen<bf16>(bf16 v) {
  return __bfloat162float(v);
}

template <class Src, class Dst>
__global__ void convert_kernel(const Src* src, Dst* dst, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  if constexpr (std::is_same_v<Dst, bf16>) {
    if constexpr (std::is_same_v<Src, bf16>) {
      dst[i] = src[i];
    } else {
      dst[i] = __float2bfloat16_rn(widen(src[i]));  // round to nearest even, as torch does
    }
  } else {
    dst[i] = widen(src[i]);
  }
}

template <class Dst>
Status launch_convert(int dtype, const void* src, Dst* dst, int64_t n, cudaStream_t stream) {
  const int blocks = ceil_div(n, 256);
  switch (dtype) {
    case MLMAMBA_DTYPE_F32:
      convert_kernel<<<blocks, 256, 0, stream>>>(static_cast<const float*>(src), dst, n);
      break;
    case MLMAMBA_DTYPE_F16:
      convert_kernel<<<blocks, 256, 0, stream>>>(static_cast<const __half*>(src), dst, n);
      break;
    default:
      convert_kernel<<<blocks, 256, 0, stream>>>(static_cast<const bf16*>(src), dst, n);
      break;
  }
  MLM_LAUNCH_CHECK("convert_kernel");
  return {};
}

}  // namespace

size_t dtype_bytes(int dtype) {
  return dtype == MLMAMBA_DTYPE_F32 ? 4 : 2;
}

int64_t numel(const mlmamba_tensor& t) {
  int64_t n = 1;
  for (int i = 0; i < t.ndim; ++i) n *= t.shape[i];
  return n;
}

WeightUploader::~WeightUploader() {
  for (int i = 0; i < kSlots; ++i) {
    if (done_[i]) cudaEventDestroy(done_[i]);
    if (pinned_[i]) cudaFreeHost(pinned_[i]);
    if (staging_[i]) cudaFree(staging_[i]);
  }
}

Status WeightUploader::init(cudaStream_t stream) {
  stream_ = stream;
  for (int i = 0; i < kSlots; ++i) {
    Status s = cuda_status(cudaHostAlloc(&pinned_[i], kSlotBytes, cudaHostAllocDefault),
                           "pinned staging memory for the weights");
    if (!s.ok()) return s;
    s = cuda_status(cudaMalloc(&staging_[i], kSlotBytes), "device staging memory for the weights");
    if (!s.ok()) return s;
    MLM_CUDA_TRY(cudaEventCreateWithFlags(&done_[i], cudaEventDisableTiming));
  }
  return {};
}

Status WeightUploader::upload(const mlmamba_tensor& t, void* dst, bool dst_bf16) {
  const size_t elem = dtype_bytes(t.dtype);
  const int64_t total = numel(t);
  const int64_t per_slot = static_cast<int64_t>(kSlotBytes / elem);
  const char* src = static_cast<const char*>(t.data);
  for (int64_t done = 0; done < total; done += per_slot) {
    const int64_t n = std::min(per_slot, total - done);
    const int slot = next_;
    next_ = (next_ + 1) % kSlots;
    // The slot's previous piece must have left the pinned buffer before it is overwritten.
    MLM_CUDA_TRY(cudaEventSynchronize(done_[slot]));
    std::memcpy(pinned_[slot], src + done * elem, static_cast<size_t>(n) * elem);
    MLM_CUDA_TRY(cudaMemcpyAsync(staging_[slot], pinned_[slot], static_cast<size_t>(n) * elem,
                                 cudaMemcpyHostToDevice, stream_));
    if (dst_bf16) {
      MLM_STATUS_TRY(
          launch_convert(t.dtype, staging_[slot], static_cast<bf16*>(dst) + done, n, stream_));
    } else {
      MLM_STATUS_TRY(
          launch_convert(t.dtype, staging_[slot], static_cast<float*>(dst) + done, n, stream_));
    }
    MLM_CUDA_TRY(cudaEventRecord(done_[slot], stream_));
  }
  return {};
}

Status WeightUploader::to_bf16(const mlmamba_tensor& t, bf16* dst) {
  return upload(t, dst, true);
}

Status WeightUploader::to_f32(const mlmamba_tensor& t, float* dst) {
  return upload(t, dst, false);
}

Status WeightUploader::finish() {
  MLM_CUDA_TRY(cudaStreamSynchronize(stream_));
  return {};
}

Status upload_tensor_table(const mlmamba_tensor* tensors, int n_tensors,
                           const std::map<std::string, ExpectedTensor>& want, cudaStream_t stream,
                           const std::string& owner, const std::string& may_skip) {
  WeightUploader up;
  MLM_STATUS_TRY(up.init(stream));
  std::map<std::string, bool> seen;
  for (int i = 0; i < n_tensors; ++i) {
    const mlmamba_tensor& t = tensors[i];
    const std::string name = t.name ? t.name : "";
    auto it = want.find(name);
    if (it == want.end()) {
      if (!may_skip.empty() && name == may_skip) continue;
      return fail(MLMAMBA_ERR_INVALID, "tensor " + name + " is not part of " + owner);
    }
    if (seen[name]) return fail(MLMAMBA_ERR_INVALID, "tensor " + name + " is given twice");
    seen[name] = true;
    const ExpectedTensor& e = it->second;
    bool shape_ok = t.ndim == static_cast<int>(e.shape.size());
    for (int k = 0; shape_ok && k < t.ndim; ++k) shape_ok = t.shape[k] == e.shape[k];
    if (!shape_ok) {
      std::string expect;
      for (size_t k = 0; k < e.shape.size(); ++k)
        expect += (k ? ", " : "") + std::to_string(e.shape[k]);
      return fail(MLMAMBA_ERR_INVALID,
                  "tensor " + name + " has the wrong shape (expected [" + expect + "])");
    }
    if (t.dtype != MLMAMBA_DTYPE_F32 && t.dtype != MLMAMBA_DTYPE_F16 &&
        t.dtype != MLMAMBA_DTYPE_BF16)
      return fail(MLMAMBA_ERR_INVALID, "tensor " + name + " has an unknown dtype");
    if (!t.data) return fail(MLMAMBA_ERR_INVALID, "tensor " + name + " has no data");
    if (e.to_bf16) {
      MLM_STATUS_TRY(up.to_bf16(t, static_cast<bf16*>(e.dst)));
    } else {
      MLM_STATUS_TRY(up.to_f32(t, static_cast<float*>(e.dst)));
    }
  }
  for (const auto& [name, e] : want) {
    if (!seen[name])
      return fail(MLMAMBA_ERR_INVALID, "tensor " + name + " is missing from the description");
  }
  return up.finish();
}

}  // namespace mlmamba::cuda
