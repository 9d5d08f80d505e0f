#include "cuda_module.h"

namespace mlmamba {
namespace {

int dtype_code(DType d) {
  switch (d) {
    case DType::kF32:
      return MLMAMBA_DTYPE_F32;
    case DType::kF16:
      return MLMAMBA_DTYPE_F16;
    case DType::kBF16:
      return MLMAMBA_DTYPE_BF16;
  }
  return -1;
}

}  // namespace

Error module_error(int code, const char* message) {
  ErrorCode c = ErrorCode::kBackend;
  if (code == MLMAMBA_ERR_INVALID) c = ErrorCode::kInvalidArgument;
  if (code == MLMAMBA_ERR_OUT_OF_MEMORY) c = ErrorCode::kOutOfMemory;
  if (code == MLMAMBA_ERR_UNSUPPORTED) c = ErrorCode::kUnsupported;
  return make_error(c, std::string("CUDA backend: ") + message);
}

Result<mlmamba_tensor> module_tensor(const WeightStore& store, const std::string& stored_name,
                                     const char* module_name) {
  const TensorView* t = store.find(stored_name);
  if (!t)
    return make_error(ErrorCode::kNotFound,
                      "tensor " + stored_name + " is missing from the weights");
  if (t->shape.size() > 4)
    return make_error(ErrorCode::kCorruptFile,
                      "tensor " + stored_name + " has too many dimensions");
  mlmamba_tensor mt{};
  mt.name = module_name;
  mt.dtype = dtype_code(t->dtype);
  mt.ndim = static_cast<int>(t->shape.size());
  for (size_t k = 0; k < t->shape.size(); ++k) mt.shape[k] = t->shape[k];
  mt.data = t->data;
  return mt;
}

}  // namespace mlmamba
