// Device choice: the CPU always, the CUDA module when built, and a reason whenever the GPU is not
// used.
#include "backend.h"

#include <gtest/gtest.h>

#include <string>

namespace mlmamba {
namespace {

TEST(Backend, CpuIsAlwaysThereWithoutAReason) {
  auto c = choose_device(Device::kCpu);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->device, "cpu");
  EXPECT_TRUE(c->fallback_reason.empty());
}

TEST(Backend, AutoNamesTheReasonWhenItFallsBack) {
  auto c = choose_device(Device::kAuto);
  ASSERT_TRUE(c.ok());
  if (c->device == "cpu") {
    EXPECT_FALSE(c->fallback_reason.empty());
  }
}

TEST(Backend, AModuleOfAnotherVersionIsRefusedWithBothVersions) {
  const mlmamba_backend_header old{1, "cuda"};
  auto r = check_module_version(&old);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kBackend);
  EXPECT_NE(r.error().message.find("module API 1, engine API " +
                                   std::to_string(MLMAMBA_BACKEND_API_VERSION)),
            std::string::npos)
      << r.error().message;
  EXPECT_FALSE(check_module_version(nullptr).ok());
  const mlmamba_backend_header same{MLMAMBA_BACKEND_API_VERSION, "cuda"};
  EXPECT_TRUE(check_module_version(&same).ok());
}

TEST(Backend, NoModuleTableWithoutAUsableDevice) {
  std::string why;
  const mlmamba_backend* m = cuda_backend(&why);
  if (m) {
    EXPECT_EQ(m->header.api_version, MLMAMBA_BACKEND_API_VERSION);
  } else {
    EXPECT_FALSE(why.empty());
  }
}

TEST(Backend, TheBuiltCudaModuleLoads) {
#ifdef MLMAMBA_WITH_CUDA
  auto c = choose_device(Device::kAuto);
  ASSERT_TRUE(c.ok());
  // Loaded and asked: the reason is about devices, never about finding the module.
  EXPECT_EQ(c->fallback_reason.find("could not be loaded"), std::string::npos)
      << c->fallback_reason;
  EXPECT_EQ(c->fallback_reason.find("another version"), std::string::npos) << c->fallback_reason;
#else
  GTEST_SKIP() << "built without the CUDA backend";
#endif
}

TEST(CudaDevice, IsChosenWhenTheModuleFindsOne) {
  auto c = choose_device(Device::kAuto);
  ASSERT_TRUE(c.ok());
  if (c->device == "cpu") GTEST_SKIP() << "skipped: no CUDA device (" << c->fallback_reason << ")";
  EXPECT_EQ(c->device, "cuda:0");
  EXPECT_TRUE(c->fallback_reason.empty()) << c->fallback_reason;
  EXPECT_NE(c->name.find("NVIDIA"), std::string::npos) << c->name;
  auto explicit_cuda = choose_device(Device::kCuda);
  ASSERT_TRUE(explicit_cuda.ok()) << explicit_cuda.error().message;
  EXPECT_EQ(explicit_cuda->device, "cuda:0");
}

}  // namespace
}  // namespace mlmamba
