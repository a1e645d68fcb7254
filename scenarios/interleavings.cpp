#include "scenarios/interleavings.h"

#include <array>
#include <chrono>
#include <memory>
#include <optional>
#include <thread>

#include <fmt/core.h>

#include "base/error.h"
#include "mm/host_cpu.h"
#include "scenarios/gate.h"
#include "spte/soft_vcpu.h"

namespace sptelab::scenarios {
namespace {

using inject::Point;

constexpr spte::Gfn kGfn = 5;
constexpr uint64_t kGuestWrite = 0x6e657374;  // the vCPU's value
constexpr uint64_t kHostWrite = 0x686f7374;   // the host thread's value

constexpr std::array<std::pair<Interleaving, const char*>, 3> kNames = {{
    {Interleaving::kGupBeforeChange, "gup-before-change"},
    {Interleaving::kFaultInWindow, "fault-in-window"},
    {Interleaving::kThirdThread, "third-thread"},
}};

// Everything one interleaving needs: the lab, one software vCPU, and a host
// CPU for the "third thread" that writes through the host page table. The
// interleavings are the 2008 thread's, parked at that host's points: they
// run on a 2.6.27 host (remap populates over the present PTE under
// mmap_lock for read; since 4.0 it holds mmap_lock for write, which the
// third thread's fault would wait for forever while the remapper is parked).
struct Rig {
  explicit Rig(const spte::Scheme& scheme, host::HostOp op)
      : lab(host::LabConfig{.scheme = scheme,
                            .guest_pages = 16,
                            .backing = host::backing_for(op),
                            .era = mm::KernelEra::k2_6_27}),
        machine(*lab.mmu, lab.phys, lab.violations, 1),
        vcpu(machine.vcpu(0)),
        host(*lab.mm, 0) {}
  ~Rig() { lab.mmu->set_mirror(nullptr); }

  uint64_t gpa() const { return kGfn * mm::kPageSize; }
  uint64_t hva() const { return lab.hva_of(kGfn); }

