// The trace layer repeats the value names of enums defined above it (it
// cannot depend upward). These checks fail as soon as one side changes
// without the other, value by value, including a value appended to an enum.
#include <gtest/gtest.h>

#include <linux/kvm.h>

#include <string>

#include "base/inject.h"
#include "mm/fault.h"
#include "mm/types.h"
#include "mmu_notifier/placement.h"
#include "spte/violations.h"
#include "trace/symbols.h"

namespace sptelab::trace {
namespace {

// names == {name(0), name(1), ...} and name(names.size()) is the enum's
// answer for an unknown value.
template <typename Enum, typename NameFn>
void expect_table(Kind kind, size_t arg, NameFn name, std::string_view unknown) {
  auto names = value_names(kind, arg);
  ASSERT_FALSE(names.empty()) << info(kind).name;
  for (size_t v = 0; v < names.size(); ++v) {
    EXPECT_EQ(names[v], std::string_view(name(static_cast<Enum>(v))))
        << info(kind).name << " " << v;
  }
  EXPECT_EQ(std::string_view(name(static_cast<Enum>(names.size()))), unknown)
      << info(kind).name << ": the enum has a value the trace does not name";
}

TEST(Symbols, MatchTheEnumsOfTheLayersAbove) {
  for (Kind kind : {Kind::kNotifyInvalidateRange, Kind::kNotifyRangeStart, Kind::kNotifyRangeEnd}) {
    expect_table<mm::InvalidateEvent>(kind, 2, mm::invalidate_event_name, "unknown");
  }
  for (Kind kind : {Kind::kMmOpBegin, Kind::kMmOpEnd}) {
    expect_table<mm::MmOp>(kind, 0, mm::mm_op_name, "unknown");
  }
  expect_table<mm::FaultResult>(Kind::kHostFaultDone, 2, mm::fault_result_name, "unknown");
  expect_table<mmu_notifier::Callback>(Kind::kSleepInAtomic, 0, mmu_notifier::callback_name, "?");
  expect_table<spte::ViolationKind>(Kind::kViolation, 0, spte::violation_kind_name, "unknown");
}

TEST(Symbols, DelayPointsAreTheInjectionPoints) {
  auto names = value_names(Kind::kDelayInjected, 0);
  ASSERT_EQ(names.size(), static_cast<size_t>(inject::Point::kCount));
  for (size_t i = 0; i < names.size(); ++i) {
    EXPECT_EQ(names[i], inject::name(static_cast<inject::Point>(i)));
  }
  EXPECT_EQ(arg_style(Kind::kDelayInjected, 1), ArgStyle::kNanoseconds);
}

TEST(Symbols, ExitReasonsFollowLinuxKvmH) {
  auto names = value_names(Kind::kVcpuExit, 1);
  EXPECT_EQ(names[KVM_EXIT_IO], "IO");
  EXPECT_EQ(names[KVM_EXIT_HLT], "HLT");
  EXPECT_EQ(names[KVM_EXIT_MMIO], "MMIO");
  EXPECT_EQ(names[KVM_EXIT_SHUTDOWN], "SHUTDOWN");
  EXPECT_EQ(names[KVM_EXIT_INTERNAL_ERROR], "INTERNAL_ERROR");
  EXPECT_EQ(names[KVM_EXIT_SYSTEM_EVENT], "SYSTEM_EVENT");
  EXPECT_EQ(names[KVM_EXIT_NOTIFY], "NOTIFY");
  EXPECT_EQ(names.size(), KVM_EXIT_NOTIFY + 1u);
}

// The hypervisor names exits from the same table (it had a switch of its own).
TEST(Symbols, KvmExitNameIsTheTable) {
  EXPECT_EQ(kvm_exit_name(KVM_EXIT_UNKNOWN), "UNKNOWN");
  EXPECT_EQ(kvm_exit_name(KVM_EXIT_FAIL_ENTRY), "FAIL_ENTRY");
  EXPECT_EQ(kvm_exit_name(KVM_EXIT_SYSTEM_EVENT), "SYSTEM_EVENT");
  EXPECT_EQ(kvm_exit_name(KVM_EXIT_NOTIFY + 1), "unknown");
}

TEST(Symbols, StylesFollowArgumentNames) {
  EXPECT_EQ(arg_style(Kind::kSpteInstall, 0), ArgStyle::kHex);          // gfn
  EXPECT_EQ(arg_style(Kind::kSpteInstall, 2), ArgStyle::kPte);          // spte
  EXPECT_EQ(arg_style(Kind::kPtlUnlock, 0), ArgStyle::kFrame);          // table_pfn
  EXPECT_EQ(arg_style(Kind::kPtlUnlock, 1), ArgStyle::kNanoseconds);    // hold_ns
  EXPECT_EQ(arg_style(Kind::kFaultBegin, 2), ArgStyle::kDecimal);       // seq
  EXPECT_EQ(arg_style(Kind::kNotifyRangeStart, 2), ArgStyle::kSymbol);  // event
}

}  // namespace
}  // namespace sptelab::trace
