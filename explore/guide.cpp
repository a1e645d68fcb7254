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

// Points passed with mmu_lock or the PTL held: a thread delayed there would
// hold off the very thread it waits for, so the delay moves back to the
// thread's previous point outside the lock.
bool under_lock(inject::Point point) {
  switch (point) {
    case inject::Point::kHostAfterPteClear:
    case inject::Point::kSpteFaultUnderLock:
    case inject::Point::kSpteZapBeforeMirror:
    case inject::Point::kTlbBeforeFlush:
      return true;
    default:
      return false;
  }
}

std::optional<inject::Point> delayable(const sched::Step& step) {
  std::optional<inject::Point> point = inject::from_name(step.label);
  if (!point || under_lock(*point)) return std::nullopt;
  return point;
}

// Where the schedule held thread `held` back at choice `at`: the injection
// point it was about to pass, else the last one it passed.
std::optional<inject::Point> held_at(const std::vector<ReplayStep>& steps, size_t at, size_t held) {
  if (auto point = delayable(steps[at].preempted_step)) return point;
  for (size_t i = at; i-- > 0;) {
    if (steps[i].thread != held) continue;
    if (auto point = delayable(steps[i].step)) return point;
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

// The progress that ends the wait: the vCPUs' (faults, finished work), the
// host's (invalidations); the host thread has no counter of its own, so
// waiting for it is a fixed, shorter delay.
DelayUntil until_of(const std::string& name) {
  if (name == "vcpu") return DelayUntil::kGuestProgress;
  if (name == "remapper") return DelayUntil::kHostProgress;
  return DelayUntil::kTime;
}

bool same_delay(const DelayPoint& a, const DelayPoint& b) {
  return a.point == b.point && a.role == b.role && a.until == b.until;
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
    const size_t held = steps[i].preempted;
    if (held == sched::kNoThread || held >= names.size()) continue;
    const std::string ran = ran_instead(steps, i, held, names);
    std::optional<inject::Point> point = held_at(steps, i, held);
    if (!point) continue;
    const DelayUntil until = until_of(ran);
    DelayPoint delay{*point, role_of(names[held]),
                     until == DelayUntil::kTime ? bound_ns / 4 : bound_ns, 1000, until};
    if (std::any_of(guide.delays.begin(), guide.delays.end(),
                    [&](const DelayPoint& other) { return same_delay(other, delay); })) {
      continue;
    }
    guide.delays.push_back(delay);
    guide.description += fmt::format("  the {} waits at {} until the {} has made progress\n",
                                     names[held], inject::name(*point), ran);
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
