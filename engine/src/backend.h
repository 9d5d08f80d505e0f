// Where a model runs. The CPU is always there; any other device is reached through a backend module
// loaded at run time, so one program runs on machines with and without an NVIDIA driver.
#pragma once

#include <string>

#include "mlmamba/mlmamba.h"

namespace mlmamba {

struct DeviceChoice {
  std::string device;           // "cpu", "cuda:0", ...
  std::string fallback_reason;  // set when `auto` could not use the GPU
};

// kCpu -> CPU; kCuda -> the GPU or an error saying why not; kAuto -> the GPU if usable, else the
// CPU with the reason.
Result<DeviceChoice> choose_device(Device requested);

}  // namespace mlmamba
