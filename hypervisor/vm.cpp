#include "hypervisor/vm.h"

#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include <fmt/core.h>

#include "base/error.h"
#include "hypervisor/elf.h"
#include "hypervisor/guest_physical.h"
#include "hypervisor/guest_window.h"
#include "hypervisor/vcpu.h"

namespace sptelab::hypervisor {

const char* run_end_name(RunEnd end) {
  switch (end) {
    case RunEnd::kAllHalted:
      return "all vCPUs halted";
    case RunEnd::kGuestExit:
      return "guest exit";
    case RunEnd::kStopped:
      return "stopped";
    case RunEnd::kTimeout:
      return "timeout";
    case RunEnd::kNoMemory:
      return "out of memory";
    case RunEnd::kGuestError:
      return "guest error";
    case RunEnd::kInternal:
      return "internal error";
  }
  return "unknown";
}

ExitStatus exit_status_of(RunEnd end) {
  switch (end) {
    case RunEnd::kAllHalted:
      return ExitStatus::kOk;
    case RunEnd::kGuestError:
      return ExitStatus::kBadInput;
    case RunEnd::kNoMemory:
      return ExitStatus::kEnvironment;
    case RunEnd::kTimeout:
    case RunEnd::kInternal:
      return ExitStatus::kInternal;
    case RunEnd::kGuestExit:
    case RunEnd::kStopped:
      break;
  }
  throw_internal(fmt::format("a run that ended by '{}' has no status of its own: it is given",
                             run_end_name(end)));
}

VmStats& VmStats::operator+=(const VmStats& other) {
  exits += other.exits;
  io_exits += other.io_exits;
  mmio_exits += other.mmio_exits;
  hlt_exits += other.hlt_exits;
  interrupted += other.interrupted;
  mmio_reads += other.mmio_reads;
  mmio_writes += other.mmio_writes;
  ram_faults += other.ram_faults;
  fault_retries += other.fault_retries;
  access_retries += other.access_retries;
  emulation_retries += other.emulation_retries;
  spurious_page_faults += other.spurious_page_faults;
  native_faults += other.native_faults;
  native_unmatched += other.native_unmatched;
  native_halts += other.native_halts;
  kick_signals += other.kick_signals;
  console_bytes += other.console_bytes;
  return *this;
}

Vm::Vm(VmConfig config, spte::GuestMemory& memory, GuestWindow& window)
    : config_(std::move(config)),
      memory_(memory),
      window_(window),
      kvm_(config_.kvm_device.empty() ? default_kvm_device_path() : config_.kvm_device) {
  if (memory_.gfn_count() != window_.gfn_count()) {
    throw_internal(fmt::format("guest memory has {} pages but the window {}", memory_.gfn_count(),
                               window_.gfn_count()));
  }
  ram_bytes_ = window_.size_bytes();
  uint32_t max_vcpus = std::min(kMaxVcpus, kvm_.max_vcpus());
  if (config_.vcpus == 0 || config_.vcpus > max_vcpus) {
    throw_bad_input(
        fmt::format("{} vCPUs requested; this KVM runs 1 to {}", config_.vcpus, max_vcpus));
  }
  vm_fd_ = Fd(ioctl(kvm_.fd(), KVM_CREATE_VM, 0));
  if (!vm_fd_.valid()) {
    throw_environment(
        fmt::format("KVM_CREATE_VM on {} failed: {}; check the KVM module and "
                    "memory limits",
                    kvm_.path(), std::strerror(errno)));
  }
  uint64_t ram_start = 0;
  if (config_.system_memslot) {
    // The layout depends only on RAM and vCPUs: plan it now, so that the
    // system area's memslot exists before any vCPU does.
    layout_ = plan_system_layout(ram_bytes_, config_.vcpus);
    system_bytes_ = layout_.end;
    void* area = mmap(nullptr, system_bytes_, PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (area == MAP_FAILED) {
      throw_environment(fmt::format("cannot allocate {} bytes for the guest's system area: {}",
                                    system_bytes_, std::strerror(errno)));
    }
    system_memory_ = static_cast<uint8_t*>(area);
    set_memory_region(1, 0, system_bytes_, system_memory_, "the system area");
    ram_start = system_bytes_;
  }
  set_memory_region(0, ram_start, ram_bytes_ - ram_start, window_.base() + ram_start, "guest RAM");
  for (uint32_t i = 0; i < config_.vcpus; ++i) vcpus_.push_back(std::make_unique<Vcpu>(*this, i));
  memory_.set_mirror(&window_);
}

Vm::~Vm() {
  stop_all_vcpus();
  vcpus_.clear();
  memory_.set_mirror(nullptr);
  if (system_memory_ != nullptr) munmap(system_memory_, system_bytes_);
}

void Vm::set_memory_region(uint32_t slot, uint64_t gpa, uint64_t bytes, uint8_t* host,
                           const char* what) {
  kvm_userspace_memory_region region{};
  region.slot = slot;
  region.guest_phys_addr = gpa;
  region.memory_size = bytes;
  region.userspace_addr = reinterpret_cast<uint64_t>(host);
  if (ioctl(vm_fd_.get(), KVM_SET_USER_MEMORY_REGION, &region) != 0) {
    throw_environment(fmt::format("KVM_SET_USER_MEMORY_REGION for {} bytes of {} failed: {}", bytes,
                                  what, std::strerror(errno)));
  }
}

spte::Access Vm::access_now(spte::Gfn gfn) const {
  if (gfn < (system_bytes_ >> 12)) return spte::Access::kWrite;
  return window_.access(gfn);
}

bool Vm::read_mapped(uint64_t gpa, void* out, size_t len) const {
  auto* dest = static_cast<uint8_t*>(out);
  while (len > 0) {
    size_t chunk = std::min<size_t>(len, 4096 - (gpa & 4095));
    if (gpa < system_bytes_) {
      std::memcpy(dest, system_memory_ + gpa, chunk);
    } else if (!window_.read_mapped(gpa, dest, chunk)) {
      return false;
    }
    dest += chunk;
    gpa += chunk;
    len -= chunk;
  }
  return true;
}

void Vm::load(const ElfImage& image) {
  if (loaded_) throw_internal("Vm::load called twice");
  if (image.end_address() > ram_bytes_) {
    throw_bad_input(
        fmt::format("guest image {} ends at {:#x}, beyond the {:#x} bytes of guest "
                    "RAM; give the VM more --mem",
                    image.name, image.end_address(), ram_bytes_));
  }
  if (!config_.system_memslot) layout_ = plan_system_layout(ram_bytes_, config_.vcpus);
  check_image_fits(layout_, image);
  GuestPhysical loader(memory_, 0);
  loader.set_fixed(system_memory_, system_bytes_);
  write_system_area(layout_, loader);
  load_elf(image, loader);
  for (auto& vcpu : vcpus_) vcpu->configure(layout_, image.entry);
  loaded_ = true;
}

RunResult Vm::run() {
  if (!loaded_) throw_internal("Vm::run before Vm::load");
  if (ran_) throw_internal("Vm::run called twice");
  ran_ = true;
  install_kick_signal_handler();
  {
    std::lock_guard lock(mutex_);
    running_ = config_.vcpus;
  }
  for (auto& vcpu : vcpus_) vcpu->start();

  bool timed_out = false;
  {
    std::unique_lock lock(mutex_);
    auto over = [&] { return end_.has_value() || running_ == 0; };
    if (config_.timeout_seconds > 0) {
      auto limit = std::chrono::duration<double>(config_.timeout_seconds);
      timed_out = !changed_.wait_for(lock, limit, over);
    } else {
      changed_.wait(lock, over);
    }
  }
  stop_all_vcpus();
  if (timed_out) {
    finish(RunEnd::kTimeout,
           fmt::format("the guest did not finish within {} s ({}); raise --timeout if it needs "
                       "longer",
                       config_.timeout_seconds, vcpu_positions()));
  }

  std::lock_guard lock(mutex_);
  RunResult result;
  if (end_) {
    result = std::move(*end_);
  } else {
    result.end = RunEnd::kAllHalted;
    result.exit_status = static_cast<int>(exit_status_of(RunEnd::kAllHalted));
    result.message = "every vCPU halted";
  }
  result.reports = reports_;
  for (const auto& vcpu : vcpus_) {
    result.stats += vcpu->stats();
    result.stats.kick_signals += vcpu->kick_signals();
  }
  return result;
}

void Vm::request_stop(int exit_status, std::string message) {
  finish_with_status(RunEnd::kStopped, exit_status, std::move(message));
}

bool Vm::finish(RunEnd end, std::string message, std::string dump) {
  return finish_with_status(end, static_cast<int>(exit_status_of(end)), std::move(message),
                            std::move(dump));
}

bool Vm::finish_with_status(RunEnd end, int exit_status, std::string message, std::string dump,
                            std::optional<uint32_t> guest_exit_value) {
  {
    std::lock_guard lock(mutex_);
    if (end_) return false;
    RunResult result;
    result.end = end;
    result.exit_status = exit_status;
    result.message = std::move(message);
    result.dump = std::move(dump);
    result.guest_exit_value = guest_exit_value;
    end_ = std::move(result);
    stopping_.store(true, std::memory_order_seq_cst);
  }
  changed_.notify_all();
  return true;
}

void Vm::vcpu_done() {
  {
    std::lock_guard lock(mutex_);
    --running_;
  }
  changed_.notify_all();
}

void Vm::stop_all_vcpus() {
  stopping_.store(true, std::memory_order_seq_cst);
  // Every vCPU is told before any is waited for: kicked one by one, each
  // waited for its turn on a CPU while the untold ones kept spinning, and
  // 31 vCPUs on two cores took two seconds past --timeout to stop.
  for (auto& vcpu : vcpus_) vcpu->request_exit();
  for (auto& vcpu : vcpus_) vcpu->kick();
  for (auto& vcpu : vcpus_) vcpu->join();
}

std::string Vm::vcpu_positions() const {
  std::string out;
  for (const auto& vcpu : vcpus_) {
    if (!out.empty()) out += ", ";
    out += fmt::format("vcpu{} at rip={:#x}", vcpu->index(), vcpu->rip());
  }
  return out;
}

void Vm::console(uint32_t vcpu, std::string_view text) {
  std::lock_guard lock(console_mutex_);
  if (config_.console) {
    config_.console(vcpu, text);
    return;
  }
  // write(2) directly: a kick's signal may interrupt it, and stdio would
  // treat the EINTR as an error and drop the line.
  while (!text.empty()) {
    ssize_t written = ::write(STDOUT_FILENO, text.data(), text.size());
    if (written < 0) {
      if (errno == EINTR) continue;
      return;
    }
    text.remove_prefix(static_cast<size_t>(written));
  }
}

void Vm::report(const GuestReport& report) {
  {
    std::lock_guard lock(mutex_);
    reports_.push_back(report);
  }
  if (config_.on_report) config_.on_report(report);
}

}  // namespace sptelab::hypervisor
