#include "scenarios/delays.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <optional>
#include <string_view>
#include <thread>

#include <fmt/core.h>

#include "base/error.h"
#include "base/interrupt.h"
#include "base/spinlock.h"
#include "trace/trace.h"

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

// A native vCPU comes back for a zapped page only after an EFAULT round
// trip, by which time an operation's own window (a few microseconds) has
// closed: free-running without delays, range-before's fault between the
// early invalidation and the PTE change, and a naive fault's GUP before a
// whole operation, were met on some seeds only (docs/crosscheck.md). The
// other default windows a native vCPU meets at full speed; delaying there
// only slowed the remapper (start-end+seq-count remap: 2,400 ops/s with
// the four default delays against 14,000 with the two first ones here).
std::vector<DelayPoint> native_delays() {
  using P = inject::Point;
  using U = DelayUntil;
  return {
      // fault-in-window, held until the vCPU's fault has finished.
      {P::kHostBeforePtl, Role::kRemapper, 200000, 500, U::kGuestFault},
      // The same for a migration between its unmap and its refcount freeze:
      // a naive fault whose GUP came before the unmap installs and drops its
      // reference there, and the freeze lets the copy go on under its spte.
      {P::kHostBeforeRefFreeze, Role::kRemapper, 200000, 500, U::kGuestFault},
      // gup-before-change, on fewer faults: each one held costs the
      // remapper's wait for the vCPU (9,500 ops/s at 300 per mille, 11,000-
      // 14,000 at 100, every such cell still found within 200 ms).
      {P::kSpteFaultAfterGup, Role::kVcpu, 200000, 100, U::kHostProgress},
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
void wait_for_progress(const std::function<bool()>& progressed, Clock::time_point until) {
  for (unsigned spins = 1; !progressed() && Clock::now() < until && interrupt::requested() == 0;
       ++spins) {
    if (spins % 256 == 0) {
      std::this_thread::yield();
    } else {
      cpu_relax();
    }
  }
}

// Progress as a counter that moves.
std::function<std::function<bool()>()> counter_watch(std::function<uint64_t()> counter) {
  if (!counter) return {};
  return [counter] { return [counter, start = counter()] { return counter() != start; }; };
}

void spin_until(Clock::time_point until) {
  while (Clock::now() < until && interrupt::requested() == 0) cpu_relax();
}

}  // namespace

// A whole decimal number from 0 to `max`: no sign, space, exponent or
// trailing text (std::stoul took "-1", " 5" and "5x", and wrapped).
std::optional<uint64_t> whole_number(std::string_view text, uint64_t max) {
  uint64_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || end != text.data() + text.size() || value > max) {
    return std::nullopt;
  }
  return value;
}

DelayPoint parse_delay(const std::string& text) {
  auto bad = [&](const std::string& why) {
    throw_bad_input(
        fmt::format("--delay '{}': {}; the form is POINT=NS[@PER_MILLE], e.g. "
                    "host_before_ptl=50000@500 ('sptelab list points' shows the points)",
                    text, why));
  };
  const size_t eq = text.find('=');
  if (eq == std::string::npos) bad("no '='");
  const std::string name = text.substr(0, eq);
  const std::optional<inject::Point> point = inject::from_name(name);
  if (!point) bad(fmt::format("unknown injection point '{}'", name));
  const std::string_view rest = std::string_view(text).substr(eq + 1);
  const size_t at = rest.find('@');
  const std::string_view ns_text = rest.substr(0, at);
  uint64_t per_mille = 1000;
  if (at != std::string_view::npos) {
    const std::string_view per_mille_text = rest.substr(at + 1);
    if (per_mille_text.find('@') != std::string_view::npos) bad("more than one '@'");
    std::optional<uint64_t> parsed = whole_number(per_mille_text, 1000);
    if (!parsed) {
      bad(fmt::format("PER_MILLE '{}' is not a whole number from 0 to 1000", per_mille_text));
    }
    per_mille = *parsed;
  }
  std::optional<uint64_t> ns = whole_number(ns_text, UINT32_MAX);
  if (!ns) {
    bad(fmt::format("NS '{}' is not a whole number of nanoseconds from 0 to {}", ns_text,
                    UINT32_MAX));
  }
  const Role role = name.rfind("spte_", 0) == 0 ? Role::kVcpu : Role::kRemapper;
  return {*point, role, static_cast<uint32_t>(*ns), static_cast<uint32_t>(per_mille)};
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
      // Starts watching the other side: empty for a fixed delay.
      std::function<std::function<bool()>()> watch;
    };
    std::vector<Armed> delays;
    for (size_t i = 0; i < points_.size(); ++i) {
      const DelayPoint& delay = points_[i];
      if (delay.point != point) continue;
      std::function<uint64_t()> counter;
      if (delay.until == DelayUntil::kGuestProgress) counter = progress_.guest;
      if (delay.until == DelayUntil::kHostProgress) counter = progress_.host;
      if (delay.until == DelayUntil::kPassed) counter = pass_counts[i];
      std::function<std::function<bool()>()> watch = counter_watch(counter);
      if (delay.until == DelayUntil::kGuestFault) watch = progress_.guest_fault_watch;
      delays.push_back({delay, watch});
    }
    inject::set_hook(point, [before, delays, deadline = deadline_,
                             fault_can_come = progress_.fault_can_come](
                                inject::Point at, const inject::Context& context) {
      for (const inject::Hook& hook : before) hook(at, context);
      for (const Armed& armed : delays) {
        const DelayPoint& delay = armed.delay;
        if (ThreadRole::current() != delay.role) continue;
        if (delay.until == DelayUntil::kGuestFault && fault_can_come && !fault_can_come(context)) {
          continue;
        }
        if (splitmix64(thread_rng()) % 1000 >= delay.per_mille) continue;
        injected.fetch_add(1, std::memory_order_relaxed);
        const Clock::time_point began = Clock::now();
        Clock::time_point until = delay_end(delay.delay_ns, deadline);
        if (armed.watch) {
          wait_for_progress(armed.watch(), until);
        } else {
          spin_until(until);
        }
        // Traced, so a reader sees which windows were widened, and costs
        // measured from the trace can leave the delayed spans out.
        trace::emit(trace::Kind::kDelayInjected, static_cast<uint64_t>(at),
                    static_cast<uint64_t>((Clock::now() - began).count()));
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
