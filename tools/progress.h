// Progress of a command that works through N items (schemes, cells) on
// stderr: on a terminal one line rewritten in place, otherwise (piped, in
// CI) a line per finished item and one every few seconds during a long one.
// Nothing is printed until the command has run ~2 s, so quick runs stay
// quiet; commands with --json do not create one (stdout stays one document
// and stderr stays clean).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace sptelab::tools {

class Progress {
 public:
  // `what` prefixes every line ("race"); `total` items will come; `unit`
  // names what update() counts.
  Progress(std::string what, size_t total, std::string unit = "ops");

  // The next item begins; `expected_seconds` is its length if known
  // (a time limit), else 0.
  void start(std::string name, double expected_seconds = 0);
  // `done` of `planned` operations of the current item (planned 0: not
  // known in advance).
  void update(uint64_t done, uint64_t planned);
  // The current item is over; `outcome` says how it went, for the line.
  void finish(const std::string& outcome);

  // How long the whole command has run, and the estimate of what remains.
  double elapsed() const;
  double eta_seconds() const;

 private:
  using Clock = std::chrono::steady_clock;
  double item_fraction() const;
  void print(const std::string& line, bool final);
  bool due() const;

  std::string what_;
  size_t total_;
  std::string unit_;
  size_t index_ = 0;  // the current item, from 1
  std::string name_;
  double expected_seconds_ = 0;
  uint64_t done_ = 0, planned_ = 0;
  Clock::time_point start_ = Clock::now(), item_start_ = start_, last_print_ = start_;
  double finished_seconds_ = 0;  // of the items finished so far
  bool tty_;
};

// "45 s", "3m05s", "1h02m": short, for progress lines.
std::string short_duration(double seconds);

}  // namespace sptelab::tools
