// The kernel's ranges of a script, saved as text (`sptelab conform
// --save-kernel FILE`) and replayed as a Side (`--kernel-from FILE`, and the
// tests on machines without /dev/kvm or tracefs). One line per op:
//
//   # comment
//   mprotect anon 100 16 ro => anon 0 512 anon 100 116
//
// the op as the script's parser normalised it, then each range as SLOT FIRST
// END (pages relative to the slot, in the kernel's order).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "conform/side.h"

namespace sptelab::conform {

// `about` becomes a comment line at the top (what was recorded, where).
std::string format_recording(const Script& script, const std::vector<OpRanges>& ranges,
                             std::string_view about);

// Throws Error(kBadInput) "recording line N: ..." for a malformed line, an
// op that is not the script's op at that position, or fewer ops than the
// script has.
std::vector<OpRanges> parse_recording(std::string_view text, const Script& script);

class RecordedSide final : public Side {
 public:
  // `source` names the recording in the report ("tests/conform/...").
  RecordedSide(std::string text, std::string source);

  std::string name() const override;
  std::vector<OpRanges> run(const Script& script, size_t max_ops) override;

 private:
  std::string text_;
  std::string source_;
};

}  // namespace sptelab::conform
