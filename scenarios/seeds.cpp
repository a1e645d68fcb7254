#include "scenarios/seeds.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <utility>

#include "base/error.h"
#include "base/inject.h"
#include "base/interrupt.h"
#include "base/json.h"
#include "host/lab.h"
#include "mm/audit.h"
#include "mm/gup.h"
#include "mm/host_cpu.h"
#include "mm/ops.h"
#include "scenarios/delays.h"
#include "spte/soft_vcpu.h"
#include "trace/export.h"
#include "trace/file.h"
#include "trace/trace.h"

namespace sptelab::scenarios {

namespace {

constexpr spte::Gfn kSeedGfn = 1;
constexpr spte::Gfn kOtherGfn = 2;
constexpr uint64_t kGuestPages = 4;
constexpr uint64_t kInitial = 0x1111;
constexpr uint64_t kWritten = 0x77726974;  // "writ", plus the round

struct RaceInfo {
  SeedRace race;
  const char* name;
  const char* description;
};

constexpr RaceInfo kRaces[] = {
    {SeedRace::kDelayedRmap, "delayed-rmap",
     "2022: a zap drops the rmap entry before its TLB flush; writeback cleans the page while a "
     "stale dirty TLB entry keeps writing (Linus Torvalds, linux-mm, Nov 2022)"},
    {SeedRace::kDontneedTlb, "dontneed-tlb",
     "2022: MADV_DONTNEED drops the PTL before its TLB flush; a fault installs a new page while "
     "a stale TLB entry keeps writing the old one (Jann Horn, linux-mm, Oct 2022)"},
    {SeedRace::kGupFastRevalidate, "gup-fast-revalidate",
     "2022: GUP-fast takes a reference without re-reading the PTE; the page was freed and "
     "reused meanwhile, and the pin holds someone else's page (Alistair Popple, linux-mm, Oct "
     "2022)"},
    {SeedRace::kPagewalkPtl, "pagewalk-ptl",
     "2019: a page walker rewrites a PTE it read without the PTL; a zap cleared it meanwhile, and "
     "the walker maps the page again behind the rmap's back (Linus Torvalds, linux-mm, Oct 2019)"},
};

}  // namespace

const std::vector<SeedRace>& all_seed_races() {
  static const std::vector<SeedRace> all = {SeedRace::kDelayedRmap, SeedRace::kDontneedTlb,
                                            SeedRace::kGupFastRevalidate, SeedRace::kPagewalkPtl};
  return all;
}

const char* seed_race_name(SeedRace race) {
  for (const RaceInfo& info : kRaces) {
    if (info.race == race) return info.name;
  }
  return "?";
}

std::optional<SeedRace> parse_seed_race(std::string_view name) {
  for (const RaceInfo& info : kRaces) {
    if (name == info.name) return info.race;
  }
  return std::nullopt;
}

std::string describe(SeedRace race) {
  for (const RaceInfo& info : kRaces) {
    if (info.race == race) return info.description;
  }
  return "";
}

const char* variant_name(Variant variant) {
  return variant == Variant::kBuggy ? "buggy" : "fixed";
}

std::optional<Variant> parse_variant(std::string_view name) {
  if (name == "buggy") return Variant::kBuggy;
  if (name == "fixed") return Variant::kFixed;
  return std::nullopt;
}

const char* witness_name(Witness witness) {
  return witness == Witness::kGuest ? "guest" : "host";
}

std::optional<Witness> parse_witness(std::string_view name) {
  if (name == "host") return Witness::kHost;
  if (name == "guest") return Witness::kGuest;
  return std::nullopt;
}

spte::Scheme default_seed_scheme() {
  return *spte::parse_scheme("start-end+seq-count");
}

// ---- the rig ----------------------------------------------------------------

struct SeedRig::State {
  State(SeedRace race_, Variant variant_, Witness witness_, const spte::Scheme& scheme,
        mm::KernelEra era)
      : race(race_),
        variant(variant_),
        witness(witness_),
        lab(host::LabConfig{
            .scheme = scheme, .guest_pages = kGuestPages, .backing = backing(race_), .era = era}),
        machine(*lab.mmu, lab.phys, lab.violations, 1),
        writer(*lab.mm, 0),
        faulter(*lab.mm, 1) {
    // The variant is the emulated host's: mm/ consults it per Mm.
    const bool buggy = variant == Variant::kBuggy;
    switch (race) {
      case SeedRace::kDelayedRmap:
        lab.mm->set_zap_rmap_order(buggy ? mm::ZapRmapOrder::kImmediate
                                         : mm::ZapRmapOrder::kDelayUntilFlush);
        break;
      case SeedRace::kDontneedTlb:
        lab.mm->set_dontneed_flush(buggy ? mm::DontneedFlush::kBatched
                                         : mm::DontneedFlush::kBeforePtlUnlock);
        stores_per_yield = 32;
        break;
      case SeedRace::kGupFastRevalidate:
        break;  // a process-wide mutant (variant_mutant), scoped by the caller
      case SeedRace::kPagewalkPtl:
        lab.mm->set_walk_pte_lock(buggy ? mm::WalkPteLock::kUnlocked : mm::WalkPteLock::kLocked);
        break;
    }
  }

