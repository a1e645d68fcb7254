// Range normalisation (addresses to pages of a slot), the kernel capture's
// attribution to ops by trace_marker lines, the recording format, and the
// comparison's verdicts and output.

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "base/error.h"
#include "conform/kernel.h"
#include "conform/recording.h"
#include "conform/report.h"

namespace sptelab::conform {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kBase = uint64_t{0x7f0000000000};
const SlotLayout kLayout({kBase + kBlockSize, kBase + 4 * kBlockSize, kBase + 6 * kBlockSize});

SlotRange range(Slot slot, int64_t first, int64_t end) {
  return SlotRange{slot, first, end, ""};
}

TEST(ConformRanges, AddressesBecomePagesOfTheSlotTheyOverlap) {
  const uint64_t anon = kLayout.start(Slot::kAnon);
  auto got = kLayout.to_slot_range(anon + 100 * kPageSize, anon + 116 * kPageSize);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->slot, Slot::kAnon);
  EXPECT_EQ(got->first, 100);
  EXPECT_EQ(got->end, 116);
  // A range that begins before the slot keeps its true start.
  const uint64_t memfd = kLayout.start(Slot::kMemfd);
  got = kLayout.to_slot_range(memfd - kBlockSize, memfd + kPageSize);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->slot, Slot::kMemfd);
  EXPECT_EQ(got->first, -512);
  EXPECT_EQ(got->end, 1);
  // Unaligned ends round outwards.
  got = kLayout.to_slot_range(memfd + 10, memfd + kPageSize + 1);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->first, 0);
  EXPECT_EQ(got->end, 2);
  // Next to a slot but not in it: the anon slot ends at page 1024.
  EXPECT_FALSE(kLayout.to_slot_range(anon + 1024 * kPageSize, anon + 1100 * kPageSize));
  EXPECT_FALSE(kLayout.to_slot_range(kBase, kBase + kPageSize));
}

TEST(ConformRanges, TheLayoutLiesInOne1GiBRegionFromItsPrimerOn) {
  const uint64_t gib = uint64_t{1} << 30;
  EXPECT_EQ(SlotLayout::base_after(kBase + 5), kBase + kBlockSize);
  // A layout that would cross a 1 GiB boundary starts at the boundary.
  const uint64_t start = 7 * gib - 3 * kBlockSize;
  const uint64_t base = SlotLayout::base_after(start);
  EXPECT_EQ(base, 7 * gib);
  EXPECT_LE(base + kLayoutBlocks * kBlockSize, start + (2 * kLayoutBlocks + 1) * kBlockSize);
  const SlotLayout layout = SlotLayout::at(base);
  EXPECT_EQ(layout.primer(), base);
  EXPECT_EQ(layout.start(Slot::kAnon), base + kBlockSize);
  EXPECT_EQ(layout.start(Slot::kMemfd), base + 4 * kBlockSize);
  EXPECT_EQ(layout.start(Slot::kFile), base + 6 * kBlockSize);
  EXPECT_EQ((layout.start(Slot::kFile) + slot_pages(Slot::kFile) * kPageSize - 1) / gib, 7u);
}

TEST(ConformRanges, FormatsRunsOfEqualAdjacentRangesCompactly) {
  EXPECT_EQ(format_ranges({}), "-");
  EXPECT_EQ(format_ranges({range(Slot::kAnon, 0, 512), range(Slot::kAnon, 100, 116)}),
            "anon[0,512) anon[100,116)");
  EXPECT_EQ(format_ranges({range(Slot::kMemfd, 16, 17), range(Slot::kMemfd, 17, 18),
                           range(Slot::kMemfd, 18, 19), range(Slot::kFile, 19, 20)}),
            "memfd[16,19)/1 file[19,20)");
  EXPECT_EQ(format_ranges({range(Slot::kFile, 0, 2), range(Slot::kFile, 2, 4)}), "file[0,4)/2");
}

