#include "scenarios/race.h"

#include <sys/resource.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <exception>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "base/error.h"
#include "base/interrupt.h"
#include "base/json.h"
#include "base/sched.h"
#include "base/spinlock.h"
#include "base/table.h"
#include "mm/host_cpu.h"
#include "mm/ops.h"
#include "scenarios/engine.h"
#include "scenarios/gate.h"
#include "trace/export.h"
#include "trace/file.h"
#include "trace/kernel.h"
#include "trace/trace.h"

namespace sptelab::scenarios {
namespace {

using Clock = std::chrono::steady_clock;
constexpr uint64_t kRemapperOwner = 0xffff;  // lock owner id of the remapper
constexpr size_t kMaxExamples = 8;
constexpr uint64_t kLockAttempts = 4000;
constexpr uint64_t kOpsPerPage = 4;

RaceLayout layout_for(const host::Lab& lab) {
  const uint64_t pages = lab.config().guest_pages;
  RaceLayout layout;
  layout.control_gpa = (pages - 16) * mm::kPageSize;
  layout.target_gpa = (pages - 15) * mm::kPageSize;
  layout.version_gpa = (pages - SPTELAB_RACE_VERSION_PAGES) * mm::kPageSize;
  return layout;
}

spte::Gfn gfn_of(uint64_t gpa) {
  return gpa >> mm::kPageShift;
}

// Everything the remapper thread does, and what it finds.
class Remapper {
 public:
  Remapper(host::Lab& lab, const RaceConfig& config, const RaceLayout& layout, RaceResult& result)
      : lab_(lab),
        config_(config),
        layout_(layout),
        result_(result),
        cpu_(*lab.mm, 100),
        host_{cpu_, lab.guest_hva()},
        start_(Clock::now()) {}

  void initialise_pages() {
    for (size_t offset = 0; offset < mm::kPageSize; offset += 8) {
      host_.store(layout_.control_gpa + offset, 0);
    }
    host_.store(layout_.control(offsetof(sptelab_race_control, scenario)),
                config_.scenario == ScenarioKind::kCoherence  ? SPTELAB_RACE_COHERENCE
                : config_.scenario == ScenarioKind::kLockfree ? SPTELAB_RACE_LOCKFREE
                                                              : SPTELAB_RACE_STALE_SPTE);
    host_.store(layout_.control(offsetof(sptelab_race_control, native)),
                config_.backend == Backend::kKvm && config_.native ? 1 : 0);
    host_.store(layout_.control(offsetof(sptelab_race_control, target_gfn)),
                gfn_of(layout_.target_gpa));
    host_.store(layout_.control(offsetof(sptelab_race_control, version_gfn)),
                gfn_of(layout_.version_gpa));
    host_.store(layout_.control(offsetof(sptelab_race_control, workers)), config_.vcpus);
    host_.store(layout_.lock(), 0);
    host_.store(layout_.counter(), 0);
    for (uint32_t w = 0; w < SPTELAB_RACE_MAX_WORKERS; ++w) host_.store(layout_.count(w), 0);
    if (config_.scenario == ScenarioKind::kLockfree && config_.op == host::HostOp::kRemap) {
      // The other file page the remap alternates with starts clean too (a
      // new page-cache page holds whatever its frame held before).
      const spte::Gfn target = gfn_of(layout_.target_gpa);
      const mm::Pfn spare = lab_.file->get_page(lab_.spare_file_index(target));
      if (spare != mm::kNoPfn) {
        uint64_t* slots = counts(spare);
        for (uint32_t w = 0; w < SPTELAB_RACE_MAX_WORKERS; ++w) slots[w] = 0;
        lab_.phys.put(spare);
      }
    }
    for (uint32_t page = 0; page < SPTELAB_RACE_VERSION_PAGES; ++page) {
      host_.store(layout_.version_page(page), 0);
    }
  }

  // The run's time limit (--duration); injected delays end there too.
  Clock::time_point deadline() const {
    return start_ + std::chrono::duration_cast<Clock::duration>(
                        std::chrono::duration<double>(config_.max_seconds));
  }

  void run(const ProgressFn& progress) {
    ThreadRole role(Role::kRemapper);
    trace::name_this_thread("remapper");
    const auto deadline = this->deadline();
    for (uint64_t i = 0; i < config_.operations; ++i) {
      if (Clock::now() > deadline) {
        result_.timed_out = !config_.for_duration;
        break;
      }
      if (interrupt::requested() != 0) break;  // SIGINT/SIGTERM: report what ran
      if (config_.backend == Backend::kKvm && config_.native) {
        wait_for_native_fault();
      } else {
        wait_for_guest_fault();
      }
      if (config_.scenario == ScenarioKind::kCoherence) {
        coherence_step(i);
      } else if (config_.scenario == ScenarioKind::kLockfree) {
        lockfree_step(i);
      } else {
        stale_spte_step(i);
      }
      faults_seen_ = lab_.mmu->stats().faults;
      ++result_.operations;
      check_detectors(i);
      if (config_.stop_at_first_violation && result_.first_violation_ms >= 0) break;
      if (progress && (i % 64 == 0 || i + 1 == config_.operations)) {
        progress(config_, i + 1, config_.operations);
      }
    }
    result_.seconds = ms_since(start_) / 1000.0;
  }

  void stop() { host_.store(layout_.control(offsetof(sptelab_race_control, stop)), 1); }

  uint64_t counter() { return host_.load(layout_.counter()); }
  // coherence: the counter plus the values punch-hole discarded with it.
  uint64_t counted() { return counter() + discarded_counter_; }
  uint64_t control(size_t offset) { return host_.load(layout_.control(offset)); }
  uint64_t finished_work(uint32_t workers) {
    uint64_t sum = 0;
    for (uint32_t w = 0; w < workers; ++w) sum += host_.load(layout_.done(w));
    return sum;
  }
  // coherence-lockfree: increments a worker finished that its slot in the
  // host's page does not hold. `done` is read before the slot: an increment
  // lands before it is counted, so a shortfall is a loss, never a race.
  uint64_t lost_lockfree(uint32_t workers) {
    uint64_t lost = 0;
    for (uint32_t w = 0; w < workers; ++w) {
      uint64_t done = host_.load(layout_.done(w));
      uint64_t held = host_.load(layout_.count(w)) + discarded_counts_[w];
      if (held < done) lost += done - held;
    }
    return lost;
  }
  uint64_t misplaced() const { return misplaced_; }
  uint64_t writes_after_wrprotect() const { return writes_after_wrprotect_; }

