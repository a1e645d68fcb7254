#include "explore/guide.h"

#include <fmt/format.h>

#include <algorithm>
#include <optional>

#include "base/inject.h"
#include "explore/search.h"

namespace sptelab::explore {
namespace {

using scenarios::DelayPoint;
using scenarios::DelayUntil;
using scenarios::Role;

// A point the thread passed holding a spinlock (the PTL, mmu_lock): a real
// thread delayed there would hold off the very thread it waits for, so the
// delay moves back to the thread's previous point outside the lock. Whether
// a point is inside one depends on the op and the era (a TLB flush is inside
// the PTL in ptep_clear_flush, after it in a deferred flush): the replay
// records it per step.
std::optional<inject::Point> delayable(const sched::Step& step, bool atomic) {
  std::optional<inject::Point> point = inject::from_name(step.label);
  if (!point || atomic) return std::nullopt;
  return point;
}

// Where the schedule held thread `held` back at choice `at`: the injection
// point it was about to pass, else the last one it passed. A vCPU whose
// last point was its fault's install was held in the middle of guest
// accesses, which a native vCPU makes all the time: no delay stands for that.
std::optional<inject::Point> held_at(const std::vector<ReplayStep>& steps, size_t at, size_t held,
                                     const sched::Step& pending, bool pending_atomic, bool vcpu) {
  if (auto point = delayable(pending, pending_atomic)) return point;
  for (size_t i = at; i-- > 0;) {
    if (steps[i].thread != held) continue;
    std::optional<inject::Point> point = inject::from_name(steps[i].step.label);
    if (vcpu && point == inject::Point::kSpteFaultUnderLock) return std::nullopt;
    if (auto delay_point = delayable(steps[i].step, steps[i].step_atomic)) return delay_point;
  }
  return std::nullopt;
}

// The thread a choice held back and the step it was about to take: the
// preempted one, or a host-side thread that had to wait for a lock. In the
// explorer a vCPU's guest access holds off zaps (the flush a zap waits for
// cannot complete inside an access); on real hardware the host thread is
// not stopped there, so its wait stands for a delay too.
std::optional<std::pair<size_t, sched::Step>> held_by(const ReplayStep& step,
                                                      const std::vector<std::string>& names) {
  if (step.preempted < names.size()) return std::pair{step.preempted, step.preempted_step};
  if (step.blocked < names.size() && names[step.blocked] != "vcpu") {
    return std::pair{step.blocked, step.blocked_step};
  }
  return std::nullopt;
}

Role role_of(const std::string& name) {
  if (name == "vcpu") return Role::kVcpu;
  if (name == "host") return Role::kHostThread;
  return Role::kRemapper;
}

// Who ran while `held` was held back at choice `at`: every thread that took
// a step before `held` took its next one. The remapper matters most (its
// op is what the held thread must straddle), then the vCPU.
std::string ran_instead(const std::vector<ReplayStep>& steps, size_t at, size_t held,
                        const std::vector<std::string>& names) {
  std::string ran = names[steps[at].thread];
  for (size_t i = at; i < steps.size() && steps[i].thread != held; ++i) {
    const std::string& name = names[steps[i].thread];
    if (name == "remapper" || (name == "vcpu" && ran != "remapper")) ran = name;
  }
  return ran;
}

// The progress that ends the wait when no step of the other side names it:
// the vCPUs' (faults, finished work), the host's (invalidations); the host
// thread has no counter of its own, so waiting for it is a fixed, shorter
// delay.
DelayUntil until_of(const std::string& name) {
  if (name == "vcpu") return DelayUntil::kGuestProgress;
  if (name == "remapper") return DelayUntil::kHostProgress;
  return DelayUntil::kTime;
}

// The last injection point `ran` passed before `held` went on: the wait
// ends when the real thread of that role passes it too. A coarse counter
// ends it too early or too late: the remapper's progress in a window is
// often a PTE change with no invalidation at all (a COW break after KSM),
// and the next invalidation would make the held fault retry. A vCPU whose
// last step was a guest access (no point after it) keeps the guest
// counter, which also counts finished work.
std::optional<inject::Point> passed_last(const std::vector<ReplayStep>& steps, size_t at,
                                         size_t held, const std::vector<std::string>& names,
                                         const std::string& ran) {
  std::optional<inject::Point> last;
  bool access_after = false;
  for (size_t i = at; i < steps.size() && steps[i].thread != held; ++i) {
    if (names[steps[i].thread] != ran) continue;
    if (auto point = inject::from_name(steps[i].step.label)) {
      last = point;
      access_after = false;
    } else {
      access_after = true;
    }
  }
  if (ran == "vcpu" && access_after) return std::nullopt;
  return last;
}

DelayPoint delay_for(inject::Point point, const std::string& held, const std::string& ran,
                     std::optional<inject::Point> passed, uint32_t bound_ns) {
  if (passed) {
    return {point,   role_of(held), bound_ns, kGuidePerMille, DelayUntil::kPassed,
            *passed, role_of(ran)};
  }
  const DelayUntil until = until_of(ran);
  return {point, role_of(held), until == DelayUntil::kTime ? bound_ns / 4 : bound_ns,
          kGuidePerMille, until};
}

bool same_delay(const DelayPoint& a, const DelayPoint& b) {
  return a.point == b.point && a.role == b.role && a.until == b.until &&
         (a.until != DelayUntil::kPassed ||
          (a.until_point == b.until_point && a.until_role == b.until_role));
}

std::string describe(const DelayPoint& delay, const std::string& held, const std::string& ran) {
  if (delay.until == DelayUntil::kPassed) {
    return fmt::format("  the {} waits at {} until the {} passes {}\n", held,
                       inject::name(delay.point), ran, inject::name(delay.until_point));
  }
  return fmt::format("  the {} waits at {} until the {} has made progress\n", held,
                     inject::name(delay.point), ran);
}

}  // namespace

Guide guide_from(const SavedSchedule& saved, uint32_t bound_ns) {
  std::vector<ReplayStep> steps;
  Guide guide;
  const RunFn run = [&saved](sched::Chooser& chooser) { return run_cell(saved.cell, chooser); };
  const Outcome outcome = replay(run, saved.schedule, &steps, &guide.preemptions);
  guide.property = outcome.property;
  const std::vector<std::string> names = role_names(saved.cell.scenario);
  for (size_t i = 0; i < steps.size(); ++i) {
    std::optional<std::pair<size_t, sched::Step>> held_step = held_by(steps[i], names);
    if (!held_step) continue;
    const auto& [held, pending] = *held_step;
    const std::string ran = ran_instead(steps, i, held, names);
    std::optional<inject::Point> point =
        held_at(steps, i, held, pending, steps[i].held_atomic, names[held] == "vcpu");
    if (!point) continue;
    const DelayPoint delay =
        delay_for(*point, names[held], ran, passed_last(steps, i, held, names, ran), bound_ns);
    if (std::any_of(guide.delays.begin(), guide.delays.end(),
                    [&](const DelayPoint& other) { return same_delay(other, delay); })) {
      continue;
    }
    guide.delays.push_back(delay);
    guide.description += describe(delay, names[held], ran);
  }
  return guide;
}

Guide guide_for(const Cell& cell, uint32_t bound_ns) {
  CellResult result = explore_cell(cell, CampaignOptions{});
  if (!result.violated) return {};
  return guide_from(parse_schedule(result.counterexample), bound_ns);
}

ScenarioKind explorer_scenario(ScenarioKind race_scenario) {
  return race_scenario == ScenarioKind::kStaleSpte ? ScenarioKind::kStaleSpte
                                                   : ScenarioKind::kCoherence;
}

}  // namespace sptelab::explore
