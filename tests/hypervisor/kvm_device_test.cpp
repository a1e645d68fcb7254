#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>

#include "base/error.h"
#include "hypervisor/kvm_device.h"

namespace sptelab::hypervisor {
namespace {

using ::testing::HasSubstr;

ExitStatus status_of(const std::string& path, std::string* message) {
  try {
    KvmDevice device(path);
    return ExitStatus::kOk;
  } catch (const Error& error) {
    *message = error.what();
    return error.status();
  }
}

TEST(KvmDeviceTest, MissingDeviceIsAnEnvironmentErrorThatSaysWhatToDo) {
  std::string message;
  EXPECT_EQ(status_of("/nonexistent/kvm", &message), ExitStatus::kEnvironment);
  EXPECT_THAT(message, HasSubstr("cannot open /nonexistent/kvm"));
  EXPECT_THAT(message, HasSubstr("load the kvm module"));
}

TEST(KvmDeviceTest, ANonKvmDeviceIsAnEnvironmentError) {
  std::string message;
  EXPECT_EQ(status_of("/dev/null", &message), ExitStatus::kEnvironment);
  EXPECT_THAT(message, HasSubstr("/dev/null is not a usable KVM device"));
}

TEST(KvmDeviceTest, EnvironmentVariableOverridesThePath) {
  setenv("SPTELAB_KVM_DEVICE", "/somewhere/else", 1);
  EXPECT_EQ(default_kvm_device_path(), "/somewhere/else");
  unsetenv("SPTELAB_KVM_DEVICE");
  EXPECT_EQ(default_kvm_device_path(), "/dev/kvm");
}

}  // namespace
}  // namespace sptelab::hypervisor
