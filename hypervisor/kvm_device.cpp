#include "hypervisor/kvm_device.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <fmt/core.h>

#include "base/error.h"

namespace sptelab::hypervisor {

Fd::~Fd() {
  if (fd_ >= 0) close(fd_);
}

Fd& Fd::operator=(Fd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = other.release();
  }
  return *this;
}

std::string default_kvm_device_path() {
  const char* path = std::getenv("SPTELAB_KVM_DEVICE");
  return path != nullptr && *path != '\0' ? path : "/dev/kvm";
}

namespace {

std::string open_advice(int error) {
  switch (error) {
    case ENOENT:
    case ENXIO:
    case ENODEV:
      return "KVM is not available here: load the kvm module (modprobe kvm_intel, kvm_amd or "
             "kvm_pvm), enable virtualization, or run on a machine that has /dev/kvm";
    case EACCES:
    case EPERM:
      return "add your user to the kvm group or run as root";
    default:
      return "check that the device is a working KVM device";
  }
}

}  // namespace

KvmDevice::KvmDevice(const std::string& path) : path_(path) {
  fd_ = Fd(open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd_.valid()) {
    int error = errno;
    throw_environment(fmt::format("cannot open {}: {}; {} (SPTELAB_KVM_DEVICE overrides the path)",
                                  path, std::strerror(error), open_advice(error)));
  }
  int version = ioctl(fd_.get(), KVM_GET_API_VERSION, 0);
  if (version < 0) {
    throw_environment(
        fmt::format("{} is not a usable KVM device (KVM_GET_API_VERSION failed: {}); point "
                    "SPTELAB_KVM_DEVICE at /dev/kvm or unset it",
                    path, std::strerror(errno)));
  }
  if (version != KVM_API_VERSION) {
    throw_environment(
        fmt::format("{} speaks KVM API version {}, sptelab needs {}; use a kernel "
                    "with the stable KVM API",
                    path, version, KVM_API_VERSION));
  }
  require(KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY", "guest RAM is a user-memory memslot");
  require(KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT",
          "kicking a vCPU out of KVM_RUN without losing the kick");
  require(KVM_CAP_NR_MEMSLOTS, "KVM_CAP_NR_MEMSLOTS", "guest RAM needs one memslot");

  int mmap_size = ioctl(fd_.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
  if (mmap_size < static_cast<int>(sizeof(kvm_run))) {
    throw_environment(
        fmt::format("{}: KVM_GET_VCPU_MMAP_SIZE returned {}; the KVM module is "
                    "broken or too old",
                    path, mmap_size));
  }
  vcpu_mmap_size_ = static_cast<size_t>(mmap_size);
  int max = check_extension(KVM_CAP_MAX_VCPUS);
  if (max <= 0) max = check_extension(KVM_CAP_NR_VCPUS);
  max_vcpus_ = max > 0 ? static_cast<uint32_t>(max) : 1;
  sync_regs_ = (check_extension(KVM_CAP_SYNC_REGS) & KVM_SYNC_X86_REGS) != 0;
  read_supported_cpuid();
}

int KvmDevice::check_extension(long capability) const {
  int result = ioctl(fd_.get(), KVM_CHECK_EXTENSION, capability);
  return result < 0 ? 0 : result;
}

void KvmDevice::require(long capability, const char* name, const char* why) const {
  if (check_extension(capability) <= 0) {
    throw_environment(
        fmt::format("{} lacks {}, which sptelab needs ({}); use a newer kernel", path_, name, why));
  }
}

void KvmDevice::read_supported_cpuid() {
  // The entry count is not known in advance: grow on E2BIG like QEMU does.
  for (uint32_t entries = 64; entries <= 4096; entries *= 2) {
    std::vector<uint8_t> buffer(sizeof(kvm_cpuid2) + entries * sizeof(kvm_cpuid_entry2));
    auto* cpuid = reinterpret_cast<kvm_cpuid2*>(buffer.data());
    cpuid->nent = entries;
    if (ioctl(fd_.get(), KVM_GET_SUPPORTED_CPUID, cpuid) == 0) {
      cpuid_.assign(cpuid->entries, cpuid->entries + cpuid->nent);
      return;
    }
    if (errno != E2BIG) {
      cpuid_problem_ = fmt::format("KVM_GET_SUPPORTED_CPUID failed: {}", std::strerror(errno));
      return;
    }
  }
  cpuid_problem_ = "KVM_GET_SUPPORTED_CPUID wants more than 4096 entries";
}

}  // namespace sptelab::hypervisor
