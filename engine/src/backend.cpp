#include "backend.h"

#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <vector>

#include "backend_module.h"

namespace mlmamba {
namespace {

namespace fs = std::filesystem;

struct CudaProbe {
  bool usable = false;
  std::string device;  // "cuda:0"
  std::string detail;  // device name, or why there is none
};

// Where the module may sit relative to the program (build tree and installed layouts), then the
// dynamic loader's own search path.
std::vector<std::string> module_candidates() {
  std::vector<std::string> c;
  if (const char* env = std::getenv("MLMAMBA_CUDA_MODULE"); env && *env) c.emplace_back(env);
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&module_candidates), &info) && info.dli_fname) {
    std::error_code ec;
    const fs::path self = fs::canonical(fs::path(info.dli_fname), ec);
    if (!ec) {
      const fs::path dir = self.parent_path();
      for (const fs::path& p :
           {dir / "libmlmamba-cuda.so", dir / ".." / "lib" / "libmlmamba-cuda.so",
            dir / ".." / "lib" / "mlmamba" / "libmlmamba-cuda.so"}) {
        if (fs::exists(p, ec)) c.push_back(p.lexically_normal().string());
      }
    }
  }
  c.emplace_back("libmlmamba-cuda.so");
  return c;
}

CudaProbe probe_cuda_once() {
  CudaProbe r;
  std::string last_error;
  void* handle = nullptr;
  for (const auto& path : module_candidates()) {
    handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle) break;
    last_error = dlerror();
  }
  if (!handle) {
    r.detail = "the CUDA backend module could not be loaded (" + last_error + ")";
    return r;
  }
  auto entry = reinterpret_cast<mlmamba_backend_entry_fn>(dlsym(handle, MLMAMBA_BACKEND_ENTRY));
  const mlmamba_backend_v1* table = entry ? entry() : nullptr;
  if (!table || table->api_version != MLMAMBA_BACKEND_API_VERSION) {
    r.detail = "the CUDA backend module is of another version than the engine";
    return r;
  }
  mlmamba_device_info devices[16]{};
  char err[512] = {0};
  const int n = table->probe(devices, 16, err, sizeof err);
  if (n < 0) {
    r.detail = err;
    return r;
  }
  if (n == 0) {
    r.detail = "no CUDA device found";
    return r;
  }
  r.usable = true;
  r.device = "cuda:0";
  r.detail = devices[0].name;
  // The module stays loaded for the life of the process: the runtime it initialised must not be
  // unloaded under later calls.
  return r;
}

const CudaProbe& probe_cuda() {
  static std::once_flag once;
  static CudaProbe probe;
  std::call_once(once, [] { probe = probe_cuda_once(); });
  return probe;
}

}  // namespace

Result<DeviceChoice> choose_device(Device requested) {
  if (requested == Device::kCpu) return DeviceChoice{"cpu", ""};
  const CudaProbe& cuda = probe_cuda();
  std::string why = cuda.detail;
  if (cuda.usable) {
    // The module finds devices, but model execution on them is not part of this version.
    why = "found " + cuda.detail + ", but this version runs models on the CPU only";
  }
  if (requested == Device::kCuda) {
    return make_error(ErrorCode::kBackend, "device cuda is not available: " + why);
  }
  return DeviceChoice{"cpu", why};
}

}  // namespace mlmamba
