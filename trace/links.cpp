// AddressMap and the flow-linking rule of export.h.
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <limits>
#include <set>
#include <unordered_map>

#include <fmt/core.h>

#include "trace/export.h"

namespace sptelab::trace {
namespace {

constexpr uint64_t kPageSize = 4096;
constexpr uint64_t kNever = std::numeric_limits<uint64_t>::max();

bool is_gup(Kind kind) {
  return kind == Kind::kGupFast || kind == Kind::kGupSlow;
}

// Events a notifier callback emits while it runs: they do not end the
// callback's stretch of its thread's events.
bool inside_callback(Kind kind) {
  switch (kind) {
    case Kind::kSpteZap:
    case Kind::kSpteProtect:
    case Kind::kIntervalInvalidate:
    case Kind::kViolation:
    case Kind::kSleepInAtomic:
      return true;
    default:
      return false;
  }
}

bool zaps_sptes(Kind kind) {
  switch (kind) {
    case Kind::kNotifyRangeStart:
    case Kind::kNotifyInvalidateRange:
    case Kind::kNotifyInvalidatePage:
    case Kind::kNotifyChangePte:
    case Kind::kNotifyRelease:
      return true;
    default:
      return false;
  }
}

// One invalidation: the time it was open and the host range it covers.
struct Invalidation {
  size_t event = 0;      // its first notifier event
  size_t end_event = 0;  // its range_end, for a start/end pair that closed
  uint64_t begin_ns = 0;
  uint64_t end_ns = 0;  // kNever while still open at the end of the trace
  uint64_t start = 0;
  uint64_t end = 0;
  bool ranged = false;  // a range_start..range_end pair
};

// In time order of their beginnings.
std::vector<Invalidation> collect_invalidations(const std::vector<Event>& events) {
  std::vector<Invalidation> out;
  // Open range_start events per thread, innermost last (start/end nest).
  std::unordered_map<uint32_t, std::vector<size_t>> open;
  for (size_t i = 0; i < events.size(); ++i) {
    const Event& e = events[i];
    switch (e.kind) {
      case Kind::kNotifyRangeStart:
        open[e.thread].push_back(out.size());
        out.push_back({i, 0, e.ts_ns, kNever, e.args[0], e.args[1], true});
        break;
      case Kind::kNotifyRangeEnd: {
        auto& stack = open[e.thread];
        for (size_t k = stack.size(); k-- > 0;) {
          Invalidation& inv = out[stack[k]];
          if (inv.start == e.args[0] && inv.end == e.args[1]) {
            inv.end_ns = e.ts_ns;
            inv.end_event = i;
            stack.erase(stack.begin() + static_cast<std::ptrdiff_t>(k));
            break;
          }
        }
        break;
      }
      case Kind::kNotifyInvalidateRange:
        out.push_back({i, 0, e.ts_ns, e.ts_ns, e.args[0], e.args[1], false});
        break;
      case Kind::kNotifyInvalidatePage:
        out.push_back({i, 0, e.ts_ns, e.ts_ns, e.args[0], e.args[0] + kPageSize, false});
        break;
      case Kind::kNotifyRelease:
        out.push_back({i, 0, e.ts_ns, e.ts_ns, 0, kNever, false});
        break;
      default:
        break;
    }
  }
  return out;
}

void link_zaps(const std::vector<Event>& events, std::vector<Link>& links) {
  // Per thread: the notifier call whose callbacks are still running.
  std::unordered_map<uint32_t, size_t> current;
  for (size_t i = 0; i < events.size(); ++i) {
    const Event& e = events[i];
    if (zaps_sptes(e.kind)) {
      current[e.thread] = i;
    } else if (e.kind == Kind::kSpteZap || e.kind == Kind::kSpteProtect) {
      auto found = current.find(e.thread);
      if (found != current.end()) links.push_back({found->second, i, LinkKind::kZap, true});
    } else if (!inside_callback(e.kind)) {
      current.erase(e.thread);
    }
  }
}

// A fault in flight on one thread: its kvm_page_fault, the host page its
// GUP looked up, and the invalidations that were open when it began.
struct PendingFault {
  uint64_t gfn = 0;
  uint64_t begin_ns = 0;
  std::optional<uint64_t> hva;
  std::vector<size_t> open_at_begin;  // indexes into the invalidations
};

// The invalidation that explains a retry at retry_ns of `fault`.
std::optional<Link> explain_retry(const std::vector<Invalidation>& invalidations,
                                  const PendingFault& fault, uint64_t retry_ns, size_t retry) {
  const Invalidation* covering = nullptr;
  const Invalidation* any = nullptr;
  auto consider = [&](const Invalidation& inv) {
    if (any == nullptr || inv.begin_ns >= any->begin_ns) any = &inv;
    bool covers = fault.hva && inv.start <= *fault.hva && *fault.hva < inv.end;
    if (covers && (covering == nullptr || inv.begin_ns >= covering->begin_ns)) covering = &inv;
  };
  for (size_t k : fault.open_at_begin) consider(invalidations[k]);
  // Those that began during the fault (binary search: begin order).
  auto first =
      std::lower_bound(invalidations.begin(), invalidations.end(), fault.begin_ns,
                       [](const Invalidation& inv, uint64_t ns) { return inv.begin_ns < ns; });
  for (auto it = first; it != invalidations.end() && it->begin_ns <= retry_ns; ++it) {
    if (it->event < retry) consider(*it);
  }
  if (covering != nullptr) return Link{covering->event, retry, LinkKind::kRetry, true};
  if (any != nullptr) return Link{any->event, retry, LinkKind::kRetry, false};
  return std::nullopt;
}

void link_retries(const TraceFile& file, const std::vector<Invalidation>& invalidations,
                  std::vector<Link>& links) {
  const std::vector<Event>& events = file.snapshot.events;
  AddressMap map(file);
  // Which invalidation each event opens or closes (start/end pairs only).
  std::unordered_map<size_t, size_t> opens, closes;
  for (size_t k = 0; k < invalidations.size(); ++k) {
    if (!invalidations[k].ranged) continue;
    opens[invalidations[k].event] = k;
    if (invalidations[k].end_ns != kNever) closes[invalidations[k].end_event] = k;
  }
  std::set<size_t> open;
  std::unordered_map<uint32_t, PendingFault> faults;
  for (size_t i = 0; i < events.size(); ++i) {
    const Event& e = events[i];
    if (auto found = opens.find(i); found != opens.end()) open.insert(found->second);
    if (auto found = closes.find(i); found != closes.end()) open.erase(found->second);
    if (e.kind == Kind::kFaultBegin) {
      faults[e.thread] = {e.args[0], e.ts_ns, std::nullopt, {open.begin(), open.end()}};
    } else if (is_gup(e.kind)) {
      auto found = faults.find(e.thread);
      if (found != faults.end() && !found->second.hva) {
        found->second.hva = e.args[0] & ~(kPageSize - 1);
      }
    } else if (e.kind == Kind::kFaultRetry) {
      auto found = faults.find(e.thread);
      PendingFault fault;
      if (found != faults.end() && found->second.gfn == e.args[0]) {
        fault = std::move(found->second);
      } else {
        fault.gfn = e.args[0];
        fault.begin_ns = e.ts_ns;  // its kvm_page_fault was lost: only the retry's instant
      }
      if (!fault.hva) fault.hva = map.hva(fault.gfn);
      if (auto link = explain_retry(invalidations, fault, e.ts_ns, i)) links.push_back(*link);
      faults.erase(e.thread);
    } else if (e.kind == Kind::kFaultFixed) {
      faults.erase(e.thread);
    }
  }
}

}  // namespace

AddressMap::AddressMap(const TraceFile& file) {
  for (const auto& [key, value] : file.metadata) {
    if (key != "memslot") continue;
    Slot slot{};
    if (std::sscanf(value.c_str(), "%" SCNx64 " %" SCNx64 " %" SCNx64, &slot.base_gfn, &slot.npages,
                    &slot.hva) == 3) {
      slots_.push_back(slot);
    }
  }
  std::unordered_map<uint32_t, uint64_t> pending;  // thread -> gfn of its open fault
  std::set<int64_t> deltas;
  for (const Event& e : file.snapshot.events) {
    if (e.kind == Kind::kFaultBegin) {
      pending[e.thread] = e.args[0];
    } else if (is_gup(e.kind)) {
      auto found = pending.find(e.thread);
      if (found == pending.end()) continue;
      uint64_t hva = e.args[0] & ~(kPageSize - 1);
      learned_[found->second] = hva;
      deltas.insert(static_cast<int64_t>(hva - found->second * kPageSize));
      pending.erase(found);
    } else if (e.kind == Kind::kFaultRetry || e.kind == Kind::kFaultFixed) {
      pending.erase(e.thread);
    }
  }
  if (deltas.size() == 1) delta_ = *deltas.begin();
}

std::optional<uint64_t> AddressMap::hva(uint64_t gfn) const {
  for (const Slot& slot : slots_) {
    if (gfn >= slot.base_gfn && gfn - slot.base_gfn < slot.npages) {
      return slot.hva + (gfn - slot.base_gfn) * kPageSize;
    }
  }
  if (!slots_.empty()) return std::nullopt;  // the recorded memslots are the whole truth
  if (auto found = learned_.find(gfn); found != learned_.end()) return found->second;
  if (delta_) return static_cast<uint64_t>(*delta_ + static_cast<int64_t>(gfn * kPageSize));
  return std::nullopt;
}

std::string memslot_metadata(uint64_t base_gfn, uint64_t npages, uint64_t hva) {
  return fmt::format("{:#x} {:#x} {:#x}", base_gfn, npages, hva);
}

std::vector<Link> link_invalidations(const TraceFile& file) {
  std::vector<Link> links;
  link_zaps(file.snapshot.events, links);
  link_retries(file, collect_invalidations(file.snapshot.events), links);
  return links;
}

}  // namespace sptelab::trace
