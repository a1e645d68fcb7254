// What a trace file turns into: text, one line an event like `trace-cmd
// report`; Chrome/Perfetto JSON (a track per thread, notifier ranges and PTL
// holds as slices, flows from an invalidation to the zaps and fault retries
// it caused); a summary; and the window of lines around a moment that a race
// report prints under a violation. docs/tracing.md describes each.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "trace/file.h"

namespace sptelab::trace {

// ---- selecting events ------------------------------------------------------------

// Every condition given must hold.
struct Filter {
  // Events about this guest page: kinds with a gfn argument, MMIO exits on
  // it, real-kernel events naming it, and host events whose addr (or
  // start..end) covers its host address when the AddressMap knows it.
  std::optional<uint64_t> gfn;
  // Events about this host frame: a pfn or table_pfn argument equal to it,
  // or a present PTE argument (old_pte, new_pte, spte) that maps it.
  std::optional<uint64_t> pfn;
  // Field conditions (`--where detector=lost-write,cpu=1`): the event has an
  // argument of that name whose value is the number given (decimal or 0x
  // hex) or prints as the text given (a symbol such as lost-write).
  std::vector<std::pair<std::string, std::string>> fields;
  // Globs on the event name ("kvm_mmu_*"); a real-kernel event also answers
  // to "kernel" and to its own "system:name" ("kvmmmu:kvm_mmu_set_spte").
  std::vector<std::string> events;
  std::vector<std::string> threads;  // globs on the thread name ("vcpu*")
  // Window in nanoseconds after the trace's first event, both ends included.
  std::optional<uint64_t> from_ns;
  std::optional<uint64_t> to_ns;
};

// A page, frame or field value as the options take it: decimal or 0x hex.
std::optional<uint64_t> parse_number(std::string_view text);

// Whether some event kind has an argument of this name (for --where).
bool is_argument_name(std::string_view name);

// "a,b,c" -> {"a", "b", "c"}; empty items are dropped.
std::vector<std::string> split_list(std::string_view list);

// Where guest pages sit in host virtual memory. Taken from "memslot"
// metadata ("BASE_GFN NPAGES HVA", hex) when the run recorded it, else
// learned from the trace: a secondary-MMU fault (kvm_page_fault on gfn)
// is followed on its thread by the GUP of the page's host address.
class AddressMap {
 public:
  explicit AddressMap(const TraceFile& file);
  std::optional<uint64_t> hva(uint64_t gfn) const;

 private:
  struct Slot {
    uint64_t base_gfn, npages, hva;
  };
  std::vector<Slot> slots_;
  std::map<uint64_t, uint64_t> learned_;  // gfn -> hva
  std::optional<int64_t> delta_;          // hva - gfn * 4096 when every learned pair agrees
};

// "memslot" metadata value for AddressMap.
std::string memslot_metadata(uint64_t base_gfn, uint64_t npages, uint64_t hva);

// Indexes (into file.snapshot.events) of the events the filter keeps.
std::vector<size_t> select_events(const TraceFile& file, const Filter& filter);

// ---- linking invalidations to what they caused ----------------------------------

enum class LinkKind : uint8_t {
  kZap,    // the notifier call whose callback zapped (or write-protected) this spte
  kRetry,  // the invalidation that made this fault retry
};

struct Link {
  size_t from = 0;  // the notifier event (invalidation)
  size_t to = 0;    // the spte zap/protect or kvm_page_fault_retry
  LinkKind kind = LinkKind::kZap;
  // For kRetry: the invalidation's range covers the fault's page. False when
  // only a sequence-count protocol's "something was invalidated meanwhile"
  // explains the retry.
  bool covers = true;
};

// The flow-linking rule (docs/tracing.md):
//  - zap: an spte zap or protect is linked to the notifier call (range_start,
//    invalidate_range, invalidate_page, change_pte, release) that precedes it
//    on the same thread with only callback-internal events (zaps, protects,
//    interval invalidations, violations, sleep checks) in between: callbacks
//    run synchronously on the invalidating thread.
//  - retry: a kvm_page_fault_retry is linked to the invalidation that was
//    open at some moment between the fault's kvm_page_fault and the retry
//    (range_start..range_end, or the instant of a single-call placement) and
//    whose range covers the fault's host page; among several, the one that
//    began last. If none covers it, the last such invalidation of any range
//    (covers = false). With no invalidation in that window, no link.
std::vector<Link> link_invalidations(const TraceFile& file);

// ---- exports ---------------------------------------------------------------------

// One event as a text line, without the trailing newline.
std::string format_event_line(const TraceFile& file, const Event& event);

// The text view: a header (events, threads, events lost to ring overflow,
// metadata), then one line per selected event.
std::string format_text(const TraceFile& file, const Filter& filter = {});

// Counts per event kind, the 20 gfns with the most events (every gfn, in
// gfn order, with per_gfn), counts per thread, and the latencies of
// latency.h, of the selected events.
std::string format_summary(const TraceFile& file, const Filter& filter = {}, bool per_gfn = false);

// How many gfns the summary lists without per_gfn.
inline constexpr size_t kSummaryTopGfns = 20;

// Chrome/Perfetto JSON ("traceEvents"), for ui.perfetto.dev and
// chrome://tracing. Flows whose two ends are both selected are kept.
std::string format_chrome_json(const TraceFile& file, const Filter& filter = {});

// The text lines around a moment: up to `before` events earlier than ts_ns
// and up to `after` events at or after it, the first of which is marked
// "=>". The counterexample a race report prints under a violation.
std::string format_window(const TraceFile& file, uint64_t ts_ns, size_t before, size_t after);
std::string format_window(const Snapshot& snapshot, uint64_t ts_ns, size_t before, size_t after);

}  // namespace sptelab::trace
