#include "explore/scenario.h"

#include <fmt/format.h>

#include <exception>
#include <functional>
#include <memory>
#include <string>

#include "base/error.h"
#include "host/lab.h"
#include "mm/host_cpu.h"
#include "mm/ops.h"
#include "spte/soft_vcpu.h"
#include "trace/trace.h"

namespace sptelab::explore {
namespace {

using host::Lab;
using host::LabConfig;

constexpr spte::Gfn kGfn = 1;
constexpr uint64_t kGuestPages = 4;
// Frames for the guest's pages, page tables, copies and spare file pages: one
// execution allocates a few dozen at most, and a lab is built per execution,
// so the race scenarios' default (guest pages * 3 + 512) would spend a fifth
// of the search constructing and faulting in frames it never uses.
constexpr uint64_t kHostFrames = 96;
constexpr uint64_t kStepLimit = 20000;
constexpr uint64_t kInitial0 = 0x1111;
constexpr uint64_t kInitial1 = 0x2222;
constexpr uint64_t kGuestValue = 0x6e657374;  // G, word 0
constexpr uint64_t kHostValue = 0x686f7374;   // H, word 1
constexpr uint64_t kPublished = 0x7075626c;   // stale-spte: the new version of word 0

// Whether the op keeps the page's content (every completed write must
// survive it); remap installs another file page, whose content is its own,
// and punch-hole discards the page: the hole reads zeros.
bool keeps_content(HostOp op) {
  return op != HostOp::kRemap && op != HostOp::kPunchHole;
}

// What one execution records, written by the role threads (one at a time,
// with the scheduler's hand-over ordering them) and read after they ended.
struct Record {
  bool guest_write_done = false;
  bool guest_write_after_final = false;  // started when the host PTE already mapped its final page
  mm::Pfn guest_write_start_pfn = mm::kNoPfn;
  bool host_write_done = false;
  mm::Pfn host_write_start_pfn = mm::kNoPfn;
  bool op_returned = false;           // the remapper's operation has returned
  bool guest_write_after_op = false;  // started once the operation had returned
  bool host_write_after_op = false;
  bool write_forbidden = false;  // between mprotect(PROT_READ) and giving write back
  std::string wrprotect_violation;
  bool published = false;
  std::string stale_read;
};

// The cell's emulated host: the lab, one software vCPU, and host CPUs for
// the host thread, the remapper's publishing and the final checks.
struct Rig {
  explicit Rig(const Cell& cell)
      : lab(LabConfig{
            .scheme = cell.scheme,
            .guest_pages = kGuestPages,
            // As the race's scenarios do: the stale-spte one needs
            // no content to survive, so dontneed runs on anonymous
            // memory there, which it frees (on a shared file the
            // page cache keeps the page).
            .backing = host::backing_for(cell.op, cell.scenario == ScenarioKind::kCoherence),
            .host_frames = kHostFrames,
            .era = cell.era}),
        machine(*lab.mmu, lab.phys, lab.violations, 1),
        vcpu(machine.vcpu(0)),
        host(*lab.mm, 0),
        remapper_cpu(*lab.mm, 1) {}
  ~Rig() { lab.mmu->set_mirror(nullptr); }

  uint64_t gpa(size_t word) const { return kGfn * mm::kPageSize + word * 8; }
  uint64_t hva(size_t word) const { return lab.hva_of(kGfn) + word * 8; }
  // The frame the host PTE maps now: a snapshot inside the running step, not
  // a scheduling point.
  mm::Pfn host_pfn() {
    mm::PteSlot slot = lab.mm->walk(hva(0));
    if (!slot) return mm::kNoPfn;
    mm::Pte pte = mm::Mm::load_pte(slot);
    return pte.present() ? pte.pfn() : mm::kNoPfn;
  }