  // At the moment the new page becomes the mapping's: the old frame's
  // counters move into the new frame. From here on no correct scheme lets a
  // vCPU write the old frame. The 2.6.27 populate switches the PTE under
  // one PTL and drops it with the new page mapped (the after-unlock point
  // names it). Since 4.0 remap is munmap's zap with all its notifiers under
  // the mmap write lock, then a populate fault: a vCPU write to the old frame
  // before the zap's last notifier has run is a write from before the remap
  // (range-after invalidates only after the zap's unlock), so the fold waits
  // for remap to return (lockfree_step) and this observer stays unarmed.
  PointObserver fold_observer() {
    return {inject::Point::kHostAfterPtlUnlock,
            [this](inject::Point, const inject::Context& context) {
              if (ThreadRole::current() != Role::kRemapper || !fold_armed_) return;
              if (context.addr != fold_hva_ || context.pfn != fold_to_) return;
              fold_counters();
            }};
  }
  // punch-hole drops the page and its counters with it. Once the page has
  // left the page cache and every mapping (truncate_cached_page's release
  // point, the only one that names no address), no correct scheme lets a
  // vCPU write it: what it holds then is what the hole discarded, and is
  // counted aside before the frame is freed. A write after that came
  // through a stale spte and is lost.
  PointObserver discard_observer() {
    return {inject::Point::kHostBeforeRelease,
            [this](inject::Point, const inject::Context& context) {
              if (ThreadRole::current() != Role::kRemapper || !discard_armed_) return;
              if (context.addr != 0) return;  // the zap's release point, not the truncation's
              discard_counters(context.pfn);
            }};
  }
  void note(const std::string& example) {
    if (result_.examples.size() < kMaxExamples) result_.examples.push_back(example);
  }
  void saw_violation() {
    if (result_.first_violation_ms < 0) result_.first_violation_ms = ms_since(start_);
  }

 private:
  // Moves the old frame's counters into the new one (once per operation).
  void fold_counters() {
    fold_armed_ = false;
    auto* from = counts(fold_from_);
    auto* to = counts(fold_to_);
    for (uint32_t w = 0; w < SPTELAB_RACE_MAX_WORKERS; ++w) {
      uint64_t moved = __atomic_exchange_n(from + w, 0, __ATOMIC_SEQ_CST);
      if (moved) __atomic_fetch_add(to + w, moved, __ATOMIC_SEQ_CST);
    }
  }

  void discard_counters(mm::Pfn pfn) {
    discard_armed_ = false;
    uint64_t* from = counts(pfn);
    for (uint32_t w = 0; w < SPTELAB_RACE_MAX_WORKERS; ++w) {
      discarded_counts_[w] += __atomic_exchange_n(from + w, 0, __ATOMIC_SEQ_CST);
    }
  }

  uint32_t workers() const {
    return config_.vcpus + (is_coherence(config_.scenario) && config_.host_thread ? 1 : 0);
  }

  // The previous operation zapped the guest's mapping; the next one is
  // interesting only once a vCPU has come back for the page (a fault has
  // begun, and may still be in flight). On a loaded 2-core machine the vCPU
  // threads can otherwise sleep through many operations. Bounded, so a
  // guest that stopped faulting (a stuck or stopped vCPU) does not stall us.
  void wait_for_guest_fault() {
    if (sched::active()) {
      wait_scheduled([this] { return lab_.mmu->stats().faults != faults_seen_; });
      return;
    }
    const auto until = Clock::now() + std::chrono::milliseconds(2);
    for (unsigned spins = 1; lab_.mmu->stats().faults == faults_seen_ && Clock::now() < until;
         ++spins) {
      if (spins % 256 == 0) {
        std::this_thread::yield();
      } else {
        cpu_relax();
      }
    }
  }

  // Native vCPUs come back for the page within microseconds when they run
  // at all. Spin (never yield: on a loaded machine a yield hands the core
  // away for a whole slice) for at most 50 us until a vCPU has begun a
  // fault since the last operation: the next one then overlaps a fault in
  // flight or meets a vCPU holding the page (waiting for the fault to
  // complete would pace the remapper by the ~50 us a native fault costs).
  void wait_for_native_fault() {
    const auto until = Clock::now() + std::chrono::microseconds(50);
    while (lab_.mmu->stats().faults == faults_seen_ && Clock::now() < until) cpu_relax();
  }

  // A scheduled run's wait: the others step while this thread is disabled,
  // for a bounded number of rounds (the clock would make the run's length,
  // and so its counts, depend on the machine).
  template <typename Done>
  void wait_scheduled(Done done) {
    constexpr int kRounds = 64;
    for (int round = 0; round < kRounds && !done(); ++round) sched::relax(this, "remapper_wait");
  }

  void coherence_step(uint64_t i) {
    const spte::Gfn target = gfn_of(layout_.target_gpa);
    if (config_.op == host::HostOp::kRemap) {
      remap_under_lock(target, i);
    } else if (config_.op == host::HostOp::kPunchHole) {
      punch_under_lock(target, i);
    } else {
      result_.operations_applied += apply_op(target, i) ? 1 : 0;
    }
  }

  // The op on `gfn`; mprotect and mkclean hold their write-protected window
  // open for the detectors.
  bool apply_op(spte::Gfn gfn, uint64_t i) {
    if (config_.op != host::HostOp::kMprotect && config_.op != host::HostOp::kMkclean) {
      return host::apply_host_op(lab_, config_.op, gfn, i);
    }
    const uint64_t hva = lab_.hva_of(gfn);
    if (config_.op == host::HostOp::kMkclean) {
      if (!host::apply_host_op(lab_, host::HostOp::kMkclean, gfn, i)) return false;
      check_write_protected(gfn, hva);
      return true;
    }
    if (!mm::mprotect(*lab_.mm, hva, mm::kPageSize, mm::kProtRead)) return false;
    check_write_protected(gfn, hva);
    return mm::mprotect(*lab_.mm, hva, mm::kPageSize, mm::kProtRead | mm::kProtWrite);
  }

  // After mprotect(PROT_READ) or page_mkclean() has returned, no write may
  // reach the frame until the program gives write back (mprotect) or a write
  // fault makes the PTE writable and dirty again (mkclean: do_wp_page()).
  // Holds the window open until the vCPUs have finished some work (or 50
  // us), audits the sptes, and compares the words the vCPUs write: a change
  // while the host PTE stayed read-only came through an spte that kept its
  // write permission, and mkclean's writeback would never save it.
  void check_write_protected(spte::Gfn gfn, uint64_t hva) {
    const mm::Pte protected_pte = lab_.mm->read_pte_lockless(hva);
    if (!protected_pte.present() || protected_pte.writable()) return;  // refaulted already
    const bool writes = gfn == gfn_of(layout_.target_gpa) && is_coherence(config_.scenario);
    std::vector<uint64_t> before;
    if (writes) before = vcpu_words(protected_pte.pfn());
    wait_for_vcpu_work(std::chrono::microseconds(50));
    if (std::string found = audit_sptes(); !found.empty()) {
      note(fmt::format("{} #{}: with gfn {:#x} write-protected, the auditor found {}",
                       host::host_op_name(config_.op), result_.operations, gfn, found));
    }
    if (!writes) return;
    const std::vector<uint64_t> after = vcpu_words(protected_pte.pfn());
    // Read after the words: a legitimate write fault makes the PTE writable
    // before its spte exists, so a write it allowed shows here.
    if (after == before || lab_.mm->read_pte_lockless(hva).raw() != protected_pte.raw()) return;
    if (writes_after_wrprotect_++ > 0) return;  // the log keeps the first; the column counts all
    report(spte::ViolationKind::kWriteAfterWrprotect, gfn,
           fmt::format("a vCPU wrote gfn {:#x} after {} had write-protected it, with the host "
                       "PTE still read-only",
                       gfn, host::host_op_name(config_.op)));
  }

