// Consistency audit of an emulated host at a quiescent point (no thread
// inside an mm operation, no GUP reference outstanding): every frame's
// refcount, mapcount and rmap must agree with the page tables and page
// caches that are passed in. Tests and race scenarios call it after the
// threads have stopped.
#pragma once

#include <string>
#include <vector>

#include "mm/file.h"
#include "mm/mm.h"
#include "mm/phys_mem.h"

namespace sptelab::mm {

struct AuditOptions {
  // Free frames that were ever allocated must still hold the poison: a write
  // to a freed frame through a stale translation shows up here.
  bool check_free_poison = true;
  // Frames allocated by someone else (guest RAM of a plain memslot, say) are
  // not reported as leaks.
  bool allow_unowned = false;
};

// Returns one line per problem; empty means consistent. Checks:
//  - a frame mapped by n PTEs has mapcount n and exactly those rmap entries;
//  - its refcount is n plus one if it is in a page cache;
//  - no migration entry is left, no PTE maps a free frame;
//  - page-table frames are flagged and held once; the zero page is flagged;
//  - free frames have refcount 0, mapcount 0, no rmap (and the poison);
//  - (unless allow_unowned) no other frame is allocated: nothing leaked.
std::vector<std::string> audit(PhysMem& phys, const std::vector<const Mm*>& mms,
                               const std::vector<const File*>& files, AuditOptions options = {});

}  // namespace sptelab::mm