  // delayed-rmap needs writeback (a shared file page); dontneed-tlb needs a
  // zap that discards the page, so that the next fault installs another one.
  // gup-fast-revalidate needs a frame that a zap frees and a fault reuses.
  // pagewalk-ptl's walker (the mapping dirty helpers) walks shared file
  // mappings only.
  static host::Backing backing(SeedRace race) {
    return race == SeedRace::kDelayedRmap || race == SeedRace::kPagewalkPtl
               ? host::Backing::kSharedFile
               : host::Backing::kAnon;
  }

  uint64_t hva() const { return lab.hva_of(kSeedGfn); }
  // gup-fast-revalidate: the page another thread faults in meanwhile.
  uint64_t other_hva() const { return lab.hva_of(kOtherGfn); }
  uint64_t gpa() const { return kSeedGfn * mm::kPageSize; }
  // The frame the host PTE maps now: a snapshot inside the running step
  // (not a scheduling point), as explore/scenario.cpp's Rig::host_pfn.
  mm::Pfn host_pfn() const { return host_pfn_at(hva()); }
  mm::Pfn host_pfn_at(uint64_t addr) const {
    mm::PteSlot slot = lab.mm->walk(addr);
    if (!slot) return mm::kNoPfn;
    mm::Pte pte = mm::Mm::load_pte(slot);
    return pte.present() ? pte.pfn() : mm::kNoPfn;
  }

  // A write to word 0 by the witness: through the host CPU's TLB or the
  // vCPU's spte. It records the frame the host mapped when it began. A vCPU
  // access that reaches a freed frame is reported by the software vCPU (a
  // violation in the lab's log) and does not land.
  void witness_store(uint64_t value) {
    const mm::Pfn start_pfn = host_pfn();
    // A frame freed by the zap can come back from the very next fault: the
    // generation tells the two pages apart.
    const uint64_t start_generation = start_pfn == mm::kNoPfn ? 0 : lab.phys.generation(start_pfn);
    if (witness == Witness::kHost) {
      writer.store64(hva(), value);
    } else {
      try {
        machine.vcpu(0).store64(gpa(), value);
      } catch (const spte::GuestFault&) {
        return;
      }
    }
    last_start_pfn = start_pfn;
    last_start_generation = start_generation;
    last_value = value;
    if (race == SeedRace::kDontneedTlb && !lost_store) {
      lost_store = store_lost(start_pfn, start_generation, value);
    }
  }
  std::optional<SeedViolation> store_lost(mm::Pfn start_pfn, uint64_t start_generation,
                                          uint64_t value) const;

  std::optional<SeedViolation> check_writeback();
  std::optional<SeedViolation> check_write_landed();
  std::optional<SeedViolation> check_pin();
  std::optional<SeedViolation> check_host_audit();
  void reclaim_page();
  void drop_unaccounted_pte();

