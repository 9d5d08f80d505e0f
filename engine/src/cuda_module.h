// What the engine's two users of the CUDA module (cuda_lm, cuda_vision) share: turning the
// module's error codes into the engine's errors, and handing it weight tensors from the store.
#pragma once

#include <string>

#include "backend_module.h"
#include "mlmamba/result.h"
#include "safetensors.h"

namespace mlmamba {

// The engine error for a module call that returned `code` with `message`.
Error module_error(int code, const char* message);

// Calls a module function whose last two arguments are the error buffer and its length.
template <class F, class... Args>
Result<void> module_call(F fn, Args... args) {
  char err[1024] = {0};
  const int code = fn(args..., err, sizeof err);
  if (code != MLMAMBA_OK) return module_error(code, err);
  return {};
}

// The store's tensor `stored_name`, described for the module under `module_name` (which must
// outlive the module call that reads it).
Result<mlmamba_tensor> module_tensor(const WeightStore& store, const std::string& stored_name,
                                     const char* module_name);

}  // namespace mlmamba
