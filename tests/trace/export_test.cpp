// The exporters on hand-made traces: exact text lines, filters, summary,
// the counterexample window, the flow-linking rule, Capstone decoding, and
// Chrome JSON that parses and carries slices and flows.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <sstream>

#include "tests/trace/builder.h"
#include "tests/trace/json.h"
#include "trace/export.h"
#include "trace/insn.h"
#include "trace/kernel.h"
#include "trace/symbols.h"

namespace sptelab::trace {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::Json;
using testing::kBaseNs;
using ::testing::Not;
using testing::parse_json;
using testing::TraceBuilder;

constexpr uint32_t kVcpu = 1;
constexpr uint32_t kRemapper = 3;
constexpr uint64_t kHva = 0x7f0000000000;
constexpr uint64_t kPage5 = kHva + 5 * 4096;
constexpr uint64_t kPage6 = kHva + 6 * 4096;

// lock xadd qword ptr [rax], rdx
constexpr uint64_t kXaddBytes = 0x10c10f48f0;

// A remap of gfn 5's page races with a vCPU fault on it: the invalidation
// zaps the spte and makes the fault retry. Then gfn 6 faults in cleanly.
TraceBuilder race_trace(bool memslot = true) {
  TraceBuilder b;
  b.thread(kVcpu, "vcpu0").thread(kRemapper, "remapper");
  if (memslot) b.meta("memslot", memslot_metadata(0, 64, kHva));
  b.at(0, kVcpu, Kind::kVcpuExit, {0, 6, 0x401234, 0x5000})
      .at(10, kVcpu, Kind::kVcpuInsn, {0x401234, kXaddBytes, 0, 5})
      .at(20, kVcpu, Kind::kFaultBegin, {5, 1, 7, 0})
      .at(30, kVcpu, Kind::kGupFast, {kPage5, 0x42, 1, 0})
      .at(100, kRemapper, Kind::kMmOpBegin, {1, kPage5, kPage5 + 4096, 0})
      .at(110, kRemapper, Kind::kNotifyRangeStart, {kPage5, kPage5 + 4096, 1, 1})
      .at(120, kRemapper, Kind::kSpteZap, {5, 0x42067, 0, 0})
      .at(130, kRemapper, Kind::kPtlLock, {0x10, 0, 0, 0})
      .at(140, kRemapper, Kind::kPteClear, {kPage5, 0x42067, 0, 0})
      .at(150, kRemapper, Kind::kTlbFlush, {kPage5, kPage5 + 4096, 2, 0})
      .at(160, kRemapper, Kind::kPtlUnlock, {0x10, 30, 0, 0})
      .at(200, kVcpu, Kind::kFaultRetry, {5, 7, 1, 0})
      .at(300, kRemapper, Kind::kNotifyRangeEnd, {kPage5, kPage5 + 4096, 1, 0})
      .at(310, kRemapper, Kind::kMmOpEnd, {1, kPage5, kPage5 + 4096, 0})
      .at(400, kVcpu, Kind::kFaultBegin, {6, 0, 8, 0})
      .at(410, kVcpu, Kind::kGupFast, {kPage6, 0x43, 1, 0})
      .at(420, kVcpu, Kind::kSpteInstall, {6, 0, 0x43065, 0})
      .at(430, kVcpu, Kind::kFaultFixed, {6, 0x43, 0x43065, 0});
  return b;
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

std::vector<std::string> event_lines(const std::string& text) {
  std::vector<std::string> out;
  for (std::string& line : lines(text)) {
    if (!line.empty() && line[0] != '#') out.push_back(std::move(line));
  }
  return out;
}

std::vector<Kind> kinds_of(const TraceFile& file, const std::vector<size_t>& indexes) {
  std::vector<Kind> out;
  for (size_t i : indexes) out.push_back(file.snapshot.events[i].kind);
  return out;
}

// ---- text ------------------------------------------------------------------

TEST(TextExport, LinesLookLikeTraceCmdReport) {
  TraceFile file = race_trace().file();
  std::vector<std::string> text = event_lines(format_text(file));
  ASSERT_EQ(text.size(), file.snapshot.events.size());
  EXPECT_EQ(text[0],
            "             vcpu0-1 [0.000000000] kvm_exit: vcpu=0 reason=MMIO "
            "rip=0x401234 gpa=0x5000");
  EXPECT_EQ(text[1],
            "             vcpu0-1 [0.000000010] kvm_vcpu_insn: rip=0x401234 "
            "<lock xadd qword ptr [rax], rdx>");
  EXPECT_EQ(text[2],
            "             vcpu0-1 [0.000000020] kvm_page_fault: gfn=0x5 write=1 seq=7 "
            "open=0 rip=0x401234 <lock xadd qword ptr [rax], rdx>");
  EXPECT_EQ(text[4],
            "          remapper-3 [0.000000100] mm_op_begin: op=remap "
            "start=0x7f0000005000 end=0x7f0000006000");
  EXPECT_EQ(text[5],
            "          remapper-3 [0.000000110] mmu_notifier_invalidate_range_start: "
            "start=0x7f0000005000 end=0x7f0000006000 event=clear blockable=1");
  EXPECT_EQ(text[6],
            "          remapper-3 [0.000000120] kvm_mmu_zap_spte: gfn=0x5 "
            "old_spte=0x42067 (pfn=0x42 P+W+U+A+D)");
  EXPECT_EQ(text[10], "          remapper-3 [0.000000160] ptl_unlock: table_pfn=0x10 hold_ns=30ns");
  EXPECT_EQ(text[11],
            "             vcpu0-1 [0.000000200] kvm_page_fault_retry: gfn=0x5 seq=7 "
            "open=1 <- mmu_notifier_invalidate_range_start remapper-3 [0.000000110]");
  EXPECT_EQ(text[16],
            "             vcpu0-1 [0.000000420] kvm_mmu_set_spte: gfn=0x6 old_spte=0x0 "
            "spte=0x43065 (pfn=0x43 P+U+A+D)");
}

TEST(TextExport, HeaderAlwaysReportsOverflow) {
  TraceBuilder clean = race_trace();
  EXPECT_THAT(lines(format_text(clean.file()))[0],
              "# sptelab trace: 18 events, 2 threads, 0 events lost to ring overflow");
  TraceBuilder lossy;
  lossy.thread(1, "vcpu0", 84).thread(2, "remapper").at(0, 1, Kind::kCheckpoint);
  std::vector<std::string> header = lines(format_text(lossy.file()));
  EXPECT_EQ(header[0], "# sptelab trace: 1 events, 2 threads, 84 events lost to ring overflow");
  EXPECT_EQ(header[1], "#   vcpu0-1 lost its 84 oldest events");
  EXPECT_THAT(format_summary(lossy.file()), HasSubstr("84 events lost to ring overflow"));
}

TEST(TextExport, HeaderShowsMetadata) {
  TraceBuilder b = race_trace();
  b.meta("scheme", "start-end+seq").meta("kernel.task.77", "hidden");
  std::string text = format_text(b.file());
  EXPECT_THAT(text, HasSubstr("# scheme: start-end+seq\n"));
  EXPECT_THAT(text, HasSubstr("# memslot: 0x0 0x40 0x7f0000000000\n"));
  EXPECT_THAT(text, Not(HasSubstr("hidden")));
}

TEST(TextExport, RetryWithoutCoveringInvalidationSaysTheSequenceMoved) {
  TraceBuilder b;
  b.thread(kVcpu, "vcpu0").thread(kRemapper, "remapper");
  b.at(0, kVcpu, Kind::kFaultBegin, {5, 0, 1, 0})
      .at(10, kVcpu, Kind::kGupFast, {kPage5, 0x42, 1, 0})
      .at(20, kRemapper, Kind::kNotifyInvalidateRange, {kPage6, kPage6 + 4096, 1, 0})
      .at(30, kVcpu, Kind::kFaultRetry, {5, 2, 0, 0});
  EXPECT_THAT(format_text(b.file()),
              HasSubstr("<- mmu_notifier_invalidate_range remapper-3 [0.000000020] (range misses "
                        "the page: seq moved)"));
}

TEST(TextExport, SymbolsAndStyles) {
  EXPECT_EQ(format_arg(Kind::kViolation, 0, 1), "use-after-free");
  EXPECT_EQ(format_arg(Kind::kSleepInAtomic, 0, 2), "invalidate_range_start");
  EXPECT_EQ(format_arg(Kind::kHostFaultDone, 1, ~uint64_t{0}), "none");
  EXPECT_EQ(format_arg(Kind::kHostFaultDone, 2, 2), "oom");
  EXPECT_EQ(format_arg(Kind::kNotifyRangeStart, 2, 99), "99?");
  EXPECT_EQ(format_arg(Kind::kPteSet, 2, 0x1000 | 0x200), "0x1200 (pfn=0x1 MIG)");
  EXPECT_EQ(format_arg(Kind::kPteSet, 2, 0x5000 | 0x400 | 0x20), "0x5420 (pfn=0x5 A+PROTNONE)");
  EXPECT_EQ(format_arg(Kind::kFaultBegin, 2, 12), "12");
  EXPECT_EQ(describe_pte(0), "pfn=0x0 -");
}

// ---- Capstone ----------------------------------------------------------------

TEST(InsnDecoding, LockXadd) {
  const uint8_t bytes[] = {0xf0, 0x48, 0x0f, 0xc1, 0x10};
  EXPECT_EQ(decode_insn(bytes, 0x401234), "lock xadd qword ptr [rax], rdx");
}

TEST(InsnDecoding, BytesRoundTripThroughAnEvent) {
  Session session;
  const uint8_t bytes[15] = {0x48, 0x8b, 0x84, 0xc8, 0x78, 0x56, 0x34, 0x12,
                             0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0xc3};
  emit_vcpu_insn(0x1000, bytes, sizeof bytes);
  Snapshot snap = snapshot();
  ASSERT_EQ(snap.events.size(), 1u);
  EXPECT_EQ(snap.events[0].kind, Kind::kVcpuInsn);
  EXPECT_EQ(insn_bytes(snap.events[0]), std::vector<uint8_t>(bytes, bytes + 15));
  EXPECT_EQ(describe_insn(snap.events[0]), "<mov rax, qword ptr [rax + rcx*8 + 0x12345678]>");
}

TEST(InsnDecoding, UndecodableBytesAreShownRaw) {
  Event event;
  event.kind = Kind::kVcpuInsn;
  event.args = {0x1000, 0xf0, 0, 1};  // a lone lock prefix
  EXPECT_EQ(describe_insn(event), "<undecodable: f0>");
  event.args = {0x1000, 0, 0, 0};
  EXPECT_EQ(describe_insn(event), "<undecodable: no bytes>");
}

// ---- filters -------------------------------------------------------------------

TEST(Filters, GfnKeepsSpteEventsMmioExitsAndHostEventsOnItsPage) {
  TraceFile file = race_trace().file();
  Filter filter;
  filter.gfn = 5;
  EXPECT_THAT(kinds_of(file, select_events(file, filter)),
              ElementsAre(Kind::kVcpuExit, Kind::kFaultBegin, Kind::kGupFast, Kind::kMmOpBegin,
                          Kind::kNotifyRangeStart, Kind::kSpteZap, Kind::kPteClear, Kind::kTlbFlush,
                          Kind::kFaultRetry, Kind::kNotifyRangeEnd, Kind::kMmOpEnd));
  filter.gfn = 6;
  EXPECT_THAT(
      kinds_of(file, select_events(file, filter)),
      ElementsAre(Kind::kFaultBegin, Kind::kGupFast, Kind::kSpteInstall, Kind::kFaultFixed));
}

// Native mode's spte fault: KVM_RUN's EFAULT leaves exit_reason 0, and the
// exit loop records the gpa it decoded; no decoded page is gpa 0.
TEST(Filters, GfnKeepsNativeFaultExitsByTheirDecodedGpa) {
  TraceBuilder b;
  b.thread(kVcpu, "vcpu0");
  b.at(0, kVcpu, Kind::kVcpuExit, {0, 0, 0x401234, 0x5000})
      .at(10, kVcpu, Kind::kVcpuExit, {0, 0, 0x401234, 0})
      .at(20, kVcpu, Kind::kVcpuExit, {0, 2, 0x401234, 0x5000});  // KVM_EXIT_IO: no page
  TraceFile file = b.file();
  Filter filter;
  filter.gfn = 5;
  EXPECT_THAT(select_events(file, filter), ElementsAre(0u));
  filter.gfn = 0;
  EXPECT_TRUE(select_events(file, filter).empty());
}

TEST(Filters, GfnLearnsHostAddressesFromFaultsWithoutMemslotMetadata) {
  TraceFile file = race_trace(/*memslot=*/false).file();
  AddressMap map(file);
  EXPECT_EQ(map.hva(5), kPage5);
  EXPECT_EQ(map.hva(40), kHva + 40 * 4096);  // every fault agreed on one offset
  Filter filter;
  filter.gfn = 5;
  EXPECT_EQ(select_events(file, filter).size(), 11u);
}

TEST(Filters, EventNamesAreGlobsAndLists) {
  TraceFile file = race_trace().file();
  Filter filter;
  filter.events = {"kvm_page_fault*"};
  EXPECT_THAT(
      kinds_of(file, select_events(file, filter)),
      ElementsAre(Kind::kFaultBegin, Kind::kFaultRetry, Kind::kFaultBegin, Kind::kFaultFixed));
  filter.events = split_list("ptl_lock,,ptl_unlock");
  EXPECT_THAT(kinds_of(file, select_events(file, filter)),
              ElementsAre(Kind::kPtlLock, Kind::kPtlUnlock));
}

TEST(Filters, ThreadsAndTimeWindow) {
  TraceFile file = race_trace().file();
  Filter filter;
  filter.threads = {"remap*"};
  EXPECT_EQ(select_events(file, filter).size(), 9u);
  filter.threads = {"vcpu0", "nobody"};
  EXPECT_EQ(select_events(file, filter).size(), 9u);

  Filter window;
  window.from_ns = 100;
  window.to_ns = 200;
  std::vector<size_t> selected = select_events(file, window);
  ASSERT_EQ(selected.size(), 8u);
  EXPECT_EQ(file.snapshot.events[selected.front()].kind, Kind::kMmOpBegin);
  EXPECT_EQ(file.snapshot.events[selected.back()].kind, Kind::kFaultRetry);

  Filter both = window;
  both.threads = {"vcpu*"};
  EXPECT_THAT(kinds_of(file, select_events(file, both)), ElementsAre(Kind::kFaultRetry));
}

TEST(Filters, PfnKeepsFrameArgumentsAndPresentEntriesThatMapIt) {
  TraceFile file = race_trace().file();
  Filter filter;
  filter.pfn = 0x42;  // GUP's pfn, then the zapped spte and the cleared PTE that mapped it
  EXPECT_THAT(kinds_of(file, select_events(file, filter)),
              ElementsAre(Kind::kGupFast, Kind::kSpteZap, Kind::kPteClear));
  filter.pfn = 0x10;  // the page-table frame whose lock was taken
  EXPECT_THAT(kinds_of(file, select_events(file, filter)),
              ElementsAre(Kind::kPtlLock, Kind::kPtlUnlock));
  filter.pfn = 0x99;
  EXPECT_TRUE(select_events(file, filter).empty());
}

TEST(Filters, WhereComparesNumbersAndTheNamesTheTextShows) {
  TraceFile file = race_trace().file();
  Filter filter;
  filter.fields = {{"reason", "MMIO"}};
  EXPECT_THAT(kinds_of(file, select_events(file, filter)), ElementsAre(Kind::kVcpuExit));
  filter.fields = {{"reason", "6"}};  // the same exit by number
  EXPECT_THAT(kinds_of(file, select_events(file, filter)), ElementsAre(Kind::kVcpuExit));
  filter.fields = {{"pfn", "0x43"}};  // hex as the text shows it, or decimal
  EXPECT_THAT(kinds_of(file, select_events(file, filter)),
              ElementsAre(Kind::kGupFast, Kind::kFaultFixed));
  filter.fields = {{"pfn", "67"}};
  EXPECT_EQ(select_events(file, filter).size(), 2u);
  filter.fields = {{"pfn", "0x43"}, {"ok", "1"}};  // every condition holds
  EXPECT_THAT(kinds_of(file, select_events(file, filter)), ElementsAre(Kind::kGupFast));
  filter.fields = {{"reason", "IO"}};
  EXPECT_TRUE(select_events(file, filter).empty());
  EXPECT_TRUE(is_argument_name("detector"));
  EXPECT_FALSE(is_argument_name("nosuch"));
}

TEST(Filters, TextHeaderCountsWhatIsShown) {
  TraceFile file = race_trace().file();
  Filter filter;
  filter.events = {"ptl_*"};
  std::string text = format_text(file, filter);
  EXPECT_THAT(lines(text)[0], HasSubstr("18 events (2 shown)"));
  EXPECT_EQ(event_lines(text).size(), 2u);
}

TEST(Summary, CountsPerKindGfnAndThread) {
  TraceFile file = race_trace().file();
  std::string summary = format_summary(file);
  EXPECT_THAT(summary, HasSubstr("           2  kvm_page_fault\n"));
  EXPECT_THAT(summary, HasSubstr("           1  kvm_mmu_zap_spte\n"));
  EXPECT_THAT(summary,
              HasSubstr("the 2 gfns with the most events (of 2 gfns; --per-gfn lists all):\n"));
  EXPECT_THAT(summary, HasSubstr("gfn      0x5         3  (kvm_mmu_zap_spte 1, kvm_page_fault 1, "
                                 "kvm_page_fault_retry 1)\n"));
  EXPECT_THAT(summary, HasSubstr("gfn      0x6         3  (kvm_mmu_set_spte 1, kvm_page_fault 1, "
                                 "kvm_page_fault_fixed 1)\n"));
  EXPECT_THAT(summary, HasSubstr("           9  remapper-3\n"));
  EXPECT_THAT(summary, HasSubstr("           9  vcpu0-1\n"));
  Filter filter;
  filter.gfn = 6;
  EXPECT_THAT(format_summary(file, filter), HasSubstr("(of 1 gfns; --per-gfn lists all)"));
  EXPECT_THAT(format_summary(file, {}, true), HasSubstr("events per gfn (2 gfns):\n"));
}

// 100 faults taking 1..100 us (40 on gfn 7, two each on 30 others), then
// one PTL hold, invalidation, shootdown and exit each of known length.
TraceBuilder latency_trace() {
  TraceBuilder b;
  b.thread(kVcpu, "vcpu0").thread(kRemapper, "remapper");
  uint64_t t = 0;
  for (uint64_t i = 1; i <= 100; ++i) {
    const uint64_t gfn = i <= 40 ? 7 : i % 30 + 100;  // gfn 7 is the hottest
    b.at(t, kVcpu, Kind::kFaultBegin, {gfn, 0, i, 0});
    b.at(t + i * 1000, kVcpu, Kind::kFaultFixed, {gfn, 0x40, 0x40067, 0});
    t += 200000;
  }
  b.at(t, kVcpu, Kind::kVcpuExit, {0, 6, 0x401234, 0x5000})
      .at(t + 7000, kVcpu, Kind::kVcpuEntry, {0, 0, 0, 0})
      .at(t + 10, kRemapper, Kind::kNotifyRangeStart, {kPage5, kPage5 + 4096, 1, 1})
      .at(t + 20, kRemapper, Kind::kTlbFlush, {kPage5, kPage5 + 4096, 2, 0})
      .at(t + 2020, kRemapper, Kind::kTlbFlushAck, {0, kPage5, kPage5 + 4096, 0})
      .at(t + 5020, kRemapper, Kind::kTlbFlushAck, {1, kPage5, kPage5 + 4096, 0})
      .at(t + 6000, kRemapper, Kind::kPtlUnlock, {0x10, 4000, 0, 0})
      .at(t + 9010, kRemapper, Kind::kNotifyRangeEnd, {kPage5, kPage5 + 4096, 1, 0});
  return b;
}

TEST(Summary, LatencyPercentilesOfEachSpan) {
  const std::string summary = format_summary(latency_trace().file());
  EXPECT_THAT(summary, HasSubstr("latencies:\n"));
  // what, count, min, p50, p99, max (microseconds), span
  EXPECT_THAT(summary, ::testing::ContainsRegex(
                           "spte fault +100 +1\\.00 +50\\.00 +99\\.00 +100\\.00  kvm_page_fault"));
  EXPECT_THAT(summary, ::testing::ContainsRegex("invalidation +1 +9\\.00 +9\\.00"));
  EXPECT_THAT(summary, ::testing::ContainsRegex("PTL hold +1 +4\\.00"));
  EXPECT_THAT(summary, ::testing::ContainsRegex("TLB shootdown +1 +5\\.00"));
  EXPECT_THAT(summary, ::testing::ContainsRegex("vCPU exit +1 +7\\.00"));
  // The histogram: 1-2-5 buckets from 1 us to 200 us, each fault in one.
  EXPECT_THAT(summary, HasSubstr("\nspte fault (kvm_page_fault -> kvm_page_fault_fixed):\n"
                                 "    1 us - 2 us           1  #\n"));
  EXPECT_THAT(summary, ::testing::ContainsRegex("50 us - 100 us +50  #{40}\n"));
  EXPECT_THAT(summary, ::testing::ContainsRegex("100 us - 200 us +1  #\n"));
}

TEST(Summary, TopGfnsHottestFirstAndPerGfnListsAll) {
  const std::string summary = format_summary(latency_trace().file());
  EXPECT_THAT(summary, HasSubstr("the 20 gfns with the most events (of 31 gfns;"));
  EXPECT_THAT(
      summary,
      HasSubstr("most events (of 31 gfns; --per-gfn lists all):\n  gfn      0x7        80"));
  const std::string all = format_summary(latency_trace().file(), {}, true);
  EXPECT_THAT(all, HasSubstr("events per gfn (31 gfns):\n  gfn      0x7 "));
  EXPECT_THAT(all, HasSubstr("gfn     0x7d "));  // 125: beyond the top 20
}

// ---- window --------------------------------------------------------------------

TEST(Window, LinesAroundAMomentWithTheMomentMarked) {
  TraceFile file = race_trace().file();
  std::vector<std::string> window = lines(format_window(file, kBaseNs + 200, 2, 2));
  ASSERT_EQ(window.size(), 4u);
  EXPECT_THAT(window[0], HasSubstr("tlb_flush"));
  EXPECT_THAT(window[1], HasSubstr("ptl_unlock"));
  EXPECT_EQ(window[2].substr(0, 3), "=> ");
  EXPECT_THAT(window[2], HasSubstr("kvm_page_fault_retry: gfn=0x5"));
  EXPECT_THAT(window[2], HasSubstr("<- mmu_notifier_invalidate_range_start"));
  EXPECT_EQ(window[3].substr(0, 3), "   ");
  EXPECT_THAT(window[3], HasSubstr("mmu_notifier_invalidate_range_end"));
}

TEST(Window, ClampsAtTheEndsAndWorksOnASnapshot) {
  TraceFile file = race_trace().file();
  EXPECT_EQ(lines(format_window(file.snapshot, kBaseNs, 5, 1)).size(), 1u);
  EXPECT_EQ(lines(format_window(file, kBaseNs + 10000, 3, 3)).size(), 3u);
  TraceBuilder lossy;
  lossy.thread(1, "vcpu0", 5).at(0, 1, Kind::kCheckpoint);
  EXPECT_THAT(lines(format_window(lossy.file(), kBaseNs, 1, 1))[0],
              HasSubstr("5 events lost to ring overflow"));
}

// ---- links ---------------------------------------------------------------------

TEST(Links, InvalidationToItsZapsAndTheRetryItCaused) {
  TraceFile file = race_trace().file();
  std::vector<Link> links = link_invalidations(file);
  ASSERT_EQ(links.size(), 2u);
  EXPECT_EQ(links[0].kind, LinkKind::kZap);
  EXPECT_EQ(links[0].from, 5u);
  EXPECT_EQ(links[0].to, 6u);
  EXPECT_EQ(links[1].kind, LinkKind::kRetry);
  EXPECT_EQ(links[1].from, 5u);
  EXPECT_EQ(links[1].to, 11u);
  EXPECT_TRUE(links[1].covers);
}

TEST(Links, ZapAfterOtherWorkOnTheThreadIsNotTheCallbacks) {
  TraceBuilder b;
  b.thread(1, "host");
  b.at(0, 1, Kind::kNotifyInvalidatePage, {kPage5, 0, 0, 0})
      .at(10, 1, Kind::kSpteZap, {5, 0x42067, 0, 0})
      .at(20, 1, Kind::kPteClear, {kPage5, 0x42067, 0, 0})
      .at(30, 1, Kind::kSpteZap, {7, 0x44067, 0, 0});
  std::vector<Link> links = link_invalidations(b.file());
  ASSERT_EQ(links.size(), 1u);
  EXPECT_EQ(links[0].to, 1u);
}

TEST(Links, RetryPrefersTheLatestCoveringInvalidation) {
  TraceBuilder b;
  b.thread(kVcpu, "vcpu0").thread(kRemapper, "remapper").thread(4, "other");
  // One invalidation open since before the fault began (covering), a later
  // covering one, and a latest one elsewhere.
  b.at(0, kRemapper, Kind::kNotifyRangeStart, {kHva, kHva + 64 * 4096, 0, 1})
      .at(10, kVcpu, Kind::kFaultBegin, {5, 0, 1, 1})
      .at(20, kVcpu, Kind::kGupFast, {kPage5, 0x42, 1, 0})
      .at(30, 4, Kind::kNotifyInvalidatePage, {kPage5, 0, 0, 0})
      .at(40, 4, Kind::kNotifyInvalidatePage, {kPage6, 0, 0, 0})
      .at(50, kVcpu, Kind::kFaultRetry, {5, 1, 1, 0})
      .at(60, kRemapper, Kind::kNotifyRangeEnd, {kHva, kHva + 64 * 4096, 0, 0});
  std::vector<Link> links = link_invalidations(b.file());
  ASSERT_EQ(links.size(), 1u);
  EXPECT_EQ(links[0].from, 3u);
  EXPECT_TRUE(links[0].covers);

  // Without the later one, the one open across the whole fault.
  b.file().snapshot.events.erase(b.file().snapshot.events.begin() + 3);
  links = link_invalidations(b.file());
  ASSERT_EQ(links.size(), 1u);
  EXPECT_EQ(links[0].from, 0u);
}

TEST(Links, NoInvalidationDuringTheFaultMeansNoLink) {
  TraceBuilder b;
  b.thread(kVcpu, "vcpu0").thread(kRemapper, "remapper");
  b.at(0, kRemapper, Kind::kNotifyInvalidatePage, {kPage5, 0, 0, 0})
      .at(10, kVcpu, Kind::kFaultBegin, {5, 0, 1, 0})
      .at(20, kVcpu, Kind::kFaultRetry, {5, 1, 0, 0});
  EXPECT_TRUE(link_invalidations(b.file()).empty());
}

// ---- Chrome JSON ---------------------------------------------------------------

struct ChromeEvents {
  std::vector<Json> all;
  std::vector<const Json*> with_ph(const std::string& ph) const {
    std::vector<const Json*> out;
    for (const Json& e : all) {
      if (e["ph"].string() == ph) out.push_back(&e);
    }
    return out;
  }
  const Json* slice(const std::string& name) const {
    for (const Json* e : with_ph("X")) {
      if ((*e)["name"].string() == name) return e;
    }
    return nullptr;
  }
};

ChromeEvents parse_chrome(const std::string& text) {
  Json root = parse_json(text);
  EXPECT_TRUE(root.has("traceEvents"));
  ChromeEvents events;
  for (const Json& e : root["traceEvents"].array()) {
    EXPECT_TRUE(e.has("ph") && e.has("pid"));
    if (e["ph"].string() != "M") {
      EXPECT_TRUE(e["ts"].is_number());
    }
    events.all.push_back(e);
  }
  return events;
}

// X slices on one track must nest: viewers reject or misdraw partial overlaps.
void expect_slices_nest(const ChromeEvents& events) {
  std::map<std::pair<double, double>, std::vector<std::pair<double, double>>> tracks;
  for (const Json* e : events.with_ph("X")) {
    double begin = (*e)["ts"].number();
    tracks[{(*e)["pid"].number(), (*e)["tid"].number()}].push_back(
        {begin, begin + (*e)["dur"].number()});
  }
  for (auto& [track, slices] : tracks) {
    std::sort(slices.begin(), slices.end(), [](auto a, auto b) {
      return a.first != b.first ? a.first < b.first : a.second > b.second;
    });
    std::vector<double> ends;
    for (auto [begin, end] : slices) {
      while (!ends.empty() && ends.back() <= begin + 1e-9) ends.pop_back();
      if (!ends.empty()) {
        EXPECT_LE(end, ends.back() + 1e-9) << "slice [" << begin << ", " << end << ")";
      }
      ends.push_back(end);
    }
  }
}

TEST(ChromeExport, ParsesAndHasATrackPerThread) {
  TraceFile file = race_trace().file();
  ChromeEvents events = parse_chrome(format_chrome_json(file));
  std::map<double, std::string> names;
  for (const Json* e : events.with_ph("M")) {
    if ((*e)["name"].string() == "thread_name")
      names[(*e)["tid"].number()] = (*e)["args"]["name"].string();
  }
  EXPECT_EQ(names[kVcpu + 1], "vcpu0");
  EXPECT_EQ(names[kRemapper + 1], "remapper");
  // Each event once: the 5 begin/end pairs (10 events) as 5 slices, the
  // other 8 events as points.
  EXPECT_EQ(events.with_ph("X").size(), file.snapshot.events.size() - 5);
  expect_slices_nest(events);
}

TEST(ChromeExport, NotifierRangesLockHoldsAndFaultsAreSlices) {
  ChromeEvents events = parse_chrome(format_chrome_json(race_trace().file()));
  // Names without addresses; the addresses are args.
  const Json* range = events.slice("invalidate clear");
  ASSERT_NE(range, nullptr);
  EXPECT_DOUBLE_EQ((*range)["ts"].number(), 0.110);
  EXPECT_DOUBLE_EQ((*range)["dur"].number(), 0.190);
  EXPECT_EQ((*range)["tid"].number(), kRemapper + 1);
  EXPECT_EQ((*range)["args"]["start"].string(), "0x7f0000005000");
  EXPECT_EQ((*range)["args"]["end"].string(), "0x7f0000006000");
  const Json* ptl = events.slice("ptl");
  ASSERT_NE(ptl, nullptr);
  EXPECT_DOUBLE_EQ((*ptl)["dur"].number(), 0.030);
  EXPECT_EQ((*ptl)["args"]["hold_ns"].string(), "30ns");
  EXPECT_EQ((*ptl)["args"]["table_pfn"].string(), "0x10");
  const Json* op = events.slice("remap");
  ASSERT_NE(op, nullptr);
  EXPECT_DOUBLE_EQ((*op)["dur"].number(), 0.210);
  const Json* fault = events.slice("spte fault (retry)");
  ASSERT_NE(fault, nullptr);
  EXPECT_EQ((*fault)["tid"].number(), kVcpu + 1);
  EXPECT_DOUBLE_EQ((*fault)["dur"].number(), 0.180);
  EXPECT_EQ((*fault)["args"]["gfn"].string(), "0x5");
  // ... and not again as points of their own.
  EXPECT_EQ(events.slice("mmu_notifier_invalidate_range_start"), nullptr);
  EXPECT_EQ(events.slice("kvm_page_fault_retry"), nullptr);
  // Point events: their own slice, never past the thread's next event.
  const Json* zap = events.slice("kvm_mmu_zap_spte");
  ASSERT_NE(zap, nullptr);
  EXPECT_DOUBLE_EQ((*zap)["dur"].number(), 0.010);
  EXPECT_EQ((*zap)["args"]["gfn"].string(), "0x5");
  const Json* install = events.slice("kvm_mmu_set_spte");
  ASSERT_NE(install, nullptr);
  EXPECT_DOUBLE_EQ((*install)["dur"].number(), 0.010);
  const Json* insn = events.slice("kvm_vcpu_insn");
  ASSERT_NE(insn, nullptr);
  EXPECT_EQ((*insn)["args"]["insn"].string(), "<lock xadd qword ptr [rax], rdx>");
}

TEST(ChromeExport, FlowsGoFromTheInvalidationToTheZapAndTheRetry) {
  ChromeEvents events = parse_chrome(format_chrome_json(race_trace().file()));
  std::vector<const Json*> starts = events.with_ph("s");
  std::vector<const Json*> finishes = events.with_ph("f");
  ASSERT_EQ(starts.size(), 2u);
  ASSERT_EQ(finishes.size(), 2u);
  std::map<double, const Json*> finish_by_id;
  for (const Json* f : finishes) {
    EXPECT_EQ((*f)["bp"].string(), "e");
    finish_by_id[(*f)["id"].number()] = f;
  }
  for (const Json* s : starts) {
    const Json* f = finish_by_id.at((*s)["id"].number());
    EXPECT_EQ((*s)["tid"].number(), kRemapper + 1);
    // 1 ns into the invalidation's slice [0.110, 0.300].
    EXPECT_DOUBLE_EQ((*s)["ts"].number(), 0.111);
    if ((*s)["name"].string() == "invalidation->retry") {
      EXPECT_EQ((*f)["tid"].number(), kVcpu + 1);
      EXPECT_DOUBLE_EQ((*f)["ts"].number(), 0.021);  // 1 ns into the fault's slice [0.02, 0.2]
    } else {
      EXPECT_EQ((*s)["name"].string(), "invalidation->zap");
      EXPECT_EQ((*f)["tid"].number(), kRemapper + 1);
      EXPECT_DOUBLE_EQ((*f)["ts"].number(), 0.125);
    }
  }
}

TEST(ChromeExport, FlowsNeedBothEndsSelected) {
  Filter filter;
  filter.threads = {"remapper"};
  ChromeEvents events = parse_chrome(format_chrome_json(race_trace().file(), filter));
  EXPECT_EQ(events.with_ph("s").size(), 1u);  // the zap's, not the retry's
  for (const Json* e : events.with_ph("X")) EXPECT_EQ((*e)["tid"].number(), kRemapper + 1);
}

TEST(ChromeExport, CrossedPairsBecomeAsyncSlices) {
  TraceBuilder b;
  b.thread(1, "host");
  b.at(0, 1, Kind::kPtlLock, {0x10, 0, 0, 0})
      .at(10, 1, Kind::kPtlLock, {0x11, 0, 0, 0})
      .at(20, 1, Kind::kPtlUnlock, {0x10, 20, 0, 0})
      .at(30, 1, Kind::kPtlUnlock, {0x11, 20, 0, 0});
  ChromeEvents events = parse_chrome(format_chrome_json(b.file()));
  ASSERT_EQ(events.with_ph("b").size(), 1u);
  ASSERT_EQ(events.with_ph("e").size(), 1u);
  EXPECT_EQ((*events.with_ph("b")[0])["name"].string(), "ptl");
  EXPECT_EQ((*events.with_ph("b")[0])["args"]["table_pfn"].string(), "0x11");
  EXPECT_EQ((*events.with_ph("b")[0])["id"].number(), (*events.with_ph("e")[0])["id"].number());
  ASSERT_NE(events.slice("ptl"), nullptr);
  EXPECT_EQ((*events.slice("ptl"))["args"]["table_pfn"].string(), "0x10");
  expect_slices_nest(events);
}

TEST(ChromeExport, EscapesNamesAndCarriesMetadataAndKernelTracks) {
  TraceBuilder b;
  b.thread(1, "we\"ird\\name\t\x01").at(0, 1, Kind::kCheckpoint, {1, 2, 0, 0});
  b.kernel(5, "kvm:kvm_exit: vcpu 0 reason \"IO\"", 1, 4242).meta("scheme", "none+naive");
  b.meta("kernel.task.4242", "sptelab");
  Json root = parse_json(format_chrome_json(b.file()));
  EXPECT_EQ(root["otherData"]["scheme"].string(), "none+naive");
  EXPECT_EQ(root["otherData"]["lost_to_ring_overflow"].string(), "0");
  bool thread_named = false, kernel_event = false, kernel_track = false;
  for (const Json& e : root["traceEvents"].array()) {
    if (e["ph"].string() == "M" && e["name"].string() == "thread_name") {
      std::string name = e["args"]["name"].string();
      thread_named |= name == "we\"ird\\name\t\x01";
      kernel_track |= name == "sptelab-4242" && e["pid"].number() == 2;
    }
    if (e["ph"].string() == "i") {
      kernel_event = e["name"].string() == "kvm:kvm_exit" &&
                     e["args"]["fields"].string() == "vcpu 0 reason \"IO\"" &&
                     e["tid"].number() == 4242 && e["pid"].number() == 2;
    }
  }
  EXPECT_TRUE(thread_named);
  EXPECT_TRUE(kernel_event);
  EXPECT_TRUE(kernel_track);
}

// ---- real-kernel events in the text view and filters ----------------------------

TEST(KernelEvents, ShowFilterAndSummarise) {
  TraceBuilder b;
  b.thread(1, "vcpu0").at(0, 1, Kind::kSpteInstall, {5, 0, 0x42067, 0});
  b.kernel(1000, "kvmmmu:kvm_mmu_set_spte: gfn 5 spte 42067 (rw-u) level 1 at 0", 1, 4242, 5)
      .kernel(2000, "kvm:kvm_exit: vcpu 0 reason IO rip 0x1000", 1, 4242);
  b.meta("kernel.task.4242", "vcpu0");
  TraceFile file = b.file();
  std::vector<std::string> text = event_lines(format_text(file));
  ASSERT_EQ(text.size(), 3u);
  EXPECT_EQ(text[1],
            "          vcpu0-4242 [0.000001000] kvmmmu:kvm_mmu_set_spte: gfn 5 spte "
            "42067 (rw-u) level 1 at 0 cpu=1");
  Filter filter;
  filter.gfn = 5;
  EXPECT_EQ(select_events(file, filter).size(), 2u);
  filter = {};
  filter.events = {"kernel"};
  EXPECT_EQ(select_events(file, filter).size(), 2u);
  filter.events = {"kvm:*"};
  EXPECT_EQ(select_events(file, filter).size(), 1u);
  filter.events = {"kvm_mmu_set_spte", "kvmmmu:kvm_mmu_set_spte"};
  EXPECT_EQ(select_events(file, filter).size(), 2u);
  EXPECT_THAT(format_summary(file), HasSubstr("           1  kvm:kvm_exit\n"));
}

}  // namespace
}  // namespace sptelab::trace
