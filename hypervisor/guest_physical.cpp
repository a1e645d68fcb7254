#include "hypervisor/guest_physical.h"

#include <algorithm>
#include <cstring>
#include <thread>

#include <fmt/core.h>

#include "base/error.h"
#include "base/spinlock.h"
#include "mm/types.h"

namespace sptelab::hypervisor {

std::string MemoryFailure::describe() const {
  switch (outcome) {
    case spte::FaultOutcome::kNoMemslot:
      return fmt::format("gpa {:#x} is outside guest RAM (no memslot)", gpa);
    case spte::FaultOutcome::kNoMemory:
      return fmt::format("the host could not provide a page for gpa {:#x} (out of frames)", gpa);
    case spte::FaultOutcome::kBadAccess:
      return fmt::format("gpa {:#x} is read-only guest memory", gpa);
    case spte::FaultOutcome::kUseAfterFree:
      return fmt::format("gpa {:#x} maps a freed frame (use after free)", gpa);
    case spte::FaultOutcome::kRetry:
      return fmt::format(
          "gave up faulting gpa {:#x}: the run ended while the fault kept being "
          "retried",
          gpa);
    case spte::FaultOutcome::kFixed:
      break;
  }
  return fmt::format("gpa {:#x}: unexpected fault outcome", gpa);
}

void throw_setup_failure(const std::string& what, const MemoryFailure& failure) {
  std::string message = fmt::format("{}: {}", what, failure.describe());
  if (failure.outcome == spte::FaultOutcome::kNoMemory) {
    throw_environment(message + "; give the emulated host more memory");
  }
  throw_internal(message);
}

std::optional<MemoryFailure> GuestPhysical::fault(spte::Gfn gfn, bool write) {
  if (is_fixed(gfn)) return std::nullopt;
  for (unsigned retries = 0;; ++retries) {
    ++stats_.faults;
    spte::FaultOutcome outcome = memory_.fault(gfn, write, vcpu_);
    if (outcome == spte::FaultOutcome::kFixed) return std::nullopt;
    if (outcome != spte::FaultOutcome::kRetry) {
      return MemoryFailure{gfn << mm::kPageShift, outcome};
    }
    ++stats_.fault_retries;
    if (abort_ != nullptr && abort_->load(std::memory_order_relaxed)) {
      return MemoryFailure{gfn << mm::kPageShift, spte::FaultOutcome::kRetry};
    }
    // A retry means an invalidation is open over the page: let its thread
    // finish (two cores, and the invalidating thread may be descheduled).
    if (retries < 16) {
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
}

std::optional<MemoryFailure> GuestPhysical::fault_in(spte::Gfn gfn, bool write) {
  return fault(gfn, write);
}

std::optional<MemoryFailure> GuestPhysical::with_page(
    spte::Gfn gfn, bool write, const std::function<void(uint8_t* frame)>& fn) {
  if (gfn >= memory_.gfn_count()) {
    return MemoryFailure{gfn << mm::kPageShift, spte::FaultOutcome::kNoMemslot};
  }
  if (is_fixed(gfn)) {
    fn(fixed_ + (gfn << mm::kPageShift));
    return std::nullopt;
  }
  // The spte can be zapped between the fault and the access (a host thread
  // invalidating the page): then fault again, as the vCPU would.
  for (;;) {
    if (auto failure = fault(gfn, write)) return failure;
    if (memory_.access(gfn, write, fn)) return std::nullopt;
    ++stats_.access_retries;
  }
}

template <typename PageFn>
std::optional<MemoryFailure> GuestPhysical::for_each_page(uint64_t gpa, size_t len, bool write,
                                                          PageFn&& fn) {
  size_t done = 0;
  while (done < len) {
    uint64_t at = gpa + done;
    size_t offset = at & (mm::kPageSize - 1);
    size_t chunk = std::min<size_t>(len - done, mm::kPageSize - offset);
    auto failure = with_page(at >> mm::kPageShift, write,
                             [&](uint8_t* frame) { fn(frame + offset, done, chunk); });
    if (failure) {
      failure->gpa = at;
      return failure;
    }
    done += chunk;
  }
  return std::nullopt;
}

std::optional<MemoryFailure> GuestPhysical::read(uint64_t gpa, void* out, size_t len) {
  auto* bytes = static_cast<uint8_t*>(out);
  return for_each_page(gpa, len, false, [&](uint8_t* page, size_t done, size_t chunk) {
    std::memcpy(bytes + done, page, chunk);
  });
}

std::optional<MemoryFailure> GuestPhysical::write(uint64_t gpa, const void* in, size_t len) {
  const auto* bytes = static_cast<const uint8_t*>(in);
  return for_each_page(gpa, len, true, [&](uint8_t* page, size_t done, size_t chunk) {
    std::memcpy(page, bytes + done, chunk);
  });
}

std::optional<MemoryFailure> GuestPhysical::zero(uint64_t gpa, size_t len) {
  return for_each_page(gpa, len, true,
                       [&](uint8_t* page, size_t, size_t chunk) { std::memset(page, 0, chunk); });
}

namespace {

bool single_access(uint64_t gpa, size_t len) {
  bool power_of_two = len == 1 || len == 2 || len == 4 || len == 8;
  return power_of_two && (gpa & (len - 1)) == 0;
}

void atomic_copy_in(uint8_t* frame_bytes, void* out, size_t len) {
  switch (len) {
    case 1:
      *static_cast<uint8_t*>(out) = __atomic_load_n(frame_bytes, __ATOMIC_SEQ_CST);
      return;
    case 2: {
      uint16_t value = __atomic_load_n(reinterpret_cast<uint16_t*>(frame_bytes), __ATOMIC_SEQ_CST);
      std::memcpy(out, &value, 2);
      return;
    }
    case 4: {
      uint32_t value = __atomic_load_n(reinterpret_cast<uint32_t*>(frame_bytes), __ATOMIC_SEQ_CST);
      std::memcpy(out, &value, 4);
      return;
    }
    default: {
      uint64_t value = __atomic_load_n(reinterpret_cast<uint64_t*>(frame_bytes), __ATOMIC_SEQ_CST);
      std::memcpy(out, &value, 8);
      return;
    }
  }
}

void atomic_copy_out(uint8_t* frame_bytes, const void* in, size_t len) {
  switch (len) {
    case 1:
      __atomic_store_n(frame_bytes, *static_cast<const uint8_t*>(in), __ATOMIC_SEQ_CST);
      return;
    case 2: {
      uint16_t value;
      std::memcpy(&value, in, 2);
      __atomic_store_n(reinterpret_cast<uint16_t*>(frame_bytes), value, __ATOMIC_SEQ_CST);
      return;
    }
    case 4: {
      uint32_t value;
      std::memcpy(&value, in, 4);
      __atomic_store_n(reinterpret_cast<uint32_t*>(frame_bytes), value, __ATOMIC_SEQ_CST);
      return;
    }
    default: {
      uint64_t value;
      std::memcpy(&value, in, 8);
      __atomic_store_n(reinterpret_cast<uint64_t*>(frame_bytes), value, __ATOMIC_SEQ_CST);
      return;
    }
  }
}

}  // namespace

std::optional<MemoryFailure> GuestPhysical::load(uint64_t gpa, void* out, size_t len) {
  if (!single_access(gpa, len)) return read(gpa, out, len);
  uint64_t offset = gpa & (mm::kPageSize - 1);
  auto failure = with_page(gpa >> mm::kPageShift, false,
                           [&](uint8_t* frame) { atomic_copy_in(frame + offset, out, len); });
  if (failure) failure->gpa = gpa;
  return failure;
}

std::optional<MemoryFailure> GuestPhysical::store(uint64_t gpa, const void* in, size_t len) {
  if (!single_access(gpa, len)) return write(gpa, in, len);
  uint64_t offset = gpa & (mm::kPageSize - 1);
  auto failure = with_page(gpa >> mm::kPageShift, true,
                           [&](uint8_t* frame) { atomic_copy_out(frame + offset, in, len); });
  if (failure) failure->gpa = gpa;
  return failure;
}

}  // namespace sptelab::hypervisor
