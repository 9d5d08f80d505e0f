// Where a model runs. The CPU is always there; any other device is reached through a backend module
// loaded at run time, so one program runs on machines with and without an NVIDIA driver.
#pragma once

#include <string>

#include "backend_module.h"
#include "mlmamba/mlmamba.h"

namespace mlmamba {

struct DeviceChoice {
  std::string device;           // "cpu", "cuda:0", ...
  std::string fallback_reason;  // set when `auto` could not use the GPU
  std::string name;             // the GPU's name ("NVIDIA H200"); empty for the CPU
};

// kCpu -> CPU; kCuda -> the GPU or an error saying why not; kAuto -> the GPU if usable, else the
// CPU with the reason. A GPU chosen here can still be refused by the model (out of memory at
// load): Model::load then falls back with that reason under kAuto.
Result<DeviceChoice> choose_device(Device requested);

// The loaded CUDA module's table when it loaded, is of this engine's API version and found a
// device; otherwise null and `why` (if given) says which of these failed.
const mlmamba_backend* cuda_backend(std::string* why = nullptr);

// The check applied to a module's table before anything else in it is used (exposed for tests).
Result<void> check_module_version(const mlmamba_backend_header* header);

}  // namespace mlmamba
