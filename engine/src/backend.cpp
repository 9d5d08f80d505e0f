#include "backend.h"

namespace mlmamba {

Result<DeviceChoice> choose_device(Device requested) {
  // No GPU backend is part of this build yet: say so rather than pretend.
  const std::string why = "this build has no CUDA backend; the model runs on the CPU";
  switch (requested) {
    case Device::kCpu:
      return DeviceChoice{"cpu", ""};
    case Device::kAuto:
      return DeviceChoice{"cpu", why};
    case Device::kCuda:
      return make_error(ErrorCode::kBackend, "device cuda is not available: " + why);
  }
  return make_error(ErrorCode::kInvalidArgument, "unknown device");
}

}  // namespace mlmamba