  SeedRace race;
  Variant variant;
  Witness witness;
  host::Lab lab;
  spte::SoftMachine machine;
  mm::HostCpu writer;   // the witness on the host side
  mm::HostCpu faulter;  // dontneed-tlb: the thread that touches the page after the zap
  uint64_t round = 0;
  uint32_t writes = 1;
  // Set by the zapper when its operation returned: the storing roles keep
  // storing until then (at most `writes` stores, at least one).
  std::atomic<bool> zapper_done{false};
  bool keep_storing(uint32_t done) const {
    if (done == 0) return true;
    if (done >= writes || zapper_done.load(std::memory_order_acquire)) return false;
    if (stores_per_yield != 0 && done % stores_per_yield == 0) std::this_thread::yield();
    return true;
  }
  // dontneed-tlb: its two storing roles and the zapper share two CPUs, and a
  // storing role that never gave its CPU up kept the zapper waiting for one
  // for milliseconds: a round lasted that long (100 rounds/s; yielding every
  // 32 stores, 2,800 rounds/s, and the buggy variant is caught in a few
  // rounds). The other races need their storing roles on the CPU through
  // the zapper's and the cleaner's work: delayed-rmap, yielding so, went
  // from a violation in tens of ms to none in 20 s.
  uint32_t stores_per_yield = 0;
  mm::Pfn last_start_pfn = mm::kNoPfn;  // of the witness's last completed store
  uint64_t last_start_generation = 0;
  uint64_t last_value = 0;
  // dontneed-tlb: the first store of the round that missed its frame.
  std::optional<SeedViolation> lost_store;
  std::vector<mm::Pfn> pinned;  // gup-fast-revalidate: the pinner's pages, held until check
  size_t log_reported = 0;      // violations of the lab's log already returned
};

// delayed-rmap: the host's next writeback must leave on disk what the page
// holds: a write the host never saw as dirty is lost when the page is
// reclaimed.
std::optional<SeedViolation> SeedRig::State::check_writeback() {
  mm::writeback_page(*lab.file, kSeedGfn);
  // cached_pfn, not find_page: find_page takes a reference for the caller,
  // which this check would never drop.
  const mm::Pfn pfn = lab.file->cached_pfn(kSeedGfn);
  if (pfn == mm::kNoPfn) return std::nullopt;
  const auto* frame = reinterpret_cast<const uint64_t*>(lab.phys.direct_map(pfn));
  const uint64_t held = std::atomic_ref<const uint64_t>(frame[0]).load(std::memory_order_relaxed);
  const uint64_t disk = lab.file->disk_word(kSeedGfn, 0);
  if (held == disk) return std::nullopt;
  return SeedViolation{
      "lost-at-writeback",
      fmt::format("frame {:#x} holds {:#x} but is clean and the disk has {:#x}: the {}'s write "
                  "after writeback cleaned the page, through a translation page_mkclean never "
                  "found in the rmap",
                  pfn, held, disk, witness == Witness::kHost ? "host CPU" : "vCPU")};
}

// dontneed-tlb: a store that began and ended with the host mapping the same
// frame must be in that frame. A frame the host maps after the zap was installed
// by a fault after it, so a correct host had flushed every older translation
// before; a store that is not there went to the old frame through a
// translation the zap had not flushed yet. Checked right after each store
// (only the witness writes word 0, and the generation says the frame was
// neither freed nor reused meanwhile): a later store that lands does not
// hide an earlier one that was lost.
std::optional<SeedViolation> SeedRig::State::store_lost(mm::Pfn start_pfn,
                                                        uint64_t start_generation,
                                                        uint64_t value) const {
  // The host must map the frame after the store too: a store that began
  // before the zap may fault and land in the frame the fault installs.
  if (start_pfn == mm::kNoPfn || host_pfn() != start_pfn) return std::nullopt;
  const auto* frame = reinterpret_cast<const uint64_t*>(lab.phys.direct_map(start_pfn));
  const uint64_t held = std::atomic_ref<const uint64_t>(frame[0]).load(std::memory_order_acquire);
  if (held == value || lab.phys.generation(start_pfn) != start_generation) return std::nullopt;
  return SeedViolation{
      "lost-write",
      fmt::format("the {}'s store of {:#x} began and ended with the host mapping frame {:#x} "
                  "(installed by a fault after the zap), but that frame holds {:#x}: the store "
                  "went to the old frame through a translation the zap had not flushed yet",
                  witness == Witness::kHost ? "host CPU" : "vCPU", value, start_pfn, held)};
}

std::optional<SeedViolation> SeedRig::State::check_write_landed() {
  return std::exchange(lost_store, std::nullopt);
}

// gup-fast-revalidate: the pin the pinner holds must be of a page that was
// mapped at its address while GUP ran. In this rig only one other address
// can map a page (no sharing: private anonymous memory, no fork, no KSM),
// so a pinned frame the host maps at that other address was freed and
// reused between GUP-fast's PTE read and its reference: the pin holds
// another mapping's page, whose data DMA would now overwrite.
std::optional<SeedViolation> SeedRig::State::check_pin() {
  const mm::Pfn other = host_pfn_at(other_hva());
  const bool foreign =
      other != mm::kNoPfn && std::find(pinned.begin(), pinned.end(), other) != pinned.end();
  for (mm::Pfn pfn : pinned) lab.phys.put(pfn);  // unpin_user_page
  pinned.clear();
  if (!foreign) return std::nullopt;
  const mm::Pfn frame = other;
  return SeedViolation{
      "foreign-pin",
      fmt::format("GUP for {:#x} returned frame {:#x}, which the host maps at {:#x}: the frame "
                  "was freed and reused between GUP-fast's PTE read and its reference, and the "
                  "pin holds another mapping's page",
                  hva(), frame, other_hva())};
}

// pagewalk-ptl, host witness: the host's own consistency audit (mm/audit.h).
// Every PTE that maps a page must hold one reference and one rmap entry; the
// walker's written-back copy maps the page again after the zap dropped both.
std::optional<SeedViolation> SeedRig::State::check_host_audit() {
  const std::vector<std::string> problems =
      mm::audit(lab.phys, {lab.mm.get()}, {lab.file.get()}, mm::AuditOptions{});
  if (problems.empty()) return std::nullopt;
  std::string joined;
  for (const std::string& problem : problems) joined += (joined.empty() ? "" : "; ") + problem;
  drop_unaccounted_pte();  // so that the next round starts from a consistent host
  return SeedViolation{"mm-audit",
                       fmt::format("the host's page tables disagree with its rmap and page "
                                   "references after the round: {}",
                                   joined)};
}

// pagewalk-ptl, vCPU witness: the host's next reclaim of the page. It finds
// the mappings to unmap (and the notifier ranges to invalidate) through the
// rmap; a mapping the walker wrote back is not there, so the frame is freed
// with no invalidation for it, under whatever spte was made from that PTE.
void SeedRig::State::reclaim_page() {
  const mm::Pfn pfn = lab.file->cached_pfn(kSeedGfn);
  if (pfn != mm::kNoPfn) mm::reclaim_page(lab.phys, pfn, /*honor_references=*/false);
}

// pagewalk-ptl, buggy: the walker's written-back entry holds no reference
// and no rmap entry, so a zap of it (the next round's, or exit_mmap when the
// lab goes) would remove what it does not hold, and mm/ stops on that as an
// internal error. The rig takes such an entry out of the page table, as if
// it had never been written, once the race is over; the kernel would have
// been corrupt from the write on.
void SeedRig::State::drop_unaccounted_pte() {
  const mm::PteSlot slot = lab.mm->walk(hva());
  if (!slot) return;
  const mm::Pte pte = mm::Mm::load_pte(slot);
  if (!pte.maps_page() || lab.phys.is_zero_pfn(pte.pfn())) return;
  const std::vector<mm::RmapEntry> rmap = mm::rmap_snapshot(lab.phys, pte.pfn());
  const bool accounted = std::any_of(rmap.begin(), rmap.end(), [&](const mm::RmapEntry& entry) {
    return entry.mm == lab.mm.get() && entry.addr == hva();
  });
  if (accounted) return;
  mm::PtlGuard ptl(lab.phys, slot.table);
  lab.mm->clear_pte(slot, hva());
  lab.mm->flush_tlb_range(hva(), hva() + mm::kPageSize);
}

SeedRig::SeedRig(SeedRace race, Variant variant, Witness witness, const spte::Scheme& scheme,
                 mm::KernelEra era)
    : state_(std::make_unique<State>(race, variant, witness, scheme, era)) {}

SeedRig::~SeedRig() {
  if (state_->race == SeedRace::kPagewalkPtl) state_->drop_unaccounted_pte();
}

SeedRace SeedRig::race() const {
  return state_->race;
}

// delayed-rmap: the zapper runs MADV_DONTNEED over the page (zap_pte_range
// with a forced flush: the PTE was dirty), the cleaner writes the page back
// (folio_clear_dirty_for_io: page_mkclean through the rmap, then the disk
// copy), the writer stores through the translation it cached before.
//
// dontneed-tlb: the zapper runs MADV_DONTNEED over an anonymous page (no
// forced flush), the faulter (another thread, on a CPU that has not cached
// the page) stores to it and so faults a new zeroed page in, the writer
// stores through the translation it cached before.
//
// gup-fast-revalidate: the pinner gets a reference to the page at the
// address (pin_user_pages_fast: GUP-fast, GUP-slow if it backs off; with
// the vCPU as witness, the vCPU faults it through its spte fault path
// instead), the zapper runs MADV_DONTNEED over it, the allocator (another
// thread) faults in a page at another address, taking the freed frame
// first (the free list is a stack, as a CPU's page cache of free pages).
//
// pagewalk-ptl: the zapper runs MADV_DONTNEED over a shared file page, the
// walker write-protects and cleans the page's range (wp_clean_range, the
// mapping dirty helpers' walk), the writer stores through the translation it
// cached before (and, once that is flushed, faults the page in again).
std::vector<std::string> seed_role_names(SeedRace race) {
  switch (race) {
    case SeedRace::kDelayedRmap:
      return {"zapper", "cleaner", "writer"};
    case SeedRace::kDontneedTlb:
      return {"zapper", "faulter", "writer"};
    case SeedRace::kPagewalkPtl:
      return {"zapper", "walker", "writer"};
    case SeedRace::kGupFastRevalidate:
      break;
  }
  return {"zapper", "allocator", "pinner"};
}

mutation::Mutant variant_mutant(SeedRace race, Variant variant) {
  if (race == SeedRace::kGupFastRevalidate && variant == Variant::kBuggy) {
    return mutation::Mutant::kGupFastNoRecheck;
  }
  return mutation::Mutant::kNone;
}

std::vector<std::string> SeedRig::role_names() const {
  return seed_role_names(state_->race);
}

void SeedRig::prepare() {
  State& s = *state_;
  ++s.round;
  s.zapper_done.store(false);
  s.last_start_pfn = mm::kNoPfn;
  // The page is mapped writable and dirty, and the witness caches that
  // translation (a TLB entry, or a writable spte); the faulter caches
  // nothing.
  if (s.race == SeedRace::kGupFastRevalidate) {
    s.writer.store64(s.hva(), kInitial + s.round);  // the vCPU, if witness, faults in the round
  } else {
    s.witness_store(kInitial + s.round);
  }
  s.last_start_pfn = mm::kNoPfn;
  s.faulter.flush_local();
  if (s.race == SeedRace::kGupFastRevalidate) {
    // The other address starts unmapped, so that the allocator's fault
    // takes a frame from the free list.
    mm::madvise_dontneed(*s.lab.mm, s.other_hva(), mm::kPageSize);
  }
}

void SeedRig::run_role(size_t index) {
  State& s = *state_;
  switch (index) {
    case 0:
      mm::madvise_dontneed(*s.lab.mm, s.hva(), mm::kPageSize);
      s.zapper_done.store(true, std::memory_order_release);
      return;
    case 1:
      if (s.race == SeedRace::kDelayedRmap) {
        mm::writeback_page(*s.lab.file, kSeedGfn);
        return;
      }
      if (s.race == SeedRace::kPagewalkPtl) {
        mm::wp_clean_range(*s.lab.mm, s.hva(), mm::kPageSize);
        return;
      }
      if (s.race == SeedRace::kGupFastRevalidate) {
        // A thread that keeps allocating and dropping a buffer of its own
        // (malloc/free churn) until the zapper has returned; its last
        // fault takes whatever frame is on top of the free list then.
        for (uint32_t i = 0; s.keep_storing(i); ++i) {
          if (i > 0) mm::madvise_dontneed(*s.lab.mm, s.other_hva(), mm::kPageSize);
          s.faulter.store64(s.other_hva(), kWritten + i);
        }
        return;
      }
      // Each store from a CPU without the page cached (the thread keeps
      // being scheduled elsewhere): it walks the page table, and faults
      // once the zap has cleared the PTE.
      for (uint32_t i = 0; s.keep_storing(i); ++i) {
        s.faulter.flush_local();
        s.faulter.store64(s.hva() + 8, kWritten + i);
      }
      return;
    case 2:
      if (s.race == SeedRace::kGupFastRevalidate) {
        if (s.witness == Witness::kGuest) {
          s.witness_store(kWritten);  // the vCPU's spte fault GUPs the page
          return;
        }
        // The pin is held to the end of the round.
        const mm::GupResult page = mm::get_user_page(*s.lab.mm, s.hva(), true);
        if (page.ok) s.pinned.push_back(page.pfn);
        return;
      }
      for (uint32_t i = 0; s.keep_storing(i); ++i) {
        s.witness_store(kWritten + s.round * 100000 + i);
      }
      return;
    default:
      throw_internal(fmt::format("seed race {}: no role {}", seed_race_name(s.race), index));
  }
}

std::optional<SeedViolation> SeedRig::check() {
  State& s = *state_;
  if (s.race == SeedRace::kPagewalkPtl && s.witness == Witness::kGuest) s.reclaim_page();
  s.lab.mmu->audit();
  const auto log = s.lab.violations.all();
  if (log.size() > s.log_reported) {
    const auto& violation = log[s.log_reported];
    s.log_reported = log.size();
    return SeedViolation{
        spte::violation_kind_name(violation.kind),
        fmt::format("gfn {:#x} pfn {:#x}: {}", violation.gfn, violation.pfn, violation.detail)};
  }
  switch (s.race) {
    case SeedRace::kDelayedRmap:
      return s.check_writeback();
    case SeedRace::kDontneedTlb:
      return s.check_write_landed();
    case SeedRace::kPagewalkPtl:
      // With the vCPU as the witness the question is the secondary MMU's
      // (the spte audit above, after the reclaim), not the host's.
      return s.witness == Witness::kHost ? s.check_host_audit() : std::nullopt;
    case SeedRace::kGupFastRevalidate:
      break;
  }
  return s.check_pin();
}

void SeedRig::set_writes_per_round(uint32_t writes) {
  state_->writes = writes;
}

int SeedRig::lead_point() const {
  // gup-fast-revalidate and pagewalk-ptl: the zapper, before it takes the
  // PTL to clear the PTE, until the pinner or the walker has read it (or the
  // bound): on a loaded machine that thread may otherwise wake up after the
  // clear every round.
  const bool leads =
      state_->race == SeedRace::kGupFastRevalidate || state_->race == SeedRace::kPagewalkPtl;
  return leads ? static_cast<int>(inject::Point::kHostBeforePtl) : -1;
}

int SeedRig::follower_role() const {
  return state_->race == SeedRace::kDelayedRmap ? 1 : -1;
}

size_t SeedRig::delayed_role() const {
  // The zapper; for gup-fast-revalidate the pinner (between its PTE read and
  // its reference), for pagewalk-ptl the walker (between its PTE read and
  // its write).
  switch (state_->race) {
    case SeedRace::kGupFastRevalidate:
      return 2;
    case SeedRace::kPagewalkPtl:
      return 1;
    case SeedRace::kDelayedRmap:
    case SeedRace::kDontneedTlb:
      break;
  }
  return 0;
}

int SeedRig::delay_point() const {
  // delayed-rmap: inside the PTL, the rmap entry gone (buggy) or kept
  // (fixed), the forced flush about to start. dontneed-tlb: the PTL just
  // dropped, the TLB flush done (fixed) or still owed (buggy).
  switch (state_->race) {
    case SeedRace::kDelayedRmap:
      return static_cast<int>(inject::Point::kTlbBeforeFlush);
    case SeedRace::kDontneedTlb:
      return static_cast<int>(inject::Point::kHostAfterPtlUnlock);
    case SeedRace::kPagewalkPtl:
      // The walker's PTE read done (under the PTL when fixed), its new entry
      // not yet written.
      return static_cast<int>(inject::Point::kWalkAfterPteRead);
    case SeedRace::kGupFastRevalidate:
      break;
  }
  return static_cast<int>(inject::Point::kGupFastAfterPteRead);
}

// ---- the race command ------------------------------------------------------

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kDelayBound = std::chrono::microseconds(60);
constexpr auto kDelayStep = std::chrono::microseconds(10);
// The follower waits for the delayed role's whole way to its point (the
// zapper's mmap lock, notifier and walk): longer than the window itself.
constexpr auto kFollowerBound = std::chrono::microseconds(500);
constexpr uint32_t kRaceWrites = 100000;

void relax() {
  std::this_thread::yield();
}

// The violating round's events, from the roles' threads.
std::string round_events(uint64_t since_ns, const std::vector<std::string>& names) {
  trace::TraceFile file = trace::make_trace_file(trace::snapshot());
  std::string out;
  for (const trace::Event& event : file.snapshot.events) {
    if (event.ts_ns < since_ns) continue;
    const std::string thread = file.thread_name(event.thread);
    if (std::find(names.begin(), names.end(), thread) == names.end()) continue;
    out += trace::format_event_line(file, event) + "\n";
  }
  return out;
}

}  // namespace

