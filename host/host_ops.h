// The host operations a remapper applies to a guest page, each through the mm
// layer's real implementation (`--op`).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "host/lab.h"
#include "mm/types.h"

namespace sptelab::host {

// The operations `--op` offers are mm::MmOp's (one enum for the host's
// operations); host_op_name spells them as the CLI does ("cow", "ksm"):
//   kMigrate   move the page to a new frame (old frame freed)
//   kRemap     install another file page over the present PTE (remap_file_pages)
//   kCow       fork-style write-protect, then break COW by copying
//   kDontneed  MADV_DONTNEED zap (a shared file page is refaulted from the cache)
//   kMprotect  write-protect, then give write permission back
//   kMkclean   writeback: page_mkclean write-protects and cleans every mapping
//   kKsm       merge with an identical twin page, then break the KSM page by writing
//   kPunchHole fallocate(FALLOC_FL_PUNCH_HOLE) of the page: every mapping of it
//              is zapped, it leaves the page cache, the hole reads zeros
using HostOp = mm::MmOp;

const char* host_op_name(HostOp op);
std::optional<HostOp> parse_host_op(std::string_view name);
const std::vector<HostOp>& all_host_ops();
// The backing an op needs (remap/mkclean/punch-hole: a shared file;
// cow/ksm: anon). punch-hole discards the content whatever the backing.
// MADV_DONTNEED discards anonymous content but keeps a file page in the page
// cache: a scenario whose page content must survive gets the file, one that
// wants the frame to change gets anonymous memory.
Backing backing_for(HostOp op, bool content_must_survive = true);
std::string describe(HostOp op);

// Applies op once to guest page gfn. `iteration` lets ops alternate targets
// (remap swaps between two file pages). Returns whether the host really
// changed the mapping (an op can lose a race and do nothing, like Linux's).
bool apply_host_op(Lab& lab, HostOp op, spte::Gfn gfn, uint64_t iteration);

}  // namespace sptelab::host