  // The words of the target page only the vCPUs write: the lock and counter
  // (coherence) and the vCPUs' counter slots (coherence-lockfree); the host
  // thread's slot is left out, its writes go through the host PTE.
  std::vector<uint64_t> vcpu_words(mm::Pfn pfn) {
    const auto* target = reinterpret_cast<const uint64_t*>(lab_.phys.direct_map(pfn));
    const size_t words = offsetof(sptelab_race_target, counts) / 8 + config_.vcpus;
    std::vector<uint64_t> values(words);
    for (size_t w = 0; w < words; ++w) values[w] = __atomic_load_n(target + w, __ATOMIC_ACQUIRE);
    return values;
  }

  // Spins until the vCPUs have finished two more units of work (one begun
  // and finished inside the window), or `bound`.
  void wait_for_vcpu_work(std::chrono::microseconds bound) {
    const uint64_t start = finished_work(config_.vcpus);
    if (sched::active()) {
      wait_scheduled([&] { return finished_work(config_.vcpus) >= start + 2; });
      return;
    }
    const auto until = Clock::now() + bound;
    while (finished_work(config_.vcpus) < start + 2 && Clock::now() < until) cpu_relax();
  }

  // remap_file_pages does not carry content along: the application moving a
  // page around the page cache copies it first, under its own lock, and
  // releases the lock through the new page. The abandoned copy's lock is
  // released too, so a worker still using it (a stale spte) carries on there
  // and its increments are lost to everyone else.
  void remap_under_lock(spte::Gfn target, uint64_t i) {
    if (!try_take_lock(host_, layout_, kRemapperOwner, kLockAttempts)) return;
    enter_critical(host_, layout_);
    const uint64_t hva = lab_.hva_of(target);
    const mm::Pte old_pte = lab_.mm->read_pte_lockless(hva);
    const uint64_t new_index = i % 2 == 0 ? lab_.spare_file_index(target) : target;
    const mm::Pfn fresh = lab_.file->get_page(new_index);
    bool applied = false;
    // Not onto the page already mapped: after an operation that could not
    // take the lock, the alternation (even: spare, odd: target) names it,
    // and zeroing the "old" page's lock word below would then release the
    // live lock under a worker holding it (CI's loaded run: lost and double
    // under start-end+seq-count).
    if (fresh != mm::kNoPfn && old_pte.present() && old_pte.pfn() != fresh) {
      copy_words(old_pte.pfn(), fresh, 2);
      applied = mm::remap_file_page(*lab_.mm, hva, new_index);
    }
    if (fresh != mm::kNoPfn) lab_.phys.put(fresh);
    leave_critical(host_, layout_);
    host_.store(layout_.lock(), 0);
    if (applied) {
      __atomic_store_n(reinterpret_cast<uint64_t*>(lab_.phys.direct_map(old_pte.pfn())), 0,
                       __ATOMIC_RELEASE);
      ++result_.operations_applied;
    }
  }

  // An application punching a hole under its own lock: the counter it holds
  // there is final (no worker is inside), and is what the hole discards.
  // The lock word goes with the page: the hole's new page reads zero, an
  // unlocked lock and a zero counter, so the punch itself releases the
  // lock. A worker still on the old page (a stale spte) finds it locked
  // forever, or freed under it.
  void punch_under_lock(spte::Gfn target, uint64_t i) {
    if (!try_take_lock(host_, layout_, kRemapperOwner, kLockAttempts)) return;
    enter_critical(host_, layout_);
    // Reading it faulted the page into the cache: the punch drops it.
    discarded_counter_ += counter();
    leave_critical(host_, layout_);
    result_.operations_applied += host::apply_host_op(lab_, config_.op, target, i) ? 1 : 0;
  }

  uint64_t* counts(mm::Pfn pfn) {
    return reinterpret_cast<uint64_t*>(lab_.phys.direct_map(pfn) +
                                       offsetof(sptelab_race_target, counts));
  }

  // coherence-lockfree: the op, without the application's lock. migrate,
  // cow and ksm carry the content themselves; remap installs a page of its
  // own, so the fold observer moves the counters at the PTE switch.
  void lockfree_step(uint64_t i) {
    const spte::Gfn target = gfn_of(layout_.target_gpa);
    if (config_.op == host::HostOp::kPunchHole) {
      discard_armed_ = true;
      result_.operations_applied += apply_op(target, i) ? 1 : 0;
      discard_armed_ = false;
      return;
    }
    if (config_.op != host::HostOp::kRemap) {
      result_.operations_applied += apply_op(target, i) ? 1 : 0;
      return;
    }
    const uint64_t hva = lab_.hva_of(target);
    const mm::Pte old_pte = lab_.mm->read_pte_lockless(hva);
    const uint64_t new_index = i % 2 == 0 ? lab_.spare_file_index(target) : target;
    const mm::Pfn fresh = lab_.file->get_page(new_index);
    if (fresh == mm::kNoPfn) return;
    if (old_pte.present() && old_pte.pfn() != fresh) {
      // The fresh frame left the host's page table at an earlier fold, when
      // its counters were moved out: anything on it now came through a stale
      // spte, and is lost to everyone else.
      uint64_t* stale = counts(fresh);
      for (uint32_t w = 0; w < SPTELAB_RACE_MAX_WORKERS; ++w) {
        misplaced_ += __atomic_exchange_n(stale + w, 0, __ATOMIC_SEQ_CST);
      }
      fold_hva_ = hva;
      fold_from_ = old_pte.pfn();
      fold_to_ = fresh;
      const bool remap_zaps = mm::era_remap_file_pages_emulated(lab_.mm->era());
      fold_armed_ = !remap_zaps;
      const bool applied = mm::remap_file_page(*lab_.mm, hva, new_index);
      if (applied) ++result_.operations_applied;
      if (applied && remap_zaps) fold_counters();
      fold_armed_ = false;
    }
    lab_.phys.put(fresh);
  }

  void copy_words(mm::Pfn from, mm::Pfn to, size_t words) {
    auto* src = reinterpret_cast<uint64_t*>(lab_.phys.direct_map(from));
    auto* dst = reinterpret_cast<uint64_t*>(lab_.phys.direct_map(to));
    for (size_t w = 0; w < words; ++w) {
      __atomic_store_n(dst + w, __atomic_load_n(src + w, __ATOMIC_ACQUIRE), __ATOMIC_RELEASE);
    }
  }

  // One page changes per operation, a few operations in a row on the same
  // page (so a fault that started under one operation can meet the next);
  // then a new version is written through the host mapping and published,
  // and every spte is audited.
  void stale_spte_step(uint64_t i) {
    const uint32_t page = static_cast<uint32_t>((i / kOpsPerPage) % SPTELAB_RACE_VERSION_PAGES);
    const spte::Gfn gfn = gfn_of(layout_.version_page(page));
    const uint64_t previous = host_.load(layout_.published(page));
    host_.store(layout_.published(page), previous | SPTELAB_RACE_TRANSIENT);
    result_.operations_applied += apply_op(gfn, i) ? 1 : 0;
    const uint64_t version = ++version_;
    host_.store(layout_.version_page(page), version);
    host_.store(layout_.published(page), version);
    if (std::string found = audit_sptes(); !found.empty()) {
      note(fmt::format("after {} #{} of gfn {:#x}: the auditor found {}",
                       host::host_op_name(config_.op), i, gfn, found));
    }
  }

