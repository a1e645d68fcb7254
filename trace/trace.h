// Per-thread lock-free event rings. Each thread writes only its own ring (a
// single-producer ring: one store and one release of the head), so tracing is
// cheap enough to leave on. Rings are read at quiescent points (after the
// traced threads have stopped or joined); a ring that wrapped counts what it
// overwrote, and every reader reports that count.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "trace/event.h"

namespace sptelab::trace {

class Ring {
 public:
  Ring(uint32_t id, size_t capacity_log2);
  uint32_t id() const { return id_; }
  const std::string& name() const { return name_; }
  void set_name(std::string name) { name_ = std::move(name); }

  void push(const Event& event) {
    uint64_t head = head_.load(std::memory_order_relaxed);
    slots_[head & mask_] = event;
    head_.store(head + 1, std::memory_order_release);
  }
  // Events still held, oldest first, and how many were overwritten.
  std::vector<Event> drain_copy() const;
  uint64_t overwritten() const;
  void clear() { head_.store(0, std::memory_order_release); }

 private:
  uint32_t id_;
  std::string name_;
  std::vector<Event> slots_;
  uint64_t mask_;
  std::atomic<uint64_t> head_{0};
};

struct ThreadInfo {
  uint32_t id;
  std::string name;
  uint64_t overwritten;
};

struct Snapshot {
  std::vector<Event> events;  // merged, ordered by time then thread
  std::vector<ThreadInfo> threads;
  uint64_t overwritten = 0;  // events lost to ring wrap-around, over all threads
};

namespace detail {
extern std::atomic<bool> enabled;
Ring& this_thread_ring();
uint64_t now_ns();
}  // namespace detail

inline bool enabled() {
  return detail::enabled.load(std::memory_order_relaxed);
}
void enable(bool on);

// Sets the capacity (as log2 of events) of rings created from now on.
void set_ring_capacity_log2(size_t capacity_log2);

inline void emit(Kind kind, uint64_t a0 = 0, uint64_t a1 = 0, uint64_t a2 = 0, uint64_t a3 = 0,
                 uint16_t flags = 0) {
  if (!enabled()) return;
  Event event;
  event.ts_ns = detail::now_ns();
  event.kind = kind;
  event.flags = flags;
  event.args = {a0, a1, a2, a3};
  Ring& ring = detail::this_thread_ring();
  event.thread = ring.id();
  ring.push(event);
}

// Names the calling thread's track ("vcpu0", "remapper", ...).
void name_this_thread(const std::string& name);
uint32_t this_thread_id();

// Reads every ring. Call at a quiescent point.
Snapshot snapshot();
// Empties every ring. Call at a quiescent point.
void reset();

// RAII for tests and runs: enable, and reset on entry.
class Session {
 public:
  Session() {
    reset();
    enable(true);
  }
  ~Session() { enable(false); }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
};

}  // namespace sptelab::trace
