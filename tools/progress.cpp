#include "tools/progress.h"

#include <unistd.h>

#include <fmt/core.h>

#include <algorithm>
#include <cmath>

namespace sptelab::tools {
namespace {

// Quiet below this: a user does not need progress for what ends at once.
constexpr double kQuietSeconds = 2;
// Piped output gets a line at most this often during one long item.
constexpr double kPipedInterval = 5;
// A terminal line is rewritten at most this often.
constexpr double kTtyInterval = 0.2;

double seconds_between(std::chrono::steady_clock::time_point from,
                       std::chrono::steady_clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

}  // namespace

std::string short_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto whole = static_cast<uint64_t>(std::llround(seconds));
  if (whole < 60) return fmt::format("{} s", whole);
  if (whole < 3600) return fmt::format("{}m{:02}s", whole / 60, whole % 60);
  return fmt::format("{}h{:02}m", whole / 3600, whole / 60 % 60);
}

Progress::Progress(std::string what, size_t total, std::string unit)
    : what_(std::move(what)),
      total_(total),
      unit_(std::move(unit)),
      tty_(isatty(STDERR_FILENO) != 0) {}

void Progress::start(std::string name, double expected_seconds) {
  ++index_;
  name_ = std::move(name);
  expected_seconds_ = expected_seconds;
  done_ = planned_ = 0;
  item_start_ = Clock::now();
}

double Progress::elapsed() const {
  return seconds_between(start_, Clock::now());
}

// How far the current item is: by its operations, or by its time limit
// when that comes sooner.
double Progress::item_fraction() const {
  double fraction = planned_ > 0 ? static_cast<double>(done_) / static_cast<double>(planned_) : 0;
  if (expected_seconds_ > 0) {
    fraction = std::max(fraction, seconds_between(item_start_, Clock::now()) / expected_seconds_);
  }
  return std::clamp(fraction, 0.0, 1.0);
}

double Progress::eta_seconds() const {
  const double in_item = seconds_between(item_start_, Clock::now());
  const double fraction = item_fraction();
  const size_t finished = index_ > 0 ? index_ - 1 : 0;
  // An item's length: the mean of the finished ones, else this one's
  // projection from how far it is.
  double per_item = finished > 0   ? finished_seconds_ / static_cast<double>(finished)
                    : fraction > 0 ? in_item / fraction
                                   : NAN;
  const double this_item_left =
      fraction > 0 ? in_item / fraction - in_item : std::max(per_item - in_item, 0.0);
  return this_item_left + static_cast<double>(total_ - index_) * per_item;
}

bool Progress::due() const {
  const auto now = Clock::now();
  if (seconds_between(start_, now) < kQuietSeconds) return false;
  return seconds_between(last_print_, now) >= (tty_ ? kTtyInterval : kPipedInterval);
}

void Progress::update(uint64_t done, uint64_t planned) {
  done_ = done;
  planned_ = planned;
  if (!due()) return;
  std::string ops = planned > 0 && planned != UINT64_MAX
                        ? fmt::format("{}/{} {}", done, planned, unit_)
                        : fmt::format("{} {}", done, unit_);
  print(fmt::format("{} [{}/{}] {}: {}, {} elapsed, ETA {}", what_, index_, total_, name_, ops,
                    short_duration(elapsed()), short_duration(eta_seconds())),
        false);
}

void Progress::finish(const std::string& outcome) {
  finished_seconds_ += seconds_between(item_start_, Clock::now());
  if (elapsed() < kQuietSeconds) return;
  std::string line = fmt::format("{} [{}/{}] {}: {}, {} elapsed", what_, index_, total_, name_,
                                 outcome, short_duration(elapsed()));
  if (index_ < total_) {
    const double per_item = finished_seconds_ / static_cast<double>(index_);
    line +=
        fmt::format(", ETA {}", short_duration(static_cast<double>(total_ - index_) * per_item));
  }
  print(line, true);
}

// On a terminal the running line is rewritten in place and the finished
// items stay, one line each; piped, every line is a line of its own.
void Progress::print(const std::string& line, bool final) {
  last_print_ = Clock::now();
  if (tty_) {
    fmt::print(stderr, "\r\033[K{}{}", line, final ? "\n" : "");
  } else {
    fmt::print(stderr, "{}\n", line);
  }
  std::fflush(stderr);
}

}  // namespace sptelab::tools