  // Audits every spte; says what it found in the words of the detectors
  // that count it (an spte on a freed frame is a use-after-free, not a
  // stale spte), or nothing.
  std::string audit_sptes() {
    const spte::Mmu::AuditFindings found = lab_.mmu->audit_findings();
    std::vector<std::string> parts;
    if (found.freed > 0) parts.push_back(fmt::format("{} spte(s) on a freed frame", found.freed));
    if (found.stale > 0) {
      parts.push_back(fmt::format("{} spte(s) disagreeing with the host page table", found.stale));
    }
    return fmt::format("{}", fmt::join(parts, " and "));
  }

  // Runs after every operation. The counters the workers keep become
  // violations in the log (and events in the trace) the first time they
  // fire, so the timeline shows when; the first violation of the run dates
  // it, and tracing stops a couple of operations later so that the events
  // around it survive as the counterexample.
  void check_detectors(uint64_t i) {
    const spte::Gfn target = gfn_of(layout_.target_gpa);
    if (!reported_double_ && control(offsetof(sptelab_race_control, double_holders)) > 0) {
      reported_double_ = true;
      report(spte::ViolationKind::kDoubleHolder, target,
             "a worker entered the critical section while another held the lock");
    }
    if (!reported_stale_read_ && control(offsetof(sptelab_race_control, stale_reads)) > 0) {
      reported_stale_read_ = true;
      report(spte::ViolationKind::kStaleRead, gfn_of(layout_.version_gpa),
             "a vCPU read a version the host had already replaced");
    }
    if (config_.scenario == ScenarioKind::kLockfree && !reported_lost_ &&
        lost_lockfree(workers()) > 0) {
      reported_lost_ = true;
      report(spte::ViolationKind::kLostWrite, target,
             "a worker's counter slot is behind the increments it finished");
    }
    if (config_.scenario == ScenarioKind::kCoherence && !reported_lost_ && lost_increments_now()) {
      reported_lost_ = true;
      report(spte::ViolationKind::kLostWrite, target,
             "the counter is behind the increments the workers finished");
    }
    if (lab_.violations.count() == 0) return;
    saw_violation();
    if (config_.trace && freeze_trace_at_ == 0) freeze_trace_at_ = i + 2;
    if (i == freeze_trace_at_) trace::enable(false);
  }

  void report(spte::ViolationKind kind, spte::Gfn gfn, std::string detail) {
    mm::Pte pte = lab_.mm->read_pte_lockless(lab_.hva_of(gfn));
    lab_.violations.report(
        {kind, gfn, pte.present() ? pte.pfn() : mm::kNoPfn, 0, std::move(detail)});
  }

  // Under the lock, every increment a worker has counted as done is in the
  // counter, unless it went to a page nobody else sees.
  bool lost_increments_now() {
    if (!try_take_lock(host_, layout_, kRemapperOwner, kLockAttempts)) return false;
    enter_critical(host_, layout_);
    uint64_t value = counted();
    uint64_t finished = finished_work(workers());
    leave_critical(host_, layout_);
    host_.store(layout_.lock(), 0);
    return value < finished;
  }

  host::Lab& lab_;
  const RaceConfig& config_;
  RaceLayout layout_;
  RaceResult& result_;
  mm::HostCpu cpu_;
  HostThreadCpu host_;
  Clock::time_point start_;
  uint64_t version_ = 0;
  uint64_t faults_seen_ = 0;
  bool reported_double_ = false;
  bool reported_stale_read_ = false;
  bool reported_lost_ = false;
  uint64_t freeze_trace_at_ = 0;  // 0: not yet
  // coherence-lockfree remap: the fold the observer does (remapper thread).
  bool fold_armed_ = false;
  uint64_t fold_hva_ = 0;
  mm::Pfn fold_from_ = mm::kNoPfn;
  mm::Pfn fold_to_ = mm::kNoPfn;
  uint64_t misplaced_ = 0;
  // punch-hole: what the holes discarded (coherence: the counter, under the
  // application's lock; coherence-lockfree: each worker's slot, at the
  // discard observer).
  uint64_t discarded_counter_ = 0;
  bool discard_armed_ = false;
  std::array<uint64_t, SPTELAB_RACE_MAX_WORKERS> discarded_counts_{};
  uint64_t writes_after_wrprotect_ = 0;  // windows in which a vCPU wrote a protected page
};

// A progress delay waits for the other side: the guest faulting or finishing
// work (vCPU slots only, read from the control page's frame: it never
// moves), a guest fault finishing (where one can come), or the host
// invalidating something.
ProgressSources progress_sources(host::Lab& lab, const RaceLayout& layout, uint32_t vcpus) {
  mm::Pte control = lab.mm->read_pte_lockless(lab.hva_of(gfn_of(layout.control_gpa)));
  auto* page = reinterpret_cast<const sptelab_race_control*>(lab.phys.direct_map(control.pfn()));
  spte::Mmu* mmu = lab.mmu.get();
  ProgressSources sources;
  sources.guest = [mmu, page, vcpus] {
    uint64_t sum = mmu->stats().faults;
    for (uint32_t w = 0; w < vcpus; ++w) sum += __atomic_load_n(&page->done[w], __ATOMIC_ACQUIRE);
    return sum;
  };
  sources.host = [mmu] { return mmu->stats().invalidations; };
  sources.guest_fault_watch = [mmu] {
    return [mmu, start = mmu->stats()] { return guest_fault_finished(start, mmu->stats()); };
  };
  // A guest page whose spte is still present is not faulted on: the vCPU
  // goes on using the spte (a page outside guest RAM has none either way).
  const uint64_t guest_hva = lab.guest_hva();
  const uint64_t guest_end = guest_hva + mmu->gfn_count() * mm::kPageSize;
  sources.fault_can_come = [mmu, guest_hva, guest_end](const inject::Context& context) {
    if (context.addr < guest_hva || context.addr >= guest_end) return false;
    return !mmu->spte((context.addr - guest_hva) / mm::kPageSize).present();
  };
  return sources;
}

// The host thread spends nearly all its time inside an emulated access,
// which holds its HostCpu's TLB lock so that a shootdown sees the access
// whole (as an IPI lands between instructions). Preempted there by the
// tick, which is likely on two cores shared with a native vCPU and the
// remapper, it holds every shootdown of the remapper for a time slice:
// measured on 6.18, start-end+seq-count remap, 1 vCPU: 4,400-6,700
// remapper ops/s with the vCPU faulting once per 12 ops, against
// 20,000 ops/s and a fault per op with these bursts. Sleeping between
// bursts gives the core back outside the lock.
void sleep_between_bursts() {
  std::this_thread::sleep_for(std::chrono::microseconds(50));
}

void host_thread_main(host::Lab& lab, const RaceLayout& layout, uint32_t id, ScenarioKind kind,
                      bool yield_cpu) {
  ThreadRole role(Role::kHostThread);
  trace::name_this_thread("host-thread");
  // Native vCPUs keep a core busy; on two cores the remapper needs the
  // other more than the host thread does (it still takes part, in the gaps).
  // Not in the locked variant: a lock holder made to wait stalls everyone.
  if (yield_cpu) setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), 10);
  mm::HostCpu cpu(*lab.mm, 1);
  HostThreadCpu host{cpu, lab.guest_hva()};
  if (kind == ScenarioKind::kLockfree && yield_cpu) {
    lockfree_worker(host, layout, id, sleep_between_bursts);
  } else if (kind == ScenarioKind::kLockfree) {
    lockfree_worker(host, layout, id);
  } else {
    coherence_worker(host, layout, id);
  }
}

