#include "hypervisor/guest_window.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/core.h>

#include "base/error.h"

namespace sptelab::hypervisor {
namespace {

int prot_for(spte::Access access) {
  switch (access) {
    case spte::Access::kNone:
      return PROT_NONE;
    case spte::Access::kRead:
      return PROT_READ;
    case spte::Access::kWrite:
      return PROT_READ | PROT_WRITE;
  }
  return PROT_NONE;
}

[[noreturn]] void mapping_failed(const char* call, uint64_t gfn, uint64_t count) {
  int error = errno;
  std::string message = fmt::format("guest window: {} of gfn {:#x}..{:#x} failed: {}", call, gfn,
                                    gfn + count - 1, std::strerror(error));
  if (error == ENOMEM) {
    message +=
        "; the process is probably out of memory mappings (vm.max_map_count): raise it with "
        "`sysctl vm.max_map_count=262144` or use fewer scattered frames";
  }
  throw_environment(message);
}

}  // namespace

GuestWindow::GuestWindow(const mm::PhysMem& phys, uint64_t gfn_count)
    : phys_(phys),
      gfn_count_(gfn_count),
      backing_(gfn_count, mm::kNoPfn),
      access_(gfn_count, spte::Access::kNone) {
  if (gfn_count == 0) throw_internal("guest window: zero pages");
  void* base =
      mmap(nullptr, size_bytes(), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) {
    throw_environment(fmt::format("guest window: cannot reserve {} bytes of address space: {}",
                                  size_bytes(), std::strerror(errno)));
  }
  base_ = static_cast<uint8_t*>(base);
}

GuestWindow::~GuestWindow() {
  munmap(base_, size_bytes());
}

void GuestWindow::update(const spte::MirrorUpdate& update) {
  if (update.count == 0 || update.gfn >= gfn_count_ || update.count > gfn_count_ - update.gfn) {
    throw_internal(fmt::format("guest window: update of gfn {:#x} (+{}) outside the {} pages",
                               update.gfn, update.count, gfn_count_));
  }
  if (update.access != spte::Access::kNone &&
      (update.pfn == mm::kNoPfn || !phys_.valid(update.pfn) ||
       !phys_.valid(update.pfn + update.count - 1))) {
    throw_internal(fmt::format("guest window: frame {:#x} (+{}) is not physical memory", update.pfn,
                               update.count));
  }
  std::lock_guard lock(mutex_);
  if (already(update)) {
    skipped_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  int prot = prot_for(update.access);
  if (update.access == spte::Access::kNone) {
    protect(update.gfn, update.count, prot);
    unmaps_.fetch_add(1, std::memory_order_relaxed);
  } else if (backed_by(update)) {
    protect(update.gfn, update.count, prot);
    protects_.fetch_add(1, std::memory_order_relaxed);
  } else {
    map(update, prot);
    maps_.fetch_add(1, std::memory_order_relaxed);
  }
  for (uint64_t i = 0; i < update.count; ++i) {
    access_[update.gfn + i] = update.access;
    if (update.access != spte::Access::kNone) backing_[update.gfn + i] = update.pfn + i;
  }
}

bool GuestWindow::already(const spte::MirrorUpdate& update) const {
  mutex_.assert_held();
  for (uint64_t i = 0; i < update.count; ++i) {
    if (access_[update.gfn + i] != update.access) return false;
  }
  return update.access == spte::Access::kNone || backed_by(update);
}

bool GuestWindow::backed_by(const spte::MirrorUpdate& update) const {
  mutex_.assert_held();
  for (uint64_t i = 0; i < update.count; ++i) {
    if (backing_[update.gfn + i] != update.pfn + i) return false;
  }
  return true;
}

void GuestWindow::protect(uint64_t gfn, uint64_t count, int prot) {
  mutex_.assert_held();
  // mprotect over a run that is partly never-mapped reservation is fine: the
  // reservation is an anonymous PROT_NONE mapping, and stays inaccessible
  // only if prot is PROT_NONE (callers never upgrade such a page this way:
  // backed_by() is false for it).
  if (mprotect(base_ + (gfn << mm::kPageShift), count << mm::kPageShift, prot) != 0) {
    mapping_failed("mprotect", gfn, count);
  }
}

void GuestWindow::set_populate(bool on) {
  std::lock_guard lock(mutex_);
  populate_ = on;
}

void GuestWindow::map(const spte::MirrorUpdate& update, int prot) {
  mutex_.assert_held();
  void* want = base_ + (update.gfn << mm::kPageShift);
  // A PROT_NONE run has nothing to populate.
  int flags = MAP_SHARED | MAP_FIXED | (populate_ && prot != PROT_NONE ? MAP_POPULATE : 0);
  void* got = mmap(want, uint64_t{update.count} << mm::kPageShift, prot, flags, phys_.memfd(),
                   static_cast<off_t>(phys_.frame_offset(update.pfn)));
  if (got == MAP_FAILED) mapping_failed("mmap", update.gfn, update.count);
}

spte::Access GuestWindow::access(spte::Gfn gfn) const {
  std::lock_guard lock(mutex_);
  return gfn < gfn_count_ ? access_[gfn] : spte::Access::kNone;
}

mm::Pfn GuestWindow::pfn(spte::Gfn gfn) const {
  std::lock_guard lock(mutex_);
  return gfn < gfn_count_ ? backing_[gfn] : mm::kNoPfn;
}

bool GuestWindow::read_mapped(uint64_t gpa, void* out, size_t len) const {
  if (gpa >= size_bytes() || len > size_bytes() - gpa) return false;
  auto* dest = static_cast<uint8_t*>(out);
  std::lock_guard lock(mutex_);
  while (len > 0) {
    uint64_t gfn = gpa >> mm::kPageShift;
    size_t offset = gpa & (mm::kPageSize - 1);
    size_t chunk = std::min<size_t>(len, mm::kPageSize - offset);
    if (access_[gfn] == spte::Access::kNone) return false;
    std::memcpy(dest, phys_.direct_map(backing_[gfn]) + offset, chunk);
    dest += chunk;
    gpa += chunk;
    len -= chunk;
  }
  return true;
}

GuestWindowStats GuestWindow::stats() const {
  return {maps_.load(std::memory_order_relaxed), protects_.load(std::memory_order_relaxed),
          unmaps_.load(std::memory_order_relaxed), skipped_.load(std::memory_order_relaxed)};
}

}  // namespace sptelab::hypervisor
