#include <gtest/gtest.h>

#include <cstring>
#include <numeric>

#include "hypervisor/guest_physical.h"
#include "mm/phys_mem.h"
#include "tests/hypervisor/fake_memory.h"

namespace sptelab::hypervisor {
namespace {

constexpr uint64_t kGuestPhysicalPages = 16;

// A memory that answers kRetry a few times per fault, and whose access()
// fails once after each fixed fault (a zap between fault and access).
class FlakyMemory final : public spte::GuestMemory {
 public:
  explicit FlakyMemory(spte::GuestMemory& inner) : inner_(inner) {}
  spte::FaultOutcome fault(spte::Gfn gfn, bool write, uint32_t vcpu) override {
    ++faults;
    if (retries_left_ > 0) {
      --retries_left_;
      return spte::FaultOutcome::kRetry;
    }
    retries_left_ = 2;
    fail_next_access_ = ++fixed_ % 2 == 1;  // every other fixed fault loses its spte at once
    return inner_.fault(gfn, write, vcpu);
  }
  bool access(spte::Gfn gfn, bool write, const std::function<void(uint8_t*)>& fn) override {
    if (fail_next_access_) {
      fail_next_access_ = false;
      return false;
    }
    return inner_.access(gfn, write, fn);
  }
  void set_mirror(spte::Mirror* mirror) override { inner_.set_mirror(mirror); }
  uint64_t gfn_count() const override { return inner_.gfn_count(); }

  int faults = 0;

 private:
  spte::GuestMemory& inner_;
  int retries_left_ = 2;
  int fixed_ = 0;
  bool fail_next_access_ = false;
};

class GuestPhysicalTest : public ::testing::Test {
 protected:
  mm::PhysMem phys_{kGuestPhysicalPages};
  testing::FakeMemory memory_{phys_, kGuestPhysicalPages};
  GuestPhysical access_{memory_, 0};
};

TEST_F(GuestPhysicalTest, WritesAndReadsAcrossPages) {
  std::vector<uint8_t> bytes(3 * 4096);
  std::iota(bytes.begin(), bytes.end(), 0);
  ASSERT_FALSE(access_.write(0x1800, bytes.data(), bytes.size()));
  std::vector<uint8_t> back(bytes.size());
  ASSERT_FALSE(access_.read(0x1800, back.data(), back.size()));
  EXPECT_EQ(back, bytes);
  // It landed in the frames the memory maps.
  EXPECT_EQ(phys_.direct_map(memory_.pfn(1))[0x800], bytes[0]);
  EXPECT_EQ(phys_.direct_map(memory_.pfn(2))[0], bytes[0x800]);
}

TEST_F(GuestPhysicalTest, LoadAndStoreAreSingleAccesses) {
  uint64_t value = 0x1122334455667788;
  ASSERT_FALSE(access_.store(0x2008, &value, 8));
  uint32_t half = 0;
  ASSERT_FALSE(access_.load(0x200c, &half, 4));
  EXPECT_EQ(half, 0x11223344u);
  uint16_t unaligned = 0;
  ASSERT_FALSE(access_.load(0x2009, &unaligned, 2));  // falls back to a copy
  EXPECT_EQ(unaligned, 0x6677u);
}

TEST_F(GuestPhysicalTest, OutsideRamIsNoMemslotWithTheAddress) {
  uint8_t byte = 0;
  auto failure = access_.read(kGuestPhysicalPages * 4096 + 5, &byte, 1);
  ASSERT_TRUE(failure);
  EXPECT_EQ(failure->outcome, spte::FaultOutcome::kNoMemslot);
  EXPECT_EQ(failure->gpa, kGuestPhysicalPages * 4096 + 5);
  EXPECT_NE(failure->describe().find("outside guest RAM"), std::string::npos);
}

TEST_F(GuestPhysicalTest, MemslotHoleFailsWhereTheHoleStarts) {
  memory_.set_memslot_limit(3);
  std::vector<uint8_t> bytes(2 * 4096, 1);
  auto failure = access_.write(0x2000, bytes.data(), bytes.size());
  ASSERT_TRUE(failure);
  EXPECT_EQ(failure->gpa, 0x3000u);
}

TEST(GuestPhysicalRetryTest, RetriesFaultsAndZappedAccesses) {
  mm::PhysMem phys(kGuestPhysicalPages);
  testing::FakeMemory inner(phys, kGuestPhysicalPages);
  FlakyMemory flaky(inner);
  GuestPhysical access(flaky, 0);
  uint64_t value = 42;
  ASSERT_FALSE(access.store(0x3000, &value, 8));
  uint64_t back = 0;
  ASSERT_FALSE(access.load(0x3000, &back, 8));
  EXPECT_EQ(back, 42u);
  // Each access: 2 retries, a fixed fault whose access fails, then 2 more
  // retries and a fixed fault that works.
  EXPECT_EQ(access.stats().fault_retries, 8u);
  EXPECT_EQ(access.stats().access_retries, 2u);
  EXPECT_EQ(flaky.faults, 12);
}

// Answers kRetry forever, like a fault under an invalidation that never ends.
class StuckMemory final : public spte::GuestMemory {
 public:
  spte::FaultOutcome fault(spte::Gfn, bool, uint32_t) override {
    if (++faults == 100) abort->store(true);
    return spte::FaultOutcome::kRetry;
  }
  bool access(spte::Gfn, bool, const std::function<void(uint8_t*)>&) override { return false; }
  void set_mirror(spte::Mirror*) override {}
  uint64_t gfn_count() const override { return kGuestPhysicalPages; }

  int faults = 0;
  std::atomic<bool>* abort = nullptr;
};

TEST(GuestPhysicalRetryTest, AStoppingRunGivesUpOnEndlessRetries) {
  StuckMemory memory;
  std::atomic<bool> stopping = false;
  memory.abort = &stopping;
  GuestPhysical access(memory, 0, &stopping);
  uint64_t value = 0;
  auto failure = access.load(0x1000, &value, 8);
  ASSERT_TRUE(failure);
  EXPECT_EQ(failure->outcome, spte::FaultOutcome::kRetry);
  EXPECT_EQ(memory.faults, 100);
  EXPECT_NE(failure->describe().find("gave up"), std::string::npos);
}

}  // namespace
}  // namespace sptelab::hypervisor