TEST(ConformRanges, SameRangesMeansSamePagesInTheSameOrder) {
  const OpRanges kernel = {range(Slot::kAnon, 0, 512), range(Slot::kAnon, 100, 116)};
  OpRanges emulator = kernel;
  emulator[0].event = "clear";  // events are not compared
  EXPECT_TRUE(same_ranges(kernel, emulator));
  std::swap(emulator[0], emulator[1]);
  EXPECT_FALSE(same_ranges(kernel, emulator));
  EXPECT_FALSE(same_ranges(kernel, {kernel[0]}));
  EXPECT_FALSE(same_ranges(kernel, {kernel[0], range(Slot::kAnon, 100, 115)}));
}

trace::Event kernel_event(uint64_t string_index) {
  trace::Event event;
  event.kind = trace::Kind::kKernel;
  event.args = {string_index, 0, 1, ~uint64_t{0}};
  return event;
}

TEST(ConformKernelRanges, MarkersAttributeRangesToOpsAndOtherRangesAreDropped) {
  trace::KernelTrace trace;
  const uint64_t anon = kLayout.start(Slot::kAnon);
  const uint64_t file = kLayout.start(Slot::kFile);
  auto unmap = [](uint64_t start, uint64_t end) {
    return fmt::format("kvm:kvm_unmap_hva_range: mmu notifier unmap range: {:#016x} -- {:#016x}",
                       start, end);
  };
  trace.strings = {
      unmap(anon, anon + 16 * kPageSize),                     // 0: before any marker
      "?:tracing_mark_write: " + kernel_op_marker(0),         // 1
      unmap(kBase, kBase + kPageSize),                        // 2: no slot (the heap, say)
      "?:tracing_mark_write: " + kernel_op_marker(1),         // 3
      unmap(anon, anon + kBlockSize),                         // 4
      unmap(anon + 100 * kPageSize, anon + 116 * kPageSize),  // 5
      unmap(file + 8 * kPageSize, file + 16 * kPageSize),     // 6
      "?:tracing_mark_write: " + kernel_op_marker(2),         // 7: the end marker
      unmap(file, file + kPageSize),                          // 8: after the last op
  };
  for (uint64_t i = 0; i < trace.strings.size(); ++i) trace.events.push_back(kernel_event(i));
  const std::vector<OpRanges> ops = attribute_kernel_ranges(trace, kLayout, 2);
  ASSERT_EQ(ops.size(), 2u);
  EXPECT_TRUE(ops[0].empty());
  ASSERT_EQ(ops[1].size(), 3u);
  EXPECT_EQ(format_ranges(ops[1]), "anon[0,512) anon[100,116) file[8,16)");
}

// A side that returns fixed ranges.
class FixedSide final : public Side {
 public:
  explicit FixedSide(std::vector<OpRanges> ranges) : ranges_(std::move(ranges)) {}
  std::string name() const override { return "fixed"; }
  std::vector<OpRanges> run(const Script&, size_t max_ops) override {
    std::vector<OpRanges> out = ranges_;
    if (out.size() > max_ops) out.resize(max_ops);
    return out;
  }

 private:
  std::vector<OpRanges> ranges_;
};

TEST(ConformReport, PairsTheSidesAndCountsWhatDiffers) {
  const Script script = parse_script("dontneed anon 0 16\nmprotect anon 100 16 ro\n");
  FixedSide kernel(
      {{range(Slot::kAnon, 0, 16)}, {range(Slot::kAnon, 0, 512), range(Slot::kAnon, 100, 116)}});
  FixedSide emulator({{range(Slot::kAnon, 0, 16)}, {range(Slot::kAnon, 100, 116)}});
  const Report report = compare(script, kernel, emulator);
  ASSERT_EQ(report.ops.size(), 2u);
  EXPECT_TRUE(report.ops[0].agrees());
  EXPECT_FALSE(report.ops[1].agrees());
  EXPECT_EQ(report.differing(), 1u);
  const std::string table = format_table(report);
  EXPECT_THAT(table, HasSubstr("mprotect anon 100 16 ro"));
  EXPECT_THAT(table, HasSubstr("DIFFER"));
  EXPECT_THAT(table, HasSubstr("1 of 2 ops agree"));
  for (size_t start = 0, end; start < table.size(); start = end + 1) {
    end = table.find('\n', start);
    if (end == std::string::npos) end = table.size();
    EXPECT_LE(end - start, 100u) << table.substr(start, end - start);
  }
  const std::string json = format_json(report);
  EXPECT_THAT(json, HasSubstr(R"("agree": 1, "differ": 1)"));
  EXPECT_THAT(json, HasSubstr(R"("kernel": [{"slot": "anon", "first": 0, "end": 512})"));
  EXPECT_EQ(json.back(), '\n');
}