uint64_t percentile(std::vector<uint64_t>& samples, double p) {
  if (samples.empty()) return 0;
  size_t index = static_cast<size_t>(p * static_cast<double>(samples.size() - 1));
  std::nth_element(samples.begin(), samples.begin() + static_cast<long>(index), samples.end());
  return samples[index];
}

trace::Metadata trace_metadata(const RaceConfig& config, const host::Lab& lab) {
  return {{"command", config.command_line.empty() ? "race" : config.command_line},
          {"scenario", scenario_name(config.scenario)},
          {"op", host::host_op_name(config.op)},
          {"scheme", config.scheme.name()},
          {"backend", backend_name(config.backend)},
          {"seed", std::to_string(config.seed)},
          {"memslot", trace::memslot_metadata(0, lab.config().guest_pages, lab.guest_hva())}};
}

// Each vCPU exit or spte fault on the page brings along the rest of its
// round trip on the vCPU's thread: back to the exit that began it (and the
// instruction the exit decoded), on to the re-entry. The counterexample then
// shows the guest's side too, not only the host's.
std::vector<size_t> with_vcpu_round_trips(const trace::TraceFile& file,
                                          const std::vector<size_t>& selected) {
  constexpr size_t kLookaround = 256;  // events of all threads scanned either way
  const std::vector<trace::Event>& events = file.snapshot.events;
  std::vector<size_t> kept = selected;
  for (size_t index : selected) {
    const trace::Kind kind = events[index].kind;
    if (kind != trace::Kind::kVcpuExit && kind != trace::Kind::kFaultBegin) continue;
    const uint32_t thread = events[index].thread;
    for (size_t back = index;
         kind == trace::Kind::kFaultBegin && back-- > 0 && index - back <= kLookaround;) {
      if (events[back].thread != thread) continue;
      if (events[back].kind == trace::Kind::kVcpuEntry) break;  // an earlier round trip
      kept.push_back(back);
      if (events[back].kind == trace::Kind::kVcpuExit) break;
    }
    for (size_t next = index + 1; next < events.size() && next - index <= kLookaround; ++next) {
      if (events[next].thread != thread) continue;
      kept.push_back(next);
      if (events[next].kind == trace::Kind::kVcpuEntry) break;
    }
  }
  std::sort(kept.begin(), kept.end());
  kept.erase(std::unique(kept.begin(), kept.end()), kept.end());
  return kept;
}

// The counterexample: the events about the violated page (its spte, faults,
// the host PTE and the notifier ranges covering it, the vCPUs' exits on it,
// from every thread) around the first violation, as text.
std::string counterexample(const trace::TraceFile& file) {
  for (const trace::Event& event : file.snapshot.events) {
    if (event.kind != trace::Kind::kViolation) continue;
    trace::TraceFile about_page = file;
    about_page.snapshot.events.clear();
    const std::vector<size_t> about =
        with_vcpu_round_trips(file, trace::select_events(file, {.gfn = event.args[1]}));
    for (size_t index : about) about_page.snapshot.events.push_back(file.snapshot.events[index]);
    return trace::format_window(about_page, event.ts_ns, 24, 3);
  }
  return {};
}

// A trace that cannot be written (a full disk) must not cost the run its
// result: the failure is reported beside the row.
void write_trace(RaceResult& result, const RaceConfig& config, const trace::TraceFile& file) {
  try {
    if (config.write_trace) {
      config.write_trace(config.trace_path, file);
    } else {
      trace::write_trace_file(config.trace_path, file);
    }
  } catch (const Error& error) {
    result.trace_error = error.what();
  }
}

// The PTL holds of a trace, in nanoseconds. A hold during which its thread
// was held back by an injected delay (a delay_injected event between its
// ptl_lock and ptl_unlock) measures the delay, not the scheme: it is only
// counted.
struct PtlHolds {
  std::vector<uint64_t> bare;
  uint64_t delayed = 0;
};

PtlHolds ptl_holds(const trace::Snapshot& snap) {
  struct ThreadHold {
    int depth = 0;  // PTLs held (a split PTL pair nests)
    bool delayed = false;
  };
  std::unordered_map<uint32_t, ThreadHold> threads;
  PtlHolds holds;
  for (const trace::Event& event : snap.events) {
    ThreadHold& thread = threads[event.thread];
    if (event.kind == trace::Kind::kPtlLock) {
      if (thread.depth++ == 0) thread.delayed = false;
    } else if (event.kind == trace::Kind::kDelayInjected) {
      if (thread.depth > 0) thread.delayed = true;
    } else if (event.kind == trace::Kind::kPtlUnlock) {
      if (thread.depth > 0) --thread.depth;
      if (thread.delayed) {
        ++holds.delayed;
      } else {
        holds.bare.push_back(event.args[1]);
      }
    }
  }
  return holds;
}

// PTL hold times, the counterexample, and the trace file if one was asked for.
void read_trace(RaceResult& result, const RaceConfig& config, const host::Lab& lab,
                std::optional<trace::KernelTrace> kernel) {
  trace::TraceFile file = trace::make_trace_file(trace::snapshot(), trace_metadata(config, lab));
  if (kernel) trace::merge_kernel_trace(file, std::move(*kernel));
  const trace::Snapshot& snap = file.snapshot;
  result.counterexample = counterexample(file);
  if (result.violations > 0 && result.counterexample.empty()) {
    result.counterexample =
        "(the events around the first violation were overwritten: rerun with fewer --iterations)";
  }
  if (!config.trace_path.empty()) write_trace(result, config, file);
  PtlHolds holds = ptl_holds(snap);
  result.ptl_hold_p50_ns = percentile(holds.bare, 0.50);
  result.ptl_hold_p99_ns = percentile(holds.bare, 0.99);
  result.ptl_holds = holds.bare.size();
  result.ptl_holds_delayed = holds.delayed;
  result.trace_overwritten = snap.overwritten;
}

// The threads of a race, whoever runs them.
struct RaceThreads {
  GuestEngine& engine;
  std::function<void()> host;  // empty: no host thread
  std::function<void()> remapper;
  std::function<void()> stop;  // tells the workers to stop (after the remapper)
};