SeedRaceResult run_seed_race(const SeedRaceConfig& config, const SeedProgressFn& progress) {
  if (config.rounds == 0) throw_bad_input("--iterations must be at least 1");
  SeedRaceResult result;
  result.config = config;
  mutation::Scoped mutant(variant_mutant(config.race, config.variant));
  SeedRig rig(config.race, config.variant, Witness::kHost, config.scheme, config.era);
  rig.set_writes_per_round(kRaceWrites);
  const std::vector<std::string> names = rig.role_names();
  const size_t roles = names.size();

  std::atomic<uint64_t> generation{0};
  std::atomic<size_t> finished{0};
  std::atomic<bool> stop{false};
  std::vector<std::exception_ptr> errors(roles);

  // The window: the delayed role waits at its point until every other role
  // has finished its round (or the bound), on half the rounds chosen by the
  // seeded coin, so the other orders keep being tried too. It waits asleep,
  // and the runner and idle roles block between rounds: the roles are three
  // threads on two CPUs, one of them storing without a pause, and a waiter
  // that only yields keeps its CPU from the role the window is for (which
  // then waited behind the storing one for its time slice: delayed-rmap's
  // cleaner finished inside 60 µs on 3 of 1,311 delayed rounds, and CI's
  // ThreadSanitizer run found no violation in 2,000,000 rounds).
  thread_local bool delayed_thread = false;
  uint64_t coin = config.seed;
  std::atomic<bool> delay_this_round{false};
  // And, for a race whose delayed role is not the zapper, the zapper waits
  // at the lead point until the delayed role has reached its point.
  thread_local bool zapper_thread = false;
  std::atomic<bool> delayed_reached{false};
  inject::ScopedHook delay(static_cast<inject::Point>(rig.delay_point()),
                           [&](inject::Point, const inject::Context&) {
                             if (!delayed_thread || !delay_this_round.load()) return;
                             delayed_reached.store(true);
                             const auto until = Clock::now() + kDelayBound;
                             while (finished.load() + 1 < roles && Clock::now() < until) {
                               std::this_thread::sleep_for(kDelayStep);
                             }
                           });
  std::optional<inject::ScopedHook> lead;
  if (rig.lead_point() >= 0) {
    lead.emplace(static_cast<inject::Point>(rig.lead_point()),
                 [&](inject::Point, const inject::Context&) {
                   if (!zapper_thread || !delay_this_round.load()) return;
                   const auto until = Clock::now() + kDelayBound;
                   while (!delayed_reached.load() && Clock::now() < until) relax();
                 });
  }

  trace::Session tracing;
  std::vector<std::thread> threads;
  for (size_t i = 0; i < roles; ++i) {
    threads.emplace_back([&, i] {
      trace::name_this_thread(names[i]);
      delayed_thread = i == rig.delayed_role();
      zapper_thread = i == 0;
      uint64_t seen = 0;
      for (;;) {
        generation.wait(seen);
        if (stop.load()) return;
        seen = generation.load();
        if (static_cast<int>(i) == rig.follower_role() && delay_this_round.load()) {
          const auto until = Clock::now() + kFollowerBound;
          while (!delayed_reached.load() && Clock::now() < until) relax();
        }
        try {
          rig.run_role(i);
        } catch (...) {
          errors[i] = std::current_exception();
          stop.store(true);
        }
        finished.fetch_add(1);
        finished.notify_one();
      }
    });
  }

  const Clock::time_point start = Clock::now();
  const auto deadline = start + std::chrono::duration_cast<Clock::duration>(
                                    std::chrono::duration<double>(config.max_seconds));
  for (uint64_t round = 0; round < config.rounds; ++round) {
    if (Clock::now() > deadline) {
      result.timed_out = !config.for_duration;
      break;
    }
    if (stop.load()) break;
    if (interrupt::requested() != 0) break;  // SIGINT/SIGTERM: report the rounds run
    rig.prepare();
    delay_this_round.store(splitmix64(coin) % 2 == 0);
    delayed_reached.store(false);
    const uint64_t round_start = trace::detail::now_ns();
    finished.store(0);
    generation.fetch_add(1);
    generation.notify_all();
    for (size_t done = finished.load(); done < roles; done = finished.load()) finished.wait(done);
    ++result.rounds;
    if (progress && result.rounds % 1024 == 0) progress(result.rounds, config.rounds);
    if (stop.load()) break;
    if (std::optional<SeedViolation> found = rig.check()) {
      ++result.violations;
      if (result.first_violation_ms < 0) {
        result.first_violation_ms = ms_since(start);
        result.property = found->property;
        result.detail = found->detail;
        result.counterexample = round_events(round_start, names);
      }
      if (config.stop_at_first_violation) break;
    }
  }
  result.seconds = ms_since(start) / 1000.0;
  stop.store(true);
  generation.fetch_add(1);
  generation.notify_all();
  for (std::thread& thread : threads) thread.join();
  for (const std::exception_ptr& error : errors) {
    if (error) std::rethrow_exception(error);
  }
  return result;
}