  host::Lab lab;
  spte::SoftMachine machine;
  spte::SoftVcpu& vcpu;
  mm::HostCpu host;
};

// Waits until `done` or until the vCPU has shown it is held off (a retry), or,
// for a wait the vCPU cannot signal (read_begin sleeping on an open interval
// invalidation), a short grace period. The verdict does not depend on which:
// a scheme that holds the vCPU off is correct whether or not it was seen
// doing so, and a scheme that lets it through finishes at once.
void wait_done_or_held(const std::atomic<bool>& done, const spte::Mmu& mmu,
                       uint64_t retries_before) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(50);
  while (!done.load() && mmu.stats().retries == retries_before &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
}

// A vCPU access that reaches a freed frame is reported and stopped by the
// software vCPU (GuestFault); for the write checks it simply did not land.
bool guest_store(Rig& rig, uint64_t value) {
  try {
    rig.vcpu.store64(rig.gpa(), value);
    return true;
  } catch (const spte::GuestFault&) {
    return false;
  }
}

std::optional<uint64_t> guest_load(Rig& rig) {
  try {
    return rig.vcpu.load64(rig.gpa());
  } catch (const spte::GuestFault&) {
    return std::nullopt;
  }
}

// Final probe: each side writes and the other must see it.
bool probe_lost_write(Rig& rig) {
  rig.host.store64(rig.hva(), kHostWrite + 1);
  bool lost = guest_load(rig) != kHostWrite + 1;
  guest_store(rig, kGuestWrite + 1);
  lost |= rig.host.load64(rig.hva()) != kGuestWrite + 1;
  return lost;
}

// The remapper thread: applies op once, parking at whatever gate is armed.
std::thread start_remapper(Rig& rig, host::HostOp op, InterleavingOutcome& out) {
  return std::thread([&rig, op, &out] {
    ThreadRole role(Role::kRemapper);
    out.op_applied = host::apply_host_op(rig.lab, op, kGfn, 0);
  });
}

// The vCPU writes kGuestWrite from its own thread (a correct scheme may hold
// it off until the parked remapper goes on); returns once the write is done
// or the vCPU is seen being held off. The caller joins the thread.
std::thread start_guest_write(Rig& rig) {
  auto done = std::make_shared<std::atomic<bool>>(false);
  uint64_t retries_before = rig.lab.mmu->stats().retries;
  std::thread vcpu([&rig, done] {
    ThreadRole role(Role::kVcpu);
    guest_store(rig, kGuestWrite);
    *done = true;
  });
  wait_done_or_held(*done, *rig.lab.mmu, retries_before);
  return vcpu;
}

void run_gup_before_change(Rig& rig, host::HostOp op, InterleavingOutcome& out) {
  rig.host.store64(rig.hva(), 1);  // the host page exists before the race
  Gate after_gup(Point::kSpteFaultAfterGup, Role::kVcpu);
  std::thread vcpu([&] {
    ThreadRole role(Role::kVcpu);
    guest_store(rig, kGuestWrite);
  });
  after_gup.wait_arrived();
  out.op_applied = host::apply_host_op(rig.lab, op, kGfn, 0);
  after_gup.open();
  vcpu.join();
  out.lost_write = probe_lost_write(rig);
}

void run_fault_in_window(Rig& rig, host::HostOp op, InterleavingOutcome& out) {
  rig.host.store64(rig.hva(), 1);
  Gate before_ptl(Point::kHostBeforePtl, Role::kRemapper);
  std::thread remapper = start_remapper(rig, op, out);
  before_ptl.wait_arrived();
  std::thread vcpu = start_guest_write(rig);
  before_ptl.open();
  remapper.join();
  vcpu.join();
  out.lost_write = probe_lost_write(rig);
}

// Where the third-thread window is open for an op: after the new PTE is live
// and before the op's last notifier point. Migration has no such window: its
// invalidations all come before remove_migration_ptes() makes the new page
// visible, so the writes go after the whole op.
std::optional<Point> third_thread_window(host::HostOp op) {
  if (op == host::HostOp::kMigrate) return std::nullopt;
  return Point::kHostAfterRelease;
}

void run_third_thread(Rig& rig, host::HostOp op, InterleavingOutcome& out) {
  rig.vcpu.store64(rig.gpa(), 1);  // a writable spte exists before the race
  rig.host.load64(rig.hva());      // and the host CPU has a TLB entry
  std::optional<Point> window = third_thread_window(op);
  std::optional<Gate> gate;
  if (window) gate.emplace(*window, Role::kRemapper);
  std::thread remapper = start_remapper(rig, op, out);
  if (gate) {
    gate->wait_arrived();
  } else {
    remapper.join();
  }
  // The host thread writes through the new PTE, then the vCPU through its
  // spte: if both reach the same page, the vCPU's write is the last one.
  rig.host.store64(rig.hva(), kHostWrite);
  std::thread vcpu = start_guest_write(rig);
  if (gate) {
    gate->open();
    remapper.join();
  }
  vcpu.join();
  out.lost_write = rig.host.load64(rig.hva()) != kGuestWrite;
  out.lost_write |= probe_lost_write(rig);
}

}  // namespace

const char* interleaving_name(Interleaving interleaving) {
  for (const auto& [value, name] : kNames) {
    if (value == interleaving) return name;
  }
  return "unknown";
}

std::optional<Interleaving> parse_interleaving(std::string_view name) {
  for (const auto& [value, text] : kNames) {
    if (name == text) return value;
  }
  return std::nullopt;
}

const std::vector<Interleaving>& all_interleavings() {
  static const std::vector<Interleaving> all = {
      Interleaving::kGupBeforeChange, Interleaving::kFaultInWindow, Interleaving::kThirdThread};
  return all;
}

InterleavingOutcome run_interleaving(const spte::Scheme& scheme, Interleaving interleaving,
                                     host::HostOp op) {
  // The interleavings park a GUP-based fault on a 2.6.27 host; an sva
  // device neither calls GUP nor exists before 6.6.
  if (scheme.protocol == spte::Protocol::kSva) {
    throw_bad_input(
        fmt::format("{}: the 2008 interleavings are for shadow MMUs that GUP", scheme.name()));
  }
  InterleavingOutcome out;
  Rig rig(scheme, op);
  switch (interleaving) {
    case Interleaving::kGupBeforeChange:
      run_gup_before_change(rig, op, out);
      break;
    case Interleaving::kFaultInWindow:
      run_fault_in_window(rig, op, out);
      break;
    case Interleaving::kThirdThread:
      run_third_thread(rig, op, out);
      break;
  }
  // Quiescent now: audit, then read what every detector saw.
  rig.lab.mmu->audit();
  out.stale_spte = rig.lab.violations.count(spte::ViolationKind::kStaleSpte) > 0;
  out.use_after_free = rig.lab.violations.count(spte::ViolationKind::kUseAfterFree) > 0;
  out.fault_retries = rig.lab.mmu->stats().retries;
  for (const auto& violation : rig.lab.violations.all()) {
    out.details.push_back(std::string(spte::violation_kind_name(violation.kind)) + " gfn " +
                          std::to_string(violation.gfn) + ": " + violation.detail);
  }
  return out;
}

}  // namespace sptelab::scenarios
