// Device discovery for the CUDA backend module.
#pragma once

#include <cstddef>

#include "backend_module.h"

namespace mlmamba::cuda {

int probe(mlmamba_device_info* out, int max, char* err, size_t err_len);

}  // namespace mlmamba::cuda
