// The /dev/kvm system device: opening it, the API version and the
// capabilities sptelab relies on, each refused with a message that says what
// is missing and what to do (exit status 3).
#pragma once

#include <linux/kvm.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace sptelab::hypervisor {

// An owned file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd();
  Fd(Fd&& other) noexcept : fd_(other.release()) {}
  Fd& operator=(Fd&& other) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_ = -1;
};

// $SPTELAB_KVM_DEVICE if set (tests point it elsewhere), else /dev/kvm.
std::string default_kvm_device_path();

class KvmDevice {
 public:
  // Opens and checks the device; throws Error(kEnvironment) if it is missing,
  // not a KVM device, or lacks a capability sptelab needs.
  explicit KvmDevice(const std::string& path);

  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }
  int check_extension(long capability) const;

  size_t vcpu_mmap_size() const { return vcpu_mmap_size_; }
  uint32_t max_vcpus() const { return max_vcpus_; }
  bool has_sync_regs() const { return sync_regs_; }
  // CPUID entries for KVM_SET_CPUID2. Empty when KVM refuses
  // KVM_GET_SUPPORTED_CPUID (the PVM backend on the lab machines answers
  // EINVAL); vCPUs then keep KVM's default CPUID, which long-mode guests
  // that do not execute CPUID do not notice.
  const std::vector<kvm_cpuid_entry2>& supported_cpuid() const { return cpuid_; }
  const std::string& cpuid_problem() const { return cpuid_problem_; }

 private:
  void require(long capability, const char* name, const char* why) const;
  void read_supported_cpuid();

  Fd fd_;
  std::string path_;
  size_t vcpu_mmap_size_ = 0;
  uint32_t max_vcpus_ = 1;
  bool sync_regs_ = false;
  std::vector<kvm_cpuid_entry2> cpuid_;
  std::string cpuid_problem_;
};

}  // namespace sptelab::hypervisor
