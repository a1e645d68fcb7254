// Guided races (`sptelab race --guided`): the explorer's fewest-preemption
// counterexample for a cell, turned into delays for a real run, so that a
// narrow window is hit on purpose on real KVM.
//
// A preemption in the counterexample holds one thread back while another
// runs. On real hardware the threads run at once and a preemption happens
// only by luck; a delay of the held-back thread's role at the injection point
// where the schedule held it, lasting until the thread that ran instead has
// made progress, makes it happen every time the code passes there.
#pragma once

#include <string>
#include <vector>

#include "explore/campaign.h"
#include "scenarios/delays.h"

namespace sptelab::explore {

// How long a guided delay waits at most for the other side (a native fault
// takes tens of microseconds on these machines, docs/benchmarks.md).
inline constexpr uint32_t kGuideBoundNs = 200000;

// Each guided delay fires on half the passes of its point. On every pass,
// the delays of one thread can keep it from ever being where the other's
// delay waits for it: range-before+seq-count/ksm's vCPU, held after GUP
// until the remapper's op ends, retried every fault (the op invalidated
// meanwhile) and never faulted inside the COW break the remapper waited
// in (a 6.6 host, which still sends change_pte); measured on KVM, 0 of 3 seeds found its stale read
// in 2 s at 1000, 2 of 3 at 500.
inline constexpr uint32_t kGuidePerMille = 500;

struct Guide {
  std::vector<scenarios::DelayPoint> delays;  // empty: the cell is coherent
  std::string description;                    // one line per delay, for the run's header
  std::string property;                       // what the counterexample violates
  int preemptions = 0;
};

// The delays that stand for the preemptions of `saved` (replayed to find
// them). `bound_ns` caps each delay, so that a delay whose other side never
// comes (it depends on this thread) costs at most that.
Guide guide_from(const SavedSchedule& saved, uint32_t bound_ns);

// Explores the cell at the default bound and guides from its
// counterexample; a cell without one gets an empty guide.
Guide guide_for(const Cell& cell, uint32_t bound_ns);

// The explorer's scenario that a race scenario runs the roles of:
// coherence and coherence-lockfree have the workers and the host thread
// write (the explorer's coherence), stale-spte reads.
ScenarioKind explorer_scenario(ScenarioKind race_scenario);

}  // namespace sptelab::explore
