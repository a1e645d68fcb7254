// The lock order of base/lock_order.h and assert_held(), checked as lockdep
// checks them: an inversion and a missing lock are reported, the order and
// nesting of equal ranks are not.
#include "base/lock_order.h"
#include "base/mutex.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "base/rwlock.h"
#include "base/spinlock.h"

namespace sptelab {
namespace {

using ::testing::HasSubstr;

// Checking on and violations collected for one test.
class LockOrderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    was_enabled_ = lock_order::enabled();
    lock_order::set_enabled(true);
    lock_order::set_violation_handler(
        [this](const std::string& what) { reports_.push_back(what); });
  }
  void TearDown() override {
    lock_order::set_violation_handler({});
    lock_order::set_enabled(was_enabled_);
  }
  std::vector<std::string> reports_;
  bool was_enabled_ = false;
};

TEST_F(LockOrderTest, TheOrderIsNotReported) {
  RwLock mmap_lock("mmap_lock", LockRank::kMmapLock);
  SpinLock ptl("ptl", LockRank::kPtl);
  SpinLock child_ptl("ptl", LockRank::kPtl);
  SpinLock mmu_lock("mmu_lock", LockRank::kMmuLock);
  SpinLock leaf("vcpu_tlb");
  mmap_lock.lock_shared();
  ptl.lock();
  child_ptl.lock();  // equal ranks nest (fork's two tables)
  mmu_lock.lock();
  leaf.lock();
  leaf.unlock();
  mmu_lock.unlock();
  child_ptl.unlock();
  ptl.unlock();
  mmap_lock.unlock_shared();
  EXPECT_TRUE(reports_.empty()) << reports_.front();
}

TEST_F(LockOrderTest, MmapLockInsideMmuLockIsReported) {
  RwLock mmap_lock("mmap_lock", LockRank::kMmapLock);
  SpinLock mmu_lock("mmu_lock", LockRank::kMmuLock);
  mmu_lock.lock();
  mmap_lock.lock_shared();
  mmap_lock.unlock_shared();
  mmu_lock.unlock();
  ASSERT_EQ(reports_.size(), 1u);
  EXPECT_THAT(reports_[0], HasSubstr("mmap_lock (mmap_lock) taken while holding mmu_lock"));
  EXPECT_THAT(reports_[0], HasSubstr("the order is mmap_lock -> PTL -> mmu_lock"));
}

TEST_F(LockOrderTest, PtlInsideMmuLockIsReported) {
  SpinLock ptl("ptl", LockRank::kPtl);
  SpinLock mmu_lock("mmu_lock", LockRank::kMmuLock);
  mmu_lock.lock();
  ptl.lock();
  ptl.unlock();
  mmu_lock.unlock();
  ASSERT_EQ(reports_.size(), 1u);
  EXPECT_THAT(reports_[0], HasSubstr("ptl (PTL) taken while holding mmu_lock"));
}

TEST_F(LockOrderTest, TheMirrorComesAfterMmuLock) {
  SpinLock mmu_lock("mmu_lock", LockRank::kMmuLock);
  Mutex window("guest_window", LockRank::kMirror);
  {
    std::lock_guard outer(mmu_lock);
    std::lock_guard inner(window);  // an spte change reaching the window
    window.assert_held();
  }
  EXPECT_TRUE(reports_.empty()) << reports_.front();
  {
    std::lock_guard outer(window);
    std::lock_guard inner(mmu_lock);
  }
  ASSERT_EQ(reports_.size(), 1u);
  EXPECT_THAT(reports_[0], HasSubstr("mmu_lock (mmu_lock) taken while holding guest_window"));
  EXPECT_THAT(reports_[0], HasSubstr("mmu_lock -> mirror"));
  window.assert_held();
  ASSERT_EQ(reports_.size(), 2u);
  EXPECT_THAT(reports_[1], HasSubstr("guest_window is not held"));
}

TEST_F(LockOrderTest, ATryIsNotAnInversion) {
  SpinLock ptl("ptl", LockRank::kPtl);
  SpinLock mmu_lock("mmu_lock", LockRank::kMmuLock);
  mmu_lock.lock();
  ASSERT_TRUE(ptl.try_lock());
  ptl.unlock();
  mmu_lock.unlock();
  EXPECT_TRUE(reports_.empty());
}

TEST_F(LockOrderTest, AssertHeldSeesThisThreadsLocksOnly) {
  SpinLock mmu_lock("mmu_lock", LockRank::kMmuLock);
  RwLock mmap_lock("mmap_lock", LockRank::kMmapLock);
  mmu_lock.assert_held();
  ASSERT_EQ(reports_.size(), 1u);
  EXPECT_THAT(reports_[0], HasSubstr("mmu_lock is not held"));
  mmap_lock.lock();
  mmu_lock.lock();
  mmu_lock.assert_held();
  mmap_lock.assert_held();
  std::thread([&] { mmu_lock.assert_held(); }).join();  // held, but by another thread
  mmu_lock.unlock();
  mmap_lock.unlock();
  EXPECT_EQ(reports_.size(), 2u);
}

}  // namespace
}  // namespace sptelab