// Free-running: the OS schedules the threads, in parallel. A thread that
// fails (an internal error of the emulator) must not take the process down:
// the others are stopped and joined, then it is reported (exit 4).
void run_free(RaceThreads& threads) {
  threads.engine.start();
  std::thread host;
  std::exception_ptr host_error;
  if (threads.host) {
    host = std::thread([&] {
      try {
        threads.host();
      } catch (...) {
        host_error = std::current_exception();
      }
    });
  }
  std::exception_ptr remapper_error;
  try {
    threads.remapper();
  } catch (...) {
    remapper_error = std::current_exception();
  }
  threads.stop();
  if (host.joinable()) host.join();
  threads.engine.join();
  if (remapper_error) std::rethrow_exception(remapper_error);
  if (host_error) std::rethrow_exception(host_error);
}

// Picks who steps next in a scheduled race: the running thread goes on, and
// at each step with probability 1/kSwitchEvery an enabled thread drawn at
// random takes over (std::mt19937_64's sequence is fixed by the standard,
// so a seed means the same schedule everywhere). Switching at every step
// would spend the run in hand-overs; never switching would be one thread's
// run.
class SeededChooser final : public sched::Chooser {
 public:
  explicit SeededChooser(uint64_t seed) : random_(seed) {}

  size_t choose(const std::vector<sched::ThreadState>& threads, size_t current) override {
    constexpr uint64_t kSwitchEvery = 8;
    const bool can_go_on = current != sched::kNoThread && threads[current].enabled;
    if (can_go_on && random_() % kSwitchEvery != 0) return current;
    std::vector<size_t> enabled;
    for (size_t i = 0; i < threads.size(); ++i) {
      if (threads[i].enabled) enabled.push_back(i);
    }
    return enabled[random_() % enabled.size()];
  }

 private:
  std::mt19937_64 random_;
};

// Scheduled (RaceConfig::scheduled): one thread at a time under a
// sched::Execution, so the seed repeats the run exactly.
void run_scheduled(RaceThreads& threads, uint64_t seed) {
  std::vector<std::function<void()>> vcpus = threads.engine.vcpu_bodies();
  // validate() has refused a scheduled run on any other backend.
  if (vcpus.empty()) throw_internal("a scheduled race got an engine without vCPU bodies");
  SeededChooser chooser(seed);
  sched::StayOnOneCpu one_cpu;  // the hand-overs stay on one CPU (base/sched.h)
  // No step limit: the run ends by its operations or its time limit.
  sched::Execution execution(chooser, std::numeric_limits<uint64_t>::max());
  execution.add_thread("remapper", [&] {
    try {
      threads.remapper();
    } catch (...) {
      threads.stop();  // the workers must still end
      throw;
    }
    threads.stop();
  });
  if (threads.host) execution.add_thread("host-thread", threads.host);
  for (size_t v = 0; v < vcpus.size(); ++v) {
    execution.add_thread(fmt::format("vcpu{}", v), std::move(vcpus[v]));
  }
  const sched::EndReason end = execution.run();
  const size_t thread_count = 1 + (threads.host ? 1 : 0) + vcpus.size();
  for (size_t i = 0; i < thread_count; ++i) {
    if (execution.error(i)) std::rethrow_exception(execution.error(i));
  }
  if (end != sched::EndReason::kCompleted) {
    throw_internal(fmt::format("the scheduled race ended in {} after {} steps",
                               sched::end_reason_name(end), execution.steps()));
  }
}

void add_detector(RaceResult& result, const char* name, uint64_t count) {
  result.detectors.push_back({name, count});
  result.violations += count;
}

void validate(const RaceConfig& config) {
  static_assert(kMaxRaceVcpus + 1 == SPTELAB_RACE_MAX_WORKERS);
  if (config.vcpus == 0 || config.vcpus > kMaxRaceVcpus) {
    throw_bad_input(fmt::format("--vcpus must be 1..{}", kMaxRaceVcpus));
  }
  if (config.operations == 0) throw_bad_input("--iterations must be at least 1");
  if (config.scheduled && config.backend != Backend::kSoft) {
    throw_bad_input("--scheduled runs software vCPUs: it needs --backend soft");
  }
  if (config.scheduled && config.for_duration) {
    throw_bad_input(
        "--scheduled repeats a run by its operation count: give --iterations (a run cut by "
        "--duration alone ends wherever the clock says)");
  }
  // The KVM engine's guest runs on KVM's own MMU through the guest window;
  // an IOMMU's IOTLB has no place there.
  if (config.backend == Backend::kKvm && config.scheme.protocol == spte::Protocol::kSva) {
    throw_bad_input(
        fmt::format("{} runs on software vCPUs only: use --backend soft", config.scheme.name()));
  }
}

}  // namespace

std::string guest_failure_note(const std::string& failure, uint64_t violations) {
  if (violations == 0) throw_internal(failure);
  return "the guest did not end cleanly after the violation: " +
         failure.substr(0, failure.find('\n'));
}

bool guest_fault_finished(const spte::MmuStats& at_start, const spte::MmuStats& now) {
  if (now.fixed != at_start.fixed) return true;
  const uint64_t given_up = at_start.retries + at_start.protection_waits;
  const uint64_t in_flight = at_start.faults - std::min(at_start.faults, at_start.fixed + given_up);
  return now.retries + now.protection_waits > given_up + in_flight;
}

