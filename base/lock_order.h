// The lock order, written once, and a lockdep-style check of it.
//
// A thread that holds a ranked lock takes only locks of the same or a later
// rank (two page-table locks may nest, as fork's source and child tables do):
//
//   mmap_lock -> PTL -> mmu_lock -> mirror (the mirror update: the guest
//   window's lock and its mmap, hypervisor/guest_window.h)
//
// PTL before mmu_lock: under the ptl-page placement the notifier runs inside
// the PTL and the secondary MMU takes mmu_lock there (the 2008 placement of
// ptep_clear_flush_notify). mmu_lock before the mirror: an spte change
// reaches the window while mmu_lock is held, so no fault can map the frame
// again in between. mmap_lock is never taken inside mmu_lock: a secondary
// MMU's fault takes it (GUP) before mmu_lock, as KVM's does; inside it a
// fault would deadlock against munmap.
//
// Checking (held-lock stacks, owners for assert_held) is on in Debug and
// sanitizer builds and wherever SPTELAB_LOCK_CHECKS=1 is set (every test);
// off, it costs one relaxed load per lock operation. A violation prints what
// was held and aborts, like a lockdep splat made fatal.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

namespace sptelab {

enum class LockRank : uint8_t {
  kUnranked,  // not in the order (leaf locks: TLBs, rmap, cpumask)
  kMmapLock,
  kPtl,
  kMmuLock,
  kMirror,  // the guest window's lock: an spte change reaches it under mmu_lock
};

namespace lock_order {

namespace detail {
extern std::atomic<bool> checking;
}  // namespace detail

inline bool enabled() {
  return detail::checking.load(std::memory_order_relaxed);
}
void set_enabled(bool on);

// The locks call these while checking is on: before_acquire() before a
// blocking acquire (so that an inversion is reported, not a deadlock; a try
// cannot deadlock and is not checked), acquired() once the lock is held.
void before_acquire(LockRank rank, const char* name);
void acquired(const void* lock, LockRank rank, const char* name);
void released(const void* lock);
// Whether the calling thread holds `lock` (as far as checking has seen).
bool held_by_this_thread(const void* lock);
// A lock a comment says callers hold is not held.
void not_held(const char* name);

// What a violation does (default: print and abort); tests catch them.
using ViolationHandler = std::function<void(const std::string& what)>;
void set_violation_handler(ViolationHandler handler);

}  // namespace lock_order
}  // namespace sptelab
