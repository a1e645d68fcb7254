// Hand-made traces for the exporter tests: threads and events with chosen
// times, so every line and slice can be predicted exactly.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "trace/file.h"

namespace sptelab::trace::testing {

inline constexpr uint64_t kBaseNs = 1'000'000'000;  // the first event's time

class TraceBuilder {
 public:
  TraceBuilder& thread(uint32_t id, std::string name, uint64_t overwritten = 0) {
    file_.snapshot.threads.push_back({id, std::move(name), overwritten});
    file_.snapshot.overwritten += overwritten;
    return *this;
  }
  // An event `offset_ns` after kBaseNs. Add them in time order.
  TraceBuilder& at(uint64_t offset_ns, uint32_t thread, Kind kind,
                   std::array<uint64_t, 4> args = {}) {
    Event event;
    event.ts_ns = kBaseNs + offset_ns;
    event.thread = thread;
    event.kind = kind;
    event.args = args;
    file_.snapshot.events.push_back(event);
    return *this;
  }
  TraceBuilder& meta(std::string key, std::string value) {
    file_.metadata.emplace_back(std::move(key), std::move(value));
    return *this;
  }
  // A real-kernel event whose text is "system:name: fields".
  TraceBuilder& kernel(uint64_t offset_ns, const std::string& text, uint32_t cpu, uint32_t pid,
                       uint64_t gfn = ~uint64_t{0}) {
    file_.strings.push_back(text);
    Event event;
    event.ts_ns = kBaseNs + offset_ns;
    event.thread = kKernelThread;
    event.kind = Kind::kKernel;
    event.args = {file_.strings.size() - 1, cpu, pid, gfn};
    file_.snapshot.events.push_back(event);
    return *this;
  }
  const TraceFile& file() const { return file_; }
  TraceFile& file() { return file_; }

 private:
  TraceFile file_;
};

}  // namespace sptelab::trace::testing
