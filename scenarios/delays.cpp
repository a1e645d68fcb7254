#include "scenarios/delays.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>

#include "base/error.h"
#include "base/interrupt.h"
#include "base/spinlock.h"

namespace sptelab::scenarios {
namespace {

std::atomic<uint64_t> injected{0};
std::atomic<uint64_t> run_seed{1};
std::atomic<uint64_t> thread_counter{0};

uint64_t& thread_rng() {
  thread_local uint64_t state = run_seed.load() * 0x100000001b3ull + thread_counter.fetch_add(1);
  return state;
}

}  // namespace

void spin_for_ns(uint64_t ns) {
  auto until = std::chrono::steady_clock::now() + std::chrono::nanoseconds(ns);
  while (std::chrono::steady_clock::now() < until) cpu_relax();
}

std::vector<DelayPoint> default_delays() {
  using P = inject::Point;
  using U = DelayUntil;
  return {
      // fault-in-window: the op has passed its "before" point, PTE unchanged.
      {P::kHostBeforePtl, Role::kRemapper, 200000, 500, U::kGuestProgress},
      // third-thread: new PTE live, the "after" point not reached yet.
      {P::kHostAfterPtlUnlock, Role::kRemapper, 200000, 500, U::kGuestProgress},
      {P::kHostAfterRelease, Role::kRemapper, 200000, 500, U::kGuestProgress},
      // gup-before-change: the fault holds a page the host may be changing.
      {P::kSpteFaultAfterGup, Role::kVcpu, 200000, 300, U::kHostProgress},
  };
}

namespace {

using Clock = std::chrono::steady_clock;

// now + ns, but never past the run's deadline.
Clock::time_point delay_end(uint64_t ns, Clock::time_point deadline) {
  Clock::time_point now = Clock::now();
  if (deadline <= now) return now;
  return std::min(deadline,
                  now + std::chrono::nanoseconds(std::min<uint64_t>(ns, (deadline - now).count())));
}

// Spins a while, then yields: the point is to let the other side run, but
// a native vCPU runs on the other core, and a yield to a busy thread here
// costs a whole scheduler slice.
void wait_for_progress(const std::function<uint64_t()>& counter, Clock::time_point until) {
  const uint64_t start = counter();
  for (unsigned spins = 1;
       counter() == start && Clock::now() < until && interrupt::requested() == 0; ++spins) {
    if (spins % 256 == 0) {
      std::this_thread::yield();
    } else {
      cpu_relax();
    }
  }
}

void spin_until(Clock::time_point until) {
  while (Clock::now() < until && interrupt::requested() == 0) cpu_relax();
}

}  // namespace

DelayPoint parse_delay(const std::string& text) {
  size_t eq = text.find('=');
  if (eq == std::string::npos) {
    throw_bad_input("--delay wants POINT=NS[@PER_MILLE], got '" + text + "'");
  }
  auto point = inject::from_name(text.substr(0, eq));
  if (!point) {
    throw_bad_input("unknown injection point '" + text.substr(0, eq) +
                    "'; `sptelab list points` shows them");
  }
  std::string rest = text.substr(eq + 1);
  uint32_t per_mille = 1000;
  if (size_t at = rest.find('@'); at != std::string::npos) {
    per_mille = static_cast<uint32_t>(std::stoul(rest.substr(at + 1)));
    rest = rest.substr(0, at);
  }
  Role role = text.rfind("spte_", 0) == 0 ? Role::kVcpu : Role::kRemapper;
  return {*point, role, static_cast<uint32_t>(std::stoul(rest)), std::min(per_mille, 1000u)};
}

DelayInjector::DelayInjector(std::vector<DelayPoint> points, uint64_t seed,
                             ProgressSources progress, Clock::time_point deadline,
                             std::vector<PointObserver> observers)
    : points_(std::move(points)), progress_(std::move(progress)), deadline_(deadline) {
  run_seed = seed;
  injected = 0;
  // A kPassed delay's counter is an observer of its until_point.
  std::vector<std::function<uint64_t()>> pass_counts(points_.size());
  for (size_t i = 0; i < points_.size(); ++i) {
    passes_.push_back(std::make_unique<std::atomic<uint64_t>>(0));
    if (points_[i].until != DelayUntil::kPassed) continue;
    std::atomic<uint64_t>* passes = passes_.back().get();
    const Role role = points_[i].until_role;
    observers.push_back(
        {points_[i].until_point, [passes, role](inject::Point, const inject::Context&) {
           if (ThreadRole::current() == role) passes->fetch_add(1);
         }});
    pass_counts[i] = [passes] { return passes->load(); };
  }
  // One hook per point: its observers first, then its delays.
  std::vector<inject::Point> all;
  for (const DelayPoint& delay : points_) all.push_back(delay.point);
  for (const PointObserver& observer : observers) all.push_back(observer.point);
  for (inject::Point point : all) {
    if (std::find(armed_.begin(), armed_.end(), point) != armed_.end()) continue;
    armed_.push_back(point);
    std::vector<inject::Hook> before;
    for (const PointObserver& observer : observers) {
      if (observer.point == point) before.push_back(observer.hook);
    }
    struct Armed {
      DelayPoint delay;
      std::function<uint64_t()> counter;  // empty: a fixed delay
    };
    std::vector<Armed> delays;
    for (size_t i = 0; i < points_.size(); ++i) {
      const DelayPoint& delay = points_[i];
      if (delay.point != point) continue;
      std::function<uint64_t()> counter;
      if (delay.until == DelayUntil::kGuestProgress) counter = progress_.guest;
      if (delay.until == DelayUntil::kHostProgress) counter = progress_.host;
      if (delay.until == DelayUntil::kPassed) counter = pass_counts[i];
      delays.push_back({delay, counter});
    }
    inject::set_hook(point, [before, delays, deadline = deadline_](inject::Point at,
                                                                   const inject::Context& context) {
      for (const inject::Hook& hook : before) hook(at, context);
      for (const Armed& armed : delays) {
        const DelayPoint& delay = armed.delay;
        if (ThreadRole::current() != delay.role) continue;
        if (splitmix64(thread_rng()) % 1000 >= delay.per_mille) continue;
        injected.fetch_add(1, std::memory_order_relaxed);
        Clock::time_point until = delay_end(delay.delay_ns, deadline);
        if (armed.counter) {
          wait_for_progress(armed.counter, until);
        } else {
          spin_until(until);
        }
      }
    });
  }
}

DelayInjector::~DelayInjector() {
  for (inject::Point point : armed_) inject::set_hook(point, {});
}

uint64_t DelayInjector::delays_injected() const {
  return injected.load();
}

}  // namespace sptelab::scenarios