RaceResult run_race(const RaceConfig& config, const ProgressFn& progress) {
  validate(config);
  RaceResult result;
  result.config = config;
  host::Lab lab(
      host::LabConfig{.scheme = config.scheme,
                      .guest_pages = guest_pages_for(config),
                      .backing = host::backing_for(config.op, is_coherence(config.scenario)),
                      .era = config.era});
  const RaceLayout layout = layout_for(lab);
  std::optional<trace::Session> tracing;  // PTL hold times come from the trace
  if (config.trace) tracing.emplace();
  Remapper remapper(lab, config, layout, result);
  remapper.initialise_pages();

  const bool with_host = is_coherence(config.scenario) && config.host_thread;
  const uint32_t workers = config.vcpus + (with_host ? 1 : 0);
  std::unique_ptr<GuestEngine> engine;
  engine = config.backend == Backend::kSoft ? make_soft_engine(lab, config, layout)
                                            : make_kvm_engine(lab, config, layout);
  // The real kernel's kvm/kvmmmu events, merged into this run's trace.
  std::unique_ptr<trace::KernelCapture> capture;
  if (config.kernel && config.trace) {
    capture = std::make_unique<trace::KernelCapture>();
    if (!capture->active()) result.kernel_problem = capture->problem();
  }
  {
    std::vector<PointObserver> observers;
    if (config.scenario == ScenarioKind::kLockfree) observers.push_back(remapper.fold_observer());
    if (config.scenario == ScenarioKind::kLockfree && config.op == host::HostOp::kPunchHole) {
      observers.push_back(remapper.discard_observer());
    }
    // A scheduled run's windows are the chooser's switches, not delays.
    DelayInjector delays(config.scheduled ? std::vector<DelayPoint>{} : config.delays, config.seed,
                         progress_sources(lab, layout, config.vcpus), remapper.deadline(),
                         std::move(observers));
    std::function<void()> host_body;
    if (with_host) {
      const bool yield_cpu = config.backend == Backend::kKvm && config.native &&
                             config.scenario == ScenarioKind::kLockfree;
      host_body = [&lab, layout, &config, yield_cpu] {
        host_thread_main(lab, layout, config.vcpus, config.scenario, yield_cpu);
      };
    }
    RaceThreads threads{*engine, std::move(host_body), [&] { remapper.run(progress); },
                        [&] { remapper.stop(); }};
    if (config.scheduled) {
      run_scheduled(threads, config.seed);
    } else {
      run_free(threads);
    }
  }
  const std::string guest_failure = engine->failure();
  std::optional<trace::KernelTrace> kernel;
  if (capture && capture->active()) kernel = capture->stop();

  // Quiescent: final detectors.
  result.guest_work = remapper.finished_work(workers);
  result.vcpu_work = remapper.finished_work(config.vcpus);  // worker ids 0..vcpus-1
  size_t stale_at_end = lab.mmu->audit();
  uint64_t uaf = lab.violations.count(spte::ViolationKind::kUseAfterFree);
  if (config.scenario == ScenarioKind::kCoherence) {
    uint64_t counter = remapper.counted();
    uint64_t lost = result.guest_work > counter ? result.guest_work - counter : 0;
    if (lost > 0) {
      remapper.saw_violation();
      remapper.note(
          fmt::format("lost increments: {} increments finished but the counter in gfn "
                      "{:#x} (with what punched holes discarded) says {}: {} went to a page "
                      "the others never saw",
                      result.guest_work, gfn_of(layout.target_gpa), counter, lost));
    }
    uint64_t doubles = remapper.control(offsetof(sptelab_race_control, double_holders));
    if (doubles > 0) {
      remapper.note(
          fmt::format("two holders of the spinlock in gfn {:#x} at once, {} time(s): "
                      "they were taking different copies of the lock word",
                      gfn_of(layout.target_gpa), doubles));
    }
    add_detector(result, "lost_increments", lost);
    add_detector(result, "double_holders", doubles);
    add_detector(result, "wp_writes", remapper.writes_after_wrprotect());
  } else if (config.scenario == ScenarioKind::kLockfree) {
    uint64_t lost = remapper.lost_lockfree(workers);
    if (lost > 0) {
      remapper.saw_violation();
      remapper.note(fmt::format(
          "lost increments: {} of {} increments the workers finished are not in their slots "
          "of gfn {:#x}; {} of them were found on a frame the host no longer mapped (written "
          "through a stale spte)",
          lost, result.guest_work, gfn_of(layout.target_gpa), remapper.misplaced()));
    }
    add_detector(result, "lost_increments", lost);
    add_detector(result, "wp_writes", remapper.writes_after_wrprotect());
  } else {
    uint64_t stale_reads = remapper.control(offsetof(sptelab_race_control, stale_reads));
    if (stale_reads > 0) {
      remapper.note(
          fmt::format("{} read(s) inside a stable epoch returned another version than "
                      "the one the host had written and published",
                      stale_reads));
    }
    add_detector(result, "stale_reads", stale_reads);
  }
  add_detector(result, "stale_sptes", lab.violations.count(spte::ViolationKind::kStaleSpte));
  add_detector(result, "use_after_free", uaf);
  if (stale_at_end > 0) remapper.saw_violation();
  for (const auto& violation : lab.violations.all()) {
    remapper.note(fmt::format("{} on gfn {:#x} (pfn {:#x}): {}",
                              spte::violation_kind_name(violation.kind), violation.gfn,
                              violation.pfn, violation.detail));
  }

  if (!guest_failure.empty()) {
    result.examples.push_back(guest_failure_note(guest_failure, result.violations));
  }

  spte::MmuStats stats = lab.mmu->stats();
  result.spte_faults = stats.faults;
  result.fault_retries = stats.retries;
  result.sptes_zapped = stats.zaps;
  result.ops_per_s =
      result.seconds > 0 ? static_cast<double>(result.operations) / result.seconds : 0;
  result.guest_work_per_s =
      result.seconds > 0 ? static_cast<double>(result.vcpu_work) / result.seconds : 0;
  if (config.trace) read_trace(result, config, lab, std::move(kernel));
  return result;
}

uint64_t guest_pages_for(const RaceConfig& config) {
  return config.backend == Backend::kSoft ? 64 : 4096;  // kvm: 16 MiB
}

// ---- names ------------------------------------------------------------------

const char* scenario_name(ScenarioKind kind) {
  switch (kind) {
    case ScenarioKind::kCoherence:
      return "coherence";
    case ScenarioKind::kLockfree:
      return "coherence-lockfree";
    case ScenarioKind::kStaleSpte:
      break;
  }
  return "stale-spte";
}

const std::vector<ScenarioKind>& all_scenarios() {
  static const std::vector<ScenarioKind> all = {ScenarioKind::kCoherence, ScenarioKind::kLockfree,
                                                ScenarioKind::kStaleSpte};
  return all;
}

std::optional<ScenarioKind> parse_scenario(std::string_view name) {
  for (ScenarioKind kind : all_scenarios()) {
    if (name == scenario_name(kind)) return kind;
  }
  return std::nullopt;
}

std::string describe(ScenarioKind kind) {
  switch (kind) {
    case ScenarioKind::kCoherence:
      return "vCPUs and a host thread increment a counter under a spinlock in one page while "
             "the remapper changes that page under the same lock";
    case ScenarioKind::kLockfree:
      return "the third thread without a lock: vCPUs and a host thread lock-xadd their own "
             "counters in one page while the remapper changes it freely (the 2008 argument)";
    case ScenarioKind::kStaleSpte:
      break;
  }
  return "vCPUs read versioned pages the remapper keeps changing; the auditor and the "
         "readers catch sptes left on old frames";
}

const char* backend_name(Backend backend) {
  return backend == Backend::kSoft ? "soft" : "kvm";
}

std::optional<Backend> parse_backend(std::string_view name) {
  if (name == "soft") return Backend::kSoft;
  if (name == "kvm") return Backend::kKvm;
  return std::nullopt;
}

// ---- output -----------------------------------------------------------------

namespace {

// A detector's short column header and what it counts, for the legend.
struct DetectorName {
  std::string_view name;
  std::string_view header;
  std::string_view legend;
};
constexpr std::array kDetectorNames = {
    DetectorName{"lost_increments", "lost", "increments the workers finished that are missing"},
    DetectorName{"double_holders", "double", "times two workers held the page's spinlock at once"},
    DetectorName{"wp_writes", "wp_write", "writes after the host write-protected the page"},
    DetectorName{"stale_reads", "stale_rd", "reads that returned a version older than published"},
    DetectorName{"stale_sptes", "stale_spte",
                 "sptes the auditor found on another live frame than the host PTE's, or "
                 "with more permission"},
    DetectorName{"use_after_free", "uaf",
                 "accesses, or sptes the auditor found, that reached a freed frame"},
};

DetectorName detector_name(const std::string& name) {
  for (const DetectorName& known : kDetectorNames) {
    if (known.name == name) return known;
  }
  return {name, name, ""};
}

std::string ms_cell(double ms) {
  return ms < 0 ? "-" : fmt::format("{:.1f}", ms);
}
std::string us_cell(uint64_t ns) {
  return fmt::format("{:.1f}", ns / 1000.0);
}

std::string expected_cell(const RaceResult& r) {
  if (!r.expected_racy) return "";
  if (!*r.expected_racy) return "-";
  return r.expected_witnessed ? "racy" : "racy?";
}

std::string agrees_cell(const RaceResult& r) {
  if (!r.expected_racy) return "";
  if (r.agrees_with_explorer()) return "yes";
  return *r.expected_racy ? "MISSED" : "RACY";
}

}  // namespace

