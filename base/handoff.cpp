#include "base/handoff.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace sptelab {
namespace {

// std::atomic<uint32_t> is a plain 32-bit word on Linux, which is what
// FUTEX_WAIT compares.
uint32_t* word(std::atomic<uint32_t>& value) {
  static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));
  return reinterpret_cast<uint32_t*>(&value);
}

}  // namespace

void Handoff::acquire() {
  for (;;) {
    uint32_t expected = 1;
    if (posted_.compare_exchange_strong(expected, 0, std::memory_order_acquire)) return;
    // Sleeps only while the word is still 0; EAGAIN (it was posted meanwhile)
    // and EINTR both mean: look again.
    syscall(SYS_futex, word(posted_), FUTEX_WAIT_PRIVATE, 0, nullptr, nullptr, 0);
  }
}

void Handoff::release() {
  posted_.store(1, std::memory_order_release);
  syscall(SYS_futex, word(posted_), FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
}

}  // namespace sptelab
