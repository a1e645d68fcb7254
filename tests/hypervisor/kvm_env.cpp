#include "tests/hypervisor/kvm_env.h"

#include <sys/ioctl.h>

#include "base/error.h"
#include "hypervisor/kvm_device.h"

namespace sptelab::hypervisor::testing {

const std::string& kvm_unavailable_reason() {
  static const std::string reason = [] {
    try {
      KvmDevice kvm(default_kvm_device_path());
      Fd vm(ioctl(kvm.fd(), KVM_CREATE_VM, 0));
      return vm.valid() ? std::string() : std::string("KVM_CREATE_VM failed");
    } catch (const Error& error) {
      return std::string(error.what());
    }
  }();
  return reason;
}

}  // namespace sptelab::hypervisor::testing
