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
  const mlmamba_backend* table = nullptr;
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
  const mlmamba_backend_header* header = entry ? entry() : nullptr;
  if (auto v = check_module_version(header); !v.ok()) {
    r.detail = v.error().message;
    return r;
  }
  // Same version: the header is the first member of this version's table.
  const auto* table = reinterpret_cast<const mlmamba_backend*>(header);
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
  r.table = table;
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

Result<void> check_module_version(const mlmamba_backend_header* header) {
  if (!header) {
    return make_error(ErrorCode::kBackend,
                      "the CUDA backend module has no " MLMAMBA_BACKEND_ENTRY " table");
  }
  if (header->api_version != MLMAMBA_BACKEND_API_VERSION) {
    return make_error(ErrorCode::kBackend,
                      "the CUDA backend module is of another version than the engine (module API " +
                          std::to_string(header->api_version) + ", engine API " +
                          std::to_string(MLMAMBA_BACKEND_API_VERSION) + ")");
  }
  return {};
}

const mlmamba_backend* cuda_backend(std::string* why) {
  const CudaProbe& cuda = probe_cuda();
  if (why) *why = cuda.usable ? "" : cuda.detail;
  return cuda.usable ? cuda.table : nullptr;
}

Result<DeviceChoice> choose_device(Device requested) {
  if (requested == Device::kCpu) return DeviceChoice{"cpu", "", ""};
  const CudaProbe& cuda = probe_cuda();
  if (cuda.usable) return DeviceChoice{cuda.device, "", cuda.detail};
  if (requested == Device::kCuda) {
    return make_error(ErrorCode::kBackend, "device cuda is not available: " + cuda.detail);
  }
  return DeviceChoice{"cpu", cuda.detail, ""};
}

}  // namespace mlmamba