  Lab lab;
  spte::SoftMachine machine;
  spte::SoftVcpu& vcpu;
  mm::HostCpu host;
  mm::HostCpu remapper_cpu;
};

// A vCPU access that reaches a freed frame is reported by the software vCPU
// (a violation in the lab's log) and does not land.
bool guest_store(Rig& rig, uint64_t value) {
  try {
    rig.vcpu.store64(rig.gpa(0), value);
    return true;
  } catch (const spte::GuestFault&) {
    return false;
  }
}

std::optional<uint64_t> guest_load(Rig& rig) {
  try {
    return rig.vcpu.load64(rig.gpa(0));
  } catch (const spte::GuestFault&) {
    return std::nullopt;
  }
}

void apply_op(Rig& rig, HostOp op, Record& record) {
  if (op != HostOp::kMprotect) {
    host::apply_host_op(rig.lab, op, kGfn, 0);
    record.op_returned = true;
    return;
  }
  // Spelled out so that the window in which writes are forbidden is known:
  // from mprotect(PROT_READ)'s return to the next mprotect's start.
  const uint64_t page = rig.lab.hva_of(kGfn);
  if (!mm::mprotect(*rig.lab.mm, page, mm::kPageSize, mm::kProtRead)) return;
  // Once mprotect() has returned, no secondary MMU may map the page
  // writable until write is given back: audited at both ends of the window
  // (a writable spte there is a write-after-wrprotect waiting to happen,
  // even if this execution's vCPU does not write again; the final audit
  // cannot see it, the PTE is writable again by then).
  rig.lab.mmu->audit();
  record.write_forbidden = true;
  // The program runs on with its page read-only; other threads may go first.
  sched::point(sched::Step{.kind = sched::Kind::kPoint, .label = "mprotect_returned"});
  record.write_forbidden = false;
  rig.lab.mmu->audit();
  mm::mprotect(*rig.lab.mm, page, mm::kPageSize, mm::kProtRead | mm::kProtWrite);
  record.op_returned = true;
}

void coherence_vcpu(Rig& rig, Record& record) {
  guest_load(rig);  // a cold fault: its GUP may straddle the whole operation
  record.guest_write_start_pfn = rig.host_pfn();
  record.guest_write_after_op = record.op_returned;
  const bool landed = guest_store(rig, kGuestValue);
  if (landed && record.write_forbidden && record.wrprotect_violation.empty()) {
    record.wrprotect_violation = fmt::format(
        "the vCPU's write to gfn {:#x} landed after mprotect(PROT_READ) returned", kGfn);
  }
  record.guest_write_done = landed;
}

void coherence_host(Rig& rig, Record& record) {
  record.host_write_start_pfn = rig.host_pfn();
  record.host_write_after_op = record.op_returned;
  try {
    rig.host.store64(rig.hva(1), kHostValue);
    record.host_write_done = true;
  } catch (const mm::SegFault&) {
    // The page was read-only (mprotect): the write did not happen.
  }
}

void stale_spte_vcpu(Rig& rig, Record& record) {
  for (int read = 0; read < 2; ++read) {
    const bool published_before = record.published;
    std::optional<uint64_t> value = guest_load(rig);
    if (published_before && value && *value != kPublished && record.stale_read.empty()) {
      record.stale_read =
          fmt::format("vCPU read {:#x} from gfn {:#x} after the host had published {:#x} there",
                      *value, kGfn, kPublished);
    }
  }
}

void stale_spte_remapper(Rig& rig, HostOp op, Record& record) {
  apply_op(rig, op, record);
  rig.remapper_cpu.store64(rig.hva(0), kPublished);
  record.published = true;
}

// The frame the host maps at the end and its two words, through a host CPU
// (which faults the page back in after a zap, as the next access would).
struct FinalView {
  mm::Pfn pfn = mm::kNoPfn;
  uint64_t word0 = 0;
  uint64_t word1 = 0;
};

FinalView final_view(Rig& rig) {
  mm::HostCpu checker(*rig.lab.mm, 2);
  FinalView view;
  view.word0 = checker.load64(rig.hva(0));
  view.word1 = checker.load64(rig.hva(1));
  view.pfn = rig.host_pfn();
  return view;
}

// punch-hole discards the page by design: at the end a word holds zero (the
// hole) or what a write put there, and must hold the write if it started
// once the punch had returned (nothing but the hole's new page was left to
// write). Anything else, such as the content from before the punch, reached
// the host's page some other way.
std::optional<Outcome> check_punched_word(const FinalView& view, uint64_t held, size_t word,
                                          const char* writer, uint64_t value, bool done,
                                          bool after_punch) {
  const bool must_hold_write = done && after_punch;
  if (held == value ? done : held == 0 && !must_hold_write) return std::nullopt;
  const std::string expected =
      must_hold_write ? fmt::format("{:#x}, which {} after the punch had returned", value, writer)
      : done          ? fmt::format("0 (the hole) or {:#x}, which {}", value, writer)
                      : std::string("0 (the hole)");
  return Outcome{true, "lost-write",
                 fmt::format("word {} of frame {:#x}, which the host maps at the end, holds {:#x} "
                             "instead of {}",
                             word, view.pfn, held, expected)};
}

std::optional<Outcome> check_lost_writes(Rig& rig, const Cell& cell, const Record& record) {
  if (cell.scenario != ScenarioKind::kCoherence) return std::nullopt;
  const FinalView view = final_view(rig);
  if (cell.op == HostOp::kPunchHole) {
    if (auto found = check_punched_word(view, view.word0, 0, "the vCPU wrote", kGuestValue,
                                        record.guest_write_done, record.guest_write_after_op)) {
      return found;
    }
    return check_punched_word(view, view.word1, 1, "the host thread wrote", kHostValue,
                              record.host_write_done, record.host_write_after_op);
  }
  auto must_survive = [&](bool done, mm::Pfn start_pfn) {
    return done && (keeps_content(cell.op) || start_pfn == view.pfn);
  };
  if (must_survive(record.guest_write_done, record.guest_write_start_pfn) &&
      view.word0 != kGuestValue) {
    return Outcome{true, "lost-write",
                   fmt::format("the vCPU's write of {:#x} to gfn {:#x} is not in frame {:#x}, "
                               "which the host maps at the end (it holds {:#x})",
                               kGuestValue, kGfn, view.pfn, view.word0)};
  }
  if (must_survive(record.host_write_done, record.host_write_start_pfn) &&
      view.word1 != kHostValue) {
    return Outcome{true, "lost-write",
                   fmt::format("the host thread's write of {:#x} is not in frame {:#x}, which "
                               "the host maps at the end (it holds {:#x})",
                               kHostValue, view.pfn, view.word1)};
  }
  return std::nullopt;
}

// On a shared file the page the host maps at the end must still be the
// file's: one the page cache dropped (a fault that mapped it after the
// truncation had removed it) is an orphan whose content no read(), no
// other mapping and no writeback will ever see.
std::optional<Outcome> check_orphan(Rig& rig) {
  if (rig.lab.config().backing != host::Backing::kSharedFile) return std::nullopt;
  const FinalView view = final_view(rig);
  if (view.pfn == mm::kNoPfn) return std::nullopt;
  if (rig.lab.phys.page(view.pfn).mapping == rig.lab.file.get()) return std::nullopt;
  return Outcome{true, "orphan-page",
                 fmt::format("the host maps frame {:#x} at gfn {:#x}, which its file's page "
                             "cache no longer holds",
                             view.pfn, kGfn)};
}

// A final writeback (the host's next one) must leave on disk what the page
// holds; a write the host never saw as dirty is lost when the page is
// reclaimed.
std::optional<Outcome> check_writeback(Rig& rig, const Cell& cell) {
  if (cell.op != HostOp::kMkclean) return std::nullopt;
  mm::writeback_page(*rig.lab.file, kGfn);
  const mm::Pfn pfn = rig.lab.file->find_page(kGfn);
  if (pfn == mm::kNoPfn) return std::nullopt;
  const auto* frame = reinterpret_cast<const uint64_t*>(rig.lab.phys.direct_map(pfn));
  for (size_t word = 0; word < 2; ++word) {
    const uint64_t disk = rig.lab.file->disk_word(kGfn, word);
    if (frame[word] != disk) {
      return Outcome{true, "lost-at-writeback",
                     fmt::format("frame {:#x} holds {:#x} in word {} but is clean and the disk "
                                 "has {:#x}: a write after page_mkclean the host never saw",
                                 pfn, frame[word], word, disk)};
    }
  }
  return std::nullopt;
}

std::optional<Outcome> check_log(Rig& rig) {
  rig.lab.mmu->audit();
  for (const auto& violation : rig.lab.violations.all()) {
    return Outcome{
        true, spte::violation_kind_name(violation.kind),
        fmt::format("gfn {:#x} pfn {:#x}: {}", violation.gfn, violation.pfn, violation.detail)};
  }
  return std::nullopt;
}

std::optional<Outcome> check_end(sched::EndReason end, const sched::Execution& execution,
                                 size_t threads) {
  if (end == sched::EndReason::kDeadlock) {
    return Outcome{true, "deadlock", "no thread could take a step"};
  }
  if (end == sched::EndReason::kStepLimit) {
    return Outcome{true, "livelock",
                   fmt::format("no end after {} steps (a wait that never ends)", kStepLimit)};
  }
  for (size_t i = 0; i < threads; ++i) {
    if (std::exception_ptr error = execution.error(i)) {
      try {
        std::rethrow_exception(error);
      } catch (const std::exception& e) {
        return Outcome{true, "internal-error",
                       fmt::format("{}: {}", execution.thread_name(i), e.what())};
      }
    }
  }
  return std::nullopt;
}

}  // namespace

std::string Cell::key() const {
  if (race) {
    std::string key = fmt::format("{}/{}/{}/{}", scenarios::seed_race_name(*race),
                                  scenarios::variant_name(variant),
                                  scenarios::witness_name(witness), scheme.name());
    if (mutant != mutation::Mutant::kNone) key += fmt::format("/{}", mutation::name(mutant));
    if (era != mm::kDefaultKernelEra) key += fmt::format("/kernel-{}", mm::kernel_era_name(era));
    return key;
  }
  std::string key = fmt::format("{}/{}/{}", scheme.name(), host::host_op_name(op),
                                scenarios::scenario_name(scenario));
  if (mutant != mutation::Mutant::kNone) key += fmt::format("/{}", mutation::name(mutant));
  if (era != mm::kDefaultKernelEra) key += fmt::format("/kernel-{}", mm::kernel_era_name(era));
  return key;
}

std::vector<std::string> role_names(ScenarioKind scenario) {
  if (scenario == ScenarioKind::kCoherence) return {"vcpu", "host", "remapper"};
  return {"vcpu", "remapper"};
}

std::vector<std::string> role_names(const Cell& cell) {
  if (!cell.race) return role_names(cell.scenario);
  return scenarios::seed_role_names(*cell.race);
}

namespace {

// A seed race's rig under the explorer: prepared outside the execution (the
// translation the witness caches is the race's starting state), its roles as
// threads, its property checked once every role has finished.
Outcome run_seed_cell(const Cell& cell, sched::Chooser& chooser) {
  const mutation::Mutant variant = scenarios::variant_mutant(*cell.race, cell.variant);
  mutation::Scoped mutant(variant != mutation::Mutant::kNone ? variant : cell.mutant);
  auto owned_rig = std::make_unique<scenarios::SeedRig>(*cell.race, cell.variant, cell.witness,
                                                        cell.scheme, cell.era);
  scenarios::SeedRig& rig = *owned_rig;
  rig.prepare();
  sched::Execution execution(chooser, kStepLimit);
  const std::vector<std::string> names = rig.role_names();
  for (size_t i = 0; i < names.size(); ++i) {
    execution.add_thread(names[i], [&rig, i, name = names[i]] {
      if (trace::enabled()) trace::name_this_thread(name);
      rig.run_role(i);
    });
  }
  const sched::EndReason end = execution.run();
  if (end == sched::EndReason::kDeadlock) (void)owned_rig.release();  // as in run_cell
  Outcome outcome;
  outcome.steps = execution.steps();
  std::optional<Outcome> found = check_end(end, execution, names.size());
  if (!found && end == sched::EndReason::kCompleted) {
    if (std::optional<scenarios::SeedViolation> violation = rig.check()) {
      found = Outcome{true, violation->property, violation->detail};
    }
  }
  if (found) {
    found->steps = outcome.steps;
    return *found;
  }
  return outcome;
}

}  // namespace

Outcome run_cell(const Cell& cell, sched::Chooser& chooser) {
  if (cell.race) return run_seed_cell(cell, chooser);
  mutation::Scoped mutant(cell.mutant);
  auto owned_rig = std::make_unique<Rig>(cell);
  Rig& rig = *owned_rig;
  Record record;
  // Before the race: the page exists, holds known words, and the host
  // thread's TLB caches it; the vCPU has not touched it yet.
  rig.host.store64(rig.hva(0), kInitial0);
  rig.host.store64(rig.hva(1), kInitial1);

  sched::Execution execution(chooser, kStepLimit);
  const std::vector<std::string> names = role_names(cell.scenario);
  auto role = [&](size_t index, std::function<void()> body) {
    execution.add_thread(names[index], [name = names[index], body = std::move(body)] {
      if (trace::enabled()) trace::name_this_thread(name);
      body();
    });
  };
  if (cell.scenario == ScenarioKind::kCoherence) {
    role(0, [&] { coherence_vcpu(rig, record); });
    role(1, [&] { coherence_host(rig, record); });
    role(2, [&] { apply_op(rig, cell.op, record); });
  } else {
    role(0, [&] { stale_spte_vcpu(rig, record); });
    role(1, [&] { stale_spte_remapper(rig, cell.op, record); });
  }
  const sched::EndReason end = execution.run();
  if (end == sched::EndReason::kDeadlock) {
    // The roles were unwound mid-operation (an invalidation may be left
    // open), so the emulated host cannot be torn down: keep it.
    (void)owned_rig.release();
  }

  Outcome outcome;
  outcome.steps = execution.steps();
  std::optional<Outcome> found = check_end(end, execution, names.size());
  if (!found && !record.wrprotect_violation.empty()) {
    found = Outcome{true, "write-after-wrprotect", record.wrprotect_violation};
  }
  if (!found && !record.stale_read.empty()) found = Outcome{true, "stale-read", record.stale_read};
  if (!found) found = check_log(rig);
  if (!found && end == sched::EndReason::kCompleted) found = check_orphan(rig);
  if (!found && end == sched::EndReason::kCompleted) found = check_lost_writes(rig, cell, record);
  if (!found && end == sched::EndReason::kCompleted) found = check_writeback(rig, cell);
  if (found) {
    found->steps = outcome.steps;
    return *found;
  }
  return outcome;
}

}  // namespace sptelab::explore
