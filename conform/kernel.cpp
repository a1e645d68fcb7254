#include "conform/kernel.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <optional>

#include "base/error.h"
#include "base/interrupt.h"
#include "hypervisor/kvm_device.h"

#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21  // Linux 5.4; older C library headers lack it
#endif
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000  // Linux 4.17
#endif

namespace sptelab::conform {
namespace {

constexpr std::string_view kMarkerPrefix = "sptelab-conform op ";
constexpr std::string_view kUnmapEvent = "kvm:kvm_unmap_hva_range:";
// Guest-physical address of each memslot: 16 MiB apart.
constexpr uint64_t kGpaSpacing = uint64_t{16} << 20;

[[noreturn]] void fail_errno(const std::string& what) {
  throw_internal(fmt::format("{} failed: {}", what, std::strerror(errno)));
}

void check(int result, const std::string& what) {
  if (result != 0) fail_errno(what);
}

// The disk file behind the `file` slot, in a directory of its own under
// /tmp; both are removed on every way out.
class TempFile {
 public:
  explicit TempFile(uint64_t bytes) {
    dir_ = "/tmp/sptelab-conform-XXXXXX";
    if (mkdtemp(dir_.data()) == nullptr) {
      throw_environment(fmt::format("cannot make a directory under /tmp for the file slot: {}",
                                    std::strerror(errno)));
    }
    path_ = dir_ + "/file";
    fd_ = open(path_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd_ < 0 || ftruncate(fd_, static_cast<off_t>(bytes)) != 0) {
      const int error = errno;
      remove();
      throw_environment(
          fmt::format("cannot create the file slot's file {}: {}", path_, std::strerror(error)));
    }
  }
  ~TempFile() { remove(); }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  int fd() const { return fd_; }

 private:
  void remove() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
    unlink(path_.c_str());
    rmdir(dir_.c_str());
  }

  std::string dir_;
  std::string path_;
  int fd_ = -1;
};

// The three slots of this process and the VM whose memslots they are.
class RealSlots {
 public:
  RealSlots()
      : kvm_(hypervisor::default_kvm_device_path()), file_(slot_pages(Slot::kFile) * kPageSize) {
    vm_ = hypervisor::Fd(ioctl(kvm_.fd(), KVM_CREATE_VM, 0));
    if (!vm_.valid()) {
      throw_environment(
          fmt::format("KVM_CREATE_VM on {} failed: {}", kvm_.path(), std::strerror(errno)));
    }
    memfd_ = hypervisor::Fd(memfd_create("sptelab-conform", MFD_CLOEXEC));
    if (!memfd_.valid() ||
        ftruncate(memfd_.get(), static_cast<off_t>(slot_pages(Slot::kMemfd) * kPageSize)) != 0) {
      throw_environment(fmt::format("cannot create the memfd slot: {}", std::strerror(errno)));
    }
    reserve();
    for (Slot slot : kAllSlots) {
      map(slot, 0, slot_pages(slot), MAP_FIXED);
      add_memslot(slot);
    }
  }
  ~RealSlots() {
    if (reservation_ != nullptr) munmap(reservation_, reservation_bytes_);
  }
  RealSlots(const RealSlots&) = delete;
  RealSlots& operator=(const RealSlots&) = delete;

  const SlotLayout& layout() const { return layout_; }

  void apply(const ScriptOp& op) {
    uint8_t* start = at(op.slot, op.first);
    const size_t length = op.count * kPageSize;
    const auto value = static_cast<uint8_t>(op.line);
    switch (op.kind) {
      case OpKind::kTouch:
        return write_pages(start, op.count, value);
      case OpKind::kDontneed:
        return check(madvise(start, length, MADV_DONTNEED), "madvise(MADV_DONTNEED)");
      case OpKind::kMprotect:
        return check(mprotect(start, length, op.read_only ? PROT_READ : PROT_READ | PROT_WRITE),
                     "mprotect");
      case OpKind::kMunmap:
        return check(munmap(start, length), "munmap");
      case OpKind::kMmap:
        return map(op.slot, op.first, op.count, MAP_FIXED_NOREPLACE);
      case OpKind::kForkCow:
        return fork_and_write(start, op.count, value);
      case OpKind::kPunchHole:
        return check(
            fallocate(fd_of(op.slot), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                      static_cast<off_t>(op.first * kPageSize), static_cast<off_t>(length)),
            "fallocate(FALLOC_FL_PUNCH_HOLE)");
      case OpKind::kPageout:
        return check(madvise(start, length, MADV_PAGEOUT), "madvise(MADV_PAGEOUT)");
      case OpKind::kMsync:
        write_pages(start, op.count, value);
        return check(msync(start, length, MS_SYNC), "msync(MS_SYNC)");
      case OpKind::kRemap:
        for (uint64_t i = 0; i < op.count; ++i) {
          check(remap_file_pages(start + i * kPageSize, kPageSize, 0, op.first + (i + 1) % op.count,
                                 0),
                "remap_file_pages");
        }
        return;
    }
    throw_internal("unknown script operation");
  }