TEST(ConformReport, ManyRangesAreSummarisedToKeepTheTableWithinAHundredColumns) {
  const Script script = parse_script("punch-hole file 0 16\n");
  const OpRanges ranges = {range(Slot::kFile, 0, 4), range(Slot::kFile, 7, 8),
                           range(Slot::kFile, 4, 7), range(Slot::kFile, 8, 16)};
  FixedSide kernel({ranges});
  FixedSide emulator({ranges});
  const Report report = compare(script, kernel, emulator);
  const std::string table = format_table(report);
  EXPECT_THAT(table, HasSubstr("file[0,16) in 4 ranges"));
  for (size_t start = 0, end; start < table.size(); start = end + 1) {
    end = table.find('\n', start);
    if (end == std::string::npos) end = table.size();
    EXPECT_LE(end - start, 100u) << table.substr(start, end - start);
  }
  EXPECT_THAT(format_json(report),
              HasSubstr(R"({"slot": "file", "first": 7, "end": 8, "event": ""})"));
}

TEST(ConformReport, TheEmulatorRunsOnlyTheOpsTheKernelFinished) {
  const Script script = parse_script("touch anon 0 1\ntouch anon 1 1\ntouch anon 2 1\n");
  FixedSide kernel({{}, {}});  // interrupted after two ops
  FixedSide emulator({{}, {}, {}});
  const Report report = compare(script, kernel, emulator);
  EXPECT_EQ(report.ops.size(), 2u);
  EXPECT_EQ(report.script_ops, 3u);
}

TEST(ConformRecording, RoundTripsAndRefusesAnotherScript) {
  const Script script = parse_script("touch anon 0 4\nmunmap anon 600 8\n");
  const std::vector<OpRanges> ranges = {
      {}, {range(Slot::kAnon, 512, 1024), range(Slot::kAnon, 600, 608)}};
  const std::string text = format_recording(script, ranges, "test");
  EXPECT_THAT(text, HasSubstr("munmap anon 600 8 => anon 512 1024 anon 600 608\n"));
  const std::vector<OpRanges> back = parse_recording(text, script);
  ASSERT_EQ(back.size(), 2u);
  EXPECT_TRUE(back[0].empty());
  EXPECT_TRUE(same_ranges(back[1], ranges[1]));

  const Script other = parse_script("touch anon 0 4\nmunmap anon 600 4\n");
  try {
    parse_recording(text, other);
    ADD_FAILURE() << "a recording of another script was accepted";
  } catch (const Error& error) {
    EXPECT_THAT(error.what(), HasSubstr("recording line 4: op 'munmap anon 600 8' is not the "
                                        "script's op 2 'munmap anon 600 4'"));
  }
  EXPECT_THROW(parse_recording("touch anon 0 4 =>\n", script), Error);  // too few ops
  EXPECT_THROW(parse_recording("touch anon 0 4 => anon 0\n", script), Error);
  EXPECT_THROW(parse_recording("touch anon 0 4 => heap 0 1\n", script), Error);
  EXPECT_THROW(parse_recording("touch anon 0 4 => anon 4 2\n", script), Error);
  EXPECT_THROW(parse_recording("touch anon 0 4\n", script), Error);
}

}  // namespace
}  // namespace sptelab::conform