std::string format_race_table(const std::vector<RaceResult>& results, bool wide) {
  if (results.empty()) return "";
  const bool several_ops = std::any_of(results.begin(), results.end(), [&](const RaceResult& r) {
    return r.config.op != results.front().config.op;
  });
  const bool expected = results.front().expected_racy.has_value();
  std::vector<TableColumn> columns = {{"scheme", "", false, true}};
  if (several_ops) columns.push_back({"op", "", false, true});
  if (expected) {
    columns.push_back(
        {"expected",
         "the explorer's verdict for the cell: racy; racy? (racy, but this scenario does not "
         "witness its property: either outcome agrees); - coherent"});
    columns.push_back(
        {"agrees", "yes; MISSED: racy cell, no violation; RACY: coherent cell, a violation"});
  }
  columns.push_back({"ops", "remapper operations the row held (* the time limit ended it)"});
  columns.push_back({"first_ms", "milliseconds to the first violation"});
  for (const auto& detector : results.front().detectors) {
    const DetectorName name = detector_name(detector.name);
    columns.push_back({std::string(name.header), std::string(name.legend)});
  }
  columns.push_back({"ops/s",
                     "remapper operations per second, waits for the guest included (before "
                     "each one the remapper waits, up to 50 us native or 2 ms otherwise, for a "
                     "vCPU to fault the page back) and the windows delays hold open; "
                     "`sptelab bench remap_*` times an operation alone",
                     true});
  columns.push_back(
      {"guest/s", "vCPU increments or page reads per second (host thread's excluded)", true});
  columns.push_back({"faults", "spte faults", true});
  columns.push_back({"retries", "spte fault retries", true});
  columns.push_back({"zapped", "sptes zapped", true});
  columns.push_back({"ptl_p50", "page-table-lock hold time, median, microseconds", true});
  columns.push_back({"ptl_p99", "page-table-lock hold time, 99th percentile, microseconds", true});
  columns.push_back({"ptl_n",
                     "page-table-lock holds the percentiles come from; +N: holds an injected "
                     "delay lengthened, left out",
                     true});

  Table table(std::move(columns));
  for (const auto& r : results) {
    std::vector<std::string> row = {r.config.scheme.name()};
    if (several_ops) row.push_back(host::host_op_name(r.config.op));
    if (expected) {
      row.push_back(expected_cell(r));
      row.push_back(agrees_cell(r));
    }
    row.push_back(fmt::format("{}{}", r.operations, r.timed_out ? "*" : ""));
    row.push_back(ms_cell(r.first_violation_ms));
    for (const auto& detector : r.detectors) row.push_back(std::to_string(detector.count));
    row.push_back(fmt::format("{:.0f}", r.ops_per_s));
    row.push_back(fmt::format("{:.0f}", r.guest_work_per_s));
    row.push_back(std::to_string(r.spte_faults));
    row.push_back(std::to_string(r.fault_retries));
    row.push_back(std::to_string(r.sptes_zapped));
    row.push_back(us_cell(r.ptl_hold_p50_ns));
    row.push_back(us_cell(r.ptl_hold_p99_ns));
    row.push_back(r.ptl_holds_delayed == 0
                      ? std::to_string(r.ptl_holds)
                      : fmt::format("{}+{}", r.ptl_holds, r.ptl_holds_delayed));
    table.add_row(std::move(row));
  }
  return table.format(wide ? 0 : kTableWidth);
}

namespace {

// race --expect: the explorer's verdict and whether the row agrees.
std::string expectation_json(const RaceResult& r) {
  if (!r.expected_racy) return "";
  return fmt::format(
      ", \"expected_racy\": {}, \"expected_property\": {}, \"expected_witnessed\": {}, "
      "\"agrees\": {}",
      *r.expected_racy, json_string(r.expected_property), r.expected_witnessed,
      r.agrees_with_explorer());
}

}  // namespace

std::string race_json(const std::vector<RaceResult>& results) {
  std::string out = "{\"results\": [";
  for (size_t i = 0; i < results.size(); ++i) {
    const RaceResult& r = results[i];
    std::string detectors;
    for (const auto& detector : r.detectors) {
      detectors +=
          fmt::format("{}\"{}\": {}", detectors.empty() ? "" : ", ", detector.name, detector.count);
    }
    std::string examples;
    for (const auto& example : r.examples) {
      examples += fmt::format("{}{}", examples.empty() ? "" : ", ", json_string(example));
    }
    out += fmt::format(
        "{}{{\"scenario\": \"{}\", \"op\": \"{}\", \"scheme\": \"{}\", \"kernel\": \"{}\", "
        "\"backend\": \"{}\", "
        "\"violations\": {}, \"detectors\": {{{}}}, \"first_violation_ms\": {}, "
        "\"ops_per_s\": {:.1f}, \"operations\": {}, \"operations_applied\": {}, "
        "\"guest_work\": {}, \"vcpu_work\": {}, \"guest_work_per_s\": {:.1f}, \"native\": {}, "
        "\"spte_faults\": {}, "
        "\"fault_retries\": {}, \"sptes_zapped\": {}, "
        "\"ptl_hold_p50_ns\": {}, \"ptl_hold_p99_ns\": {}, \"ptl_holds\": {}, "
        "\"ptl_holds_delayed\": {}, "
        "\"seconds\": {:.3f}, \"timed_out\": {}, \"seed\": {}, \"delays_injected\": {}, "
        "\"guided\": {}, \"guide\": {}, \"examples\": [{}], "
        "\"counterexample\": {}, \"trace_error\": {}{}}}",
        i ? ", " : "", scenario_name(r.config.scenario), host::host_op_name(r.config.op),
        r.config.scheme.name(), mm::kernel_era_name(r.config.era), backend_name(r.config.backend),
        r.violations, detectors,
        r.first_violation_ms < 0 ? std::string("null")
                                 : fmt::format("{:.3f}", r.first_violation_ms),
        r.ops_per_s, r.operations, r.operations_applied, r.guest_work, r.vcpu_work,
        r.guest_work_per_s, r.config.backend == Backend::kKvm && r.config.native, r.spte_faults,
        r.fault_retries, r.sptes_zapped, r.ptl_hold_p50_ns, r.ptl_hold_p99_ns, r.ptl_holds,
        r.ptl_holds_delayed, r.seconds, r.timed_out, r.config.seed, !r.config.delays.empty(),
        !r.config.guide.empty(), json_string(r.config.guide), examples,
        json_string(r.counterexample),
        r.trace_error.empty() ? std::string("null") : json_string(r.trace_error),
        expectation_json(r));
  }
  return out + "]}\n";
}

}  // namespace sptelab::scenarios