 private:
  uint8_t* at(Slot slot, uint64_t page) const {
    return reinterpret_cast<uint8_t*>(layout_.address(slot, page));
  }
  int fd_of(Slot slot) const { return slot == Slot::kMemfd ? memfd_.get() : file_.fd(); }

  // A PROT_NONE reservation with room for the layout (conform/ranges.h)
  // inside one 1 GiB region; the blocks the slots do not use stay PROT_NONE,
  // so no mapping of the process's own lands in a slot's 2 MiB block. The
  // primer page is mapped and written.
  void reserve() {
    reservation_bytes_ = (2 * kLayoutBlocks + 1) * kBlockSize;
    void* area = mmap(nullptr, reservation_bytes_, PROT_NONE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (area == MAP_FAILED) {
      throw_environment(fmt::format("cannot reserve {} MiB of address space for the slots: {}",
                                    reservation_bytes_ >> 20, std::strerror(errno)));
    }
    reservation_ = area;
    layout_ = SlotLayout::at(SlotLayout::base_after(reinterpret_cast<uint64_t>(area)));
    void* primer = reinterpret_cast<void*>(layout_.primer());
    if (mmap(primer, kPageSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1,
             0) == MAP_FAILED) {
      fail_errno("mmap of the primer page");
    }
    *static_cast<volatile uint8_t*>(primer) = 1;
  }

  // Maps pages [first, first + count) of the slot at their place: MAP_FIXED
  // over the reservation at setup, MAP_FIXED_NOREPLACE over a hole the
  // script made (anything else there is an error, not something to replace).
  void map(Slot slot, uint64_t first, uint64_t count, int fixed) {
    void* want = at(slot, first);
    const size_t length = count * kPageSize;
    void* got = slot == Slot::kAnon ? mmap(want, length, PROT_READ | PROT_WRITE,
                                           MAP_PRIVATE | MAP_ANONYMOUS | fixed, -1, 0)
                                    : mmap(want, length, PROT_READ | PROT_WRITE, MAP_SHARED | fixed,
                                           fd_of(slot), static_cast<off_t>(first * kPageSize));
    if (got == MAP_FAILED)
      fail_errno(fmt::format("mmap of {} pages {}..{}", slot_name(slot), first, first + count - 1));
    // No transparent huge pages in the anonymous slot: the emulator has none.
    if (slot == Slot::kAnon)
      check(madvise(want, length, MADV_NOHUGEPAGE), "madvise(MADV_NOHUGEPAGE)");
  }

  void add_memslot(Slot slot) {
    kvm_userspace_memory_region region{};
    region.slot = static_cast<uint32_t>(slot);
    region.guest_phys_addr = static_cast<uint64_t>(slot) * kGpaSpacing;
    region.memory_size = slot_pages(slot) * kPageSize;
    region.userspace_addr = layout_.start(slot);
    if (ioctl(vm_.get(), KVM_SET_USER_MEMORY_REGION, &region) != 0) {
      throw_environment(fmt::format("KVM_SET_USER_MEMORY_REGION for the {} slot failed: {}",
                                    slot_name(slot), std::strerror(errno)));
    }
  }

  static void write_pages(uint8_t* start, uint64_t count, uint8_t value) {
    for (uint64_t i = 0; i < count; ++i)
      *reinterpret_cast<volatile uint8_t*>(start + i * kPageSize) = value;
  }

  // The parent writes while the child still shares its pages (so each
  // write copies), then lets the child exit by closing the pipe.
  static void fork_and_write(uint8_t* start, uint64_t count, uint8_t value) {
    int pipe_fds[2];
    check(pipe2(pipe_fds, O_CLOEXEC), "pipe2");
    const pid_t child = fork();
    if (child < 0) fail_errno("fork");
    if (child == 0) {
      close(pipe_fds[1]);
      char byte;
      while (read(pipe_fds[0], &byte, 1) < 0 && errno == EINTR) {
      }
      _exit(0);
    }
    close(pipe_fds[0]);
    write_pages(start, count, value);
    close(pipe_fds[1]);
    int status = 0;
    while (waitpid(child, &status, 0) < 0) {
      if (errno != EINTR) fail_errno("waitpid");
    }
  }

  hypervisor::KvmDevice kvm_;
  hypervisor::Fd vm_;
  hypervisor::Fd memfd_;
  TempFile file_;
  void* reservation_ = nullptr;
  size_t reservation_bytes_ = 0;
  SlotLayout layout_;
};

void write_marker(int fd, size_t index) {
  const std::string text = kernel_op_marker(index);
  if (write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    fail_errno("writing the tracefs trace_marker");
  }
}

// "mmu notifier unmap range: 0x7f0000000000 -- 0x7f0000200000"
std::optional<std::pair<uint64_t, uint64_t>> unmap_range_of(std::string_view fields) {
  auto hex_after = [&](std::string_view key) -> std::optional<uint64_t> {
    const size_t at = fields.find(key);
    if (at == std::string_view::npos) return std::nullopt;
    std::string_view rest = fields.substr(at + key.size());
    if (rest.substr(0, 2) == "0x") rest.remove_prefix(2);
    uint64_t value = 0;
    auto [end, error] = std::from_chars(rest.data(), rest.data() + rest.size(), value, 16);
    if (error != std::errc() || end == rest.data()) return std::nullopt;
    return value;
  };
  std::optional<uint64_t> start = hex_after("range: ");
  std::optional<uint64_t> end = hex_after("-- ");
  if (!start || !end) return std::nullopt;
  return std::make_pair(*start, *end);
}

std::string kernel_release() {
  utsname name{};
  if (uname(&name) != 0) return "Linux";
  return fmt::format("{} {}", name.sysname, name.release);
}

}  // namespace

std::string kernel_op_marker(size_t index) {
  return fmt::format("{}{}", kMarkerPrefix, index);
}

std::vector<OpRanges> attribute_kernel_ranges(const trace::KernelTrace& trace,
                                              const SlotLayout& layout, size_t ops) {
  std::vector<OpRanges> out(ops);
  std::optional<size_t> current;
  for (const trace::Event& event : trace.events) {
    if (event.args[0] >= trace.strings.size()) continue;
    const std::string_view text = trace.strings[event.args[0]];
    if (const size_t marker = text.find(kMarkerPrefix); marker != std::string_view::npos) {
      std::string_view number = text.substr(marker + kMarkerPrefix.size());
      size_t index = 0;
      const auto parsed = std::from_chars(number.data(), number.data() + number.size(), index);
      current = parsed.ec == std::errc() ? std::optional<size_t>(index) : std::nullopt;
      continue;
    }
    if (!current || *current >= ops || text.substr(0, kUnmapEvent.size()) != kUnmapEvent) continue;
    const auto range = unmap_range_of(text.substr(kUnmapEvent.size()));
    if (!range) continue;
    if (std::optional<SlotRange> in_slot = layout.to_slot_range(range->first, range->second)) {
      out[*current].push_back(*in_slot);
    }
  }
  return out;
}

std::string KernelSide::name() const {
  return fmt::format("{} (KVM, kvm:kvm_unmap_hva_range)", kernel_release());
}

std::vector<OpRanges> KernelSide::run(const Script& script, size_t max_ops) {
  RealSlots slots;
  trace::KernelCaptureOptions options;
  options.events = {"kvm:kvm_unmap_hva_range"};
  trace::KernelCapture capture(options);
  if (!capture.active()) {
    throw_environment(
        fmt::format("no tracefs capture of kvm:kvm_unmap_hva_range: {}", capture.problem()));
  }
  const std::string marker_path = capture.instance_dir() + "/trace_marker";
  hypervisor::Fd marker(open(marker_path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!marker.valid()) {
    throw_environment(fmt::format("cannot open {}: {}", marker_path, std::strerror(errno)));
  }
  size_t done = 0;
  for (const ScriptOp& op : script.ops) {
    if (done >= max_ops || interrupt::requested() != 0) break;
    write_marker(marker.get(), done);
    slots.apply(op);
    ++done;
  }
  write_marker(marker.get(), done);  // closes the last op
  // An open file in the instance would keep stop() from removing it.
  marker = hypervisor::Fd();
  trace::KernelTrace trace = capture.stop();
  if (trace.lost > 0) {
    throw_environment(
        fmt::format("tracefs dropped {} events (a buffer overrun): the kernel's "
                    "ranges are incomplete; run again on a quieter machine",
                    trace.lost));
  }
  return attribute_kernel_ranges(trace, slots.layout(), done);
}

}  // namespace sptelab::conform
