// The kernel's ranges of the default script, recorded on a Linux 6.18 host
// with KVM (`sptelab conform --save-kernel`), replayed against the emulator:
// the comparison is checked where /dev/kvm or tracefs is missing.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <string>

#include "conform/emulator.h"
#include "conform/recording.h"
#include "conform/report.h"

namespace sptelab::conform {
namespace {

std::string recording() {
  std::ifstream file(SPTELAB_CONFORM_RECORDING);
  std::string text{std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
  EXPECT_FALSE(text.empty()) << SPTELAB_CONFORM_RECORDING;
  return text;
}

std::string differences(const Report& report) {
  std::string out;
  for (const OpResult& result : report.ops) {
    if (result.agrees()) continue;
    out += "line " + std::to_string(result.op.line) + " " + result.op.text + ": kernel " +
           format_ranges(result.kernel) + ", emulator " + format_ranges(result.emulator) + "\n";
  }
  return out;
}

TEST(ConformReplay, TheEmulatorAgreesWithTheRecordedKernelOnEveryOp) {
  const Script script = parse_script(default_script());
  RecordedSide kernel(recording(), "the recording");
  EmulatorSide emulator(mm::KernelEra::k6_18);
  const Report report = compare(script, kernel, emulator);
  ASSERT_EQ(report.ops.size(), script.ops.size());
  EXPECT_EQ(report.differing(), 0u) << differences(report);
}

// The recording is not trivially empty: the ops that change mappings show
// ranges, and the block bracket of a VMA split is there.
TEST(ConformReplay, TheRecordingHasTheRangesThatMatter) {
  const Script script = parse_script(default_script());
  const std::vector<OpRanges> kernel = parse_recording(recording(), script);
  for (size_t i = 0; i < script.ops.size(); ++i) {
    const ScriptOp& op = script.ops[i];
    if (op.kind == OpKind::kTouch || op.kind == OpKind::kMmap) {
      EXPECT_TRUE(kernel[i].empty()) << op.text;
    }
    if (op.kind == OpKind::kMunmap && op.slot == Slot::kAnon) {
      ASSERT_FALSE(kernel[i].empty()) << op.text;
      EXPECT_EQ(kernel[i].front().first, 512) << op.text;  // the second block
      EXPECT_EQ(kernel[i].front().end, 1024) << op.text;
    }
    if (op.kind == OpKind::kDontneed || op.kind == OpKind::kPunchHole) {
      EXPECT_FALSE(kernel[i].empty()) << op.text;
    }
  }
}

// One range changed in the recording: that op, and only that op, differs.
TEST(ConformReplay, AChangedKernelRangeIsReportedAsADifference) {
  const Script script = parse_script(default_script());
  std::string text = recording();
  const std::string from = "dontneed anon 0 16 => anon 0 16";
  const size_t at = text.find(from);
  ASSERT_NE(at, std::string::npos) << "the recording has no '" << from << "'";
  text.replace(at, from.size(), "dontneed anon 0 16 => anon 0 15");
  RecordedSide kernel(text, "a changed recording");
  EmulatorSide emulator(mm::KernelEra::k6_18);
  const Report report = compare(script, kernel, emulator);
  ASSERT_GE(report.differing(), 1u);
  bool found = false;
  for (const OpResult& result : report.ops) {
    if (result.op.text == "dontneed anon 0 16") found = !result.agrees();
  }
  EXPECT_TRUE(found) << differences(report);
}

// The emulator's side is deterministic: two runs give the same ranges, with
// an event on every range.
TEST(ConformReplay, TheEmulatorSideIsDeterministic) {
  const Script script = parse_script(default_script());
  EmulatorSide emulator(mm::KernelEra::k6_18);
  const std::vector<OpRanges> first = emulator.run(script, script.ops.size());
  const std::vector<OpRanges> second = emulator.run(script, script.ops.size());
  ASSERT_EQ(first.size(), script.ops.size());
  ASSERT_EQ(second.size(), first.size());
  for (size_t i = 0; i < first.size(); ++i) {
    EXPECT_TRUE(same_ranges(first[i], second[i])) << script.ops[i].text;
    for (const SlotRange& range : first[i]) EXPECT_FALSE(range.event.empty());
  }
}

}  // namespace
}  // namespace sptelab::conform
