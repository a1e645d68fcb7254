// What `sptelab explore` runs: one cell (scheme x host op x scenario, and
// optionally a mutant) as roles over the real emulator, and the properties
// checked when every role has finished. The explorer chooses the
// interleaving; nothing here names one.
//
// Roles:
//  coherence   vcpu      reads the target page (a cold fault), then writes G
//                        to word 0 through its spte
//              host      a host thread writes H to word 1 through its own PTE
//                        and TLB (the "third thread" of the 2008 thread)
//              remapper  applies the host operation once
//  stale-spte  vcpu      reads word 0 twice
//              remapper  applies the operation, then publishes a new version
//                        of word 0 through the host mapping
//
// Properties (the first one violated is the cell's verdict):
//  stale-spte        at the end an spte disagrees with the host PTE (auditor)
//  use-after-free    an spte or a vCPU access reached a freed frame
//  lost-write        a completed write is missing from the page the host maps
//                    at the end: every write for an op that keeps the page's
//                    content (all but remap and punch-hole), for remap every
//                    write that started once the host already mapped the
//                    final page; punch-hole discards the content, so a word
//                    must hold zero or its write, and the write if it
//                    started once the punch had returned
//  orphan-page       on a shared file, the page the host maps at the end is
//                    no longer the file's (a fault mapped it after a
//                    truncation dropped it from the page cache)
//  write-after-wrprotect  a vCPU write landed after mprotect(PROT_READ)
//                    returned and before write permission was given back
//  lost-at-writeback a final writeback at the end leaves the disk without
//                    what the page holds (a write after page_mkclean cleaned
//                    the page, through a writable spte: lost at reclaim)
//  stale-read        a read that began after the new version was published
//                    returned an older one
//  deadlock / livelock / internal-error  the run did not finish cleanly
//
// A cell with a seed race (scenarios/seeds.h) runs that race's rig instead:
// its roles, its variant of the host, its witness, its property; op and
// scenario do not apply.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/mutation.h"
#include "base/sched.h"
#include "host/host_ops.h"
#include "mm/kernel_era.h"
#include "scenarios/race.h"
#include "scenarios/seeds.h"
#include "spte/scheme.h"

namespace sptelab::explore {

using host::HostOp;
using scenarios::ScenarioKind;

struct Cell {
  spte::Scheme scheme;
  HostOp op = HostOp::kRemap;
  ScenarioKind scenario = ScenarioKind::kCoherence;
  mutation::Mutant mutant = mutation::Mutant::kNone;
  std::optional<scenarios::SeedRace> race;  // a seed race instead of op x scenario
  scenarios::Variant variant = scenarios::Variant::kFixed;
  scenarios::Witness witness = scenarios::Witness::kHost;
  mm::KernelEra era = mm::kDefaultKernelEra;  // the emulated host's (--era)

  // "start-end+seq-count/remap/coherence" (plus "/MUTANT" when one is set,
  // and "/kernel-ERA" for an era other than the default); for a seed race
  // "delayed-rmap/buggy/host/start-end+seq-count".
  std::string key() const;
};

struct Outcome {
  bool violated = false;
  std::string property;  // empty when none was violated
  std::string detail;
  uint64_t steps = 0;
};

// The roles' thread names, in thread-index order.
std::vector<std::string> role_names(ScenarioKind scenario);
std::vector<std::string> role_names(const Cell& cell);

// Runs the cell once: the roles run as threads of a sched::Execution whose
// every choice `chooser` makes, then the properties are checked.
Outcome run_cell(const Cell& cell, sched::Chooser& chooser);

}  // namespace sptelab::explore