std::string format_seed_race(const SeedRaceResult& r) {
  std::string out = fmt::format(
      "race {} --variant {} (scheme {}, kernel {}): {} round(s) in {:.2f} s, seed {}\n",
      seed_race_name(r.config.race), variant_name(r.config.variant), r.config.scheme.name(),
      mm::kernel_era_name(r.config.era), r.rounds, r.seconds, r.config.seed);
  if (r.violations == 0) {
    out += fmt::format("no violation{}\n", r.timed_out ? " (time limit hit)" : "");
    return out;
  }
  out += fmt::format("{} after {:.1f} ms: {}\n", r.property, r.first_violation_ms, r.detail);
  out += "counterexample (the violating round's events):\n" + r.counterexample;
  return out;
}

std::string seed_race_json(const SeedRaceResult& r) {
  return fmt::format(
      "{{\"results\": [{{\"scenario\": \"{}\", \"variant\": \"{}\", \"scheme\": \"{}\", "
      "\"kernel\": \"{}\", "
      "\"backend\": \"soft\", \"violations\": {}, \"property\": {}, \"detail\": {}, "
      "\"first_violation_ms\": {}, \"operations\": {}, \"seconds\": {:.3f}, \"timed_out\": {}, "
      "\"seed\": {}, \"counterexample\": {}}}]}}\n",
      seed_race_name(r.config.race), variant_name(r.config.variant), r.config.scheme.name(),
      mm::kernel_era_name(r.config.era), r.violations, json_string(r.property),
      json_string(r.detail),
      r.first_violation_ms < 0 ? std::string("null") : fmt::format("{:.3f}", r.first_violation_ms),
      r.rounds, r.seconds, r.timed_out, r.config.seed, json_string(r.counterexample));
}

}  // namespace sptelab::scenarios
