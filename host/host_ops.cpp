#include "host/host_ops.h"

#include <array>
#include <thread>

#include <fmt/core.h>

#include "base/error.h"
#include "mm/host_cpu.h"
#include "mm/ops.h"

namespace sptelab::host {
namespace {

struct OpInfo {
  HostOp op;
  const char* name;
  Backing backing;
  const char* description;
};

constexpr std::array<OpInfo, 8> kOps = {{
    {HostOp::kMigrate, "migrate", Backing::kAnon,
     "page migration: migration entry, copy, new frame, old frame freed"},
    {HostOp::kRemap, "remap", Backing::kSharedFile,
     "remap_file_pages-style: another file page installed over the present PTE"},
    {HostOp::kCow, "cow", Backing::kAnon,
     "fork write-protects the page, then a write breaks COW into a copy"},
    {HostOp::kDontneed, "dontneed", Backing::kSharedFile,
     "MADV_DONTNEED zap with an mmu_gather batch; the next touch refaults"},
    {HostOp::kMprotect, "mprotect", Backing::kSharedFile,
     "mprotect read-only, then read-write again"},
    {HostOp::kMkclean, "mkclean", Backing::kSharedFile,
     "writeback: page_mkclean write-protects and cleans every mapping"},
    {HostOp::kKsm, "ksm", Backing::kAnon,
     "KSM merge with an identical twin (change_pte until 6.9), then a write breaks it"},
    {HostOp::kPunchHole, "punch-hole", Backing::kSharedFile,
     "fallocate(PUNCH_HOLE): unmap_mapping_range, the page leaves the page cache; reads zeros"},
}};

const OpInfo& info(HostOp op) {
  for (const OpInfo& known : kOps) {
    if (known.op == op) return known;
  }
  throw_internal(fmt::format("mm op {} is not a race's host op", mm::mm_op_name(op)));
}

mm::Pfn mapped_pfn(Lab& lab, uint64_t hva) {
  mm::Pte pte = lab.mm->read_pte_lockless(hva);
  return pte.present() ? pte.pfn() : mm::kNoPfn;
}

// KSM needs an identical twin: copy the guest page into a scratch page, merge,
// then write one word back unchanged to break the KSM page into a private copy.
bool merge_and_break(Lab& lab, uint64_t hva, uint64_t twin) {
  mm::HostCpu cpu(*lab.mm, 1000);
  std::array<uint64_t, mm::kPageSize / 8> content;
  cpu.read(hva, content.data(), mm::kPageSize);
  cpu.write(twin, content.data(), mm::kPageSize);
  bool merged = mm::ksm_merge(*lab.mm, twin, hva);
  if (merged) {
    uint64_t word = cpu.load64(hva);
    uint64_t expected = word;
    cpu.compare_exchange64(hva, expected, word);  // a write: breaks COW, content unchanged
  }
  return merged;
}

}  // namespace

const char* host_op_name(HostOp op) {
  return info(op).name;
}

std::optional<HostOp> parse_host_op(std::string_view name) {
  for (const auto& op : kOps) {
    if (name == op.name) return op.op;
  }
  return std::nullopt;
}

const std::vector<HostOp>& all_host_ops() {
  static const std::vector<HostOp> ops = [] {
    std::vector<HostOp> all;
    for (const auto& op : kOps) all.push_back(op.op);
    return all;
  }();
  return ops;
}

Backing backing_for(HostOp op, bool content_must_survive) {
  if (op == HostOp::kDontneed && !content_must_survive) return Backing::kAnon;
  return info(op).backing;
}
std::string describe(HostOp op) {
  return info(op).description;
}

bool apply_host_op(Lab& lab, HostOp op, spte::Gfn gfn, uint64_t iteration) {
  const uint64_t hva = lab.hva_of(gfn);
  switch (op) {
    case HostOp::kMigrate:
      // migrate_pages() tries a busy page again a few times (a transient GUP
      // reference makes one pass fail), and so do we.
      for (int pass = 0; pass < 10; ++pass) {
        if (mm::migrate_page(*lab.mm, hva)) return true;
        sched::relax(nullptr, "migrate_retry");
      }
      return false;
    case HostOp::kRemap:
      return mm::remap_file_page(*lab.mm, hva,
                                 iteration % 2 == 0 ? lab.spare_file_index(gfn) : gfn);
    case HostOp::kCow: {
      std::unique_ptr<mm::Mm> child = lab.mm->fork();
      bool copied = mm::break_cow(*lab.mm, hva) == mm::FaultResult::kOk;
      child.reset();
      return copied;
    }
    case HostOp::kDontneed:
      return mm::madvise_dontneed(*lab.mm, hva, mm::kPageSize);
    case HostOp::kMprotect:
      return mm::mprotect(*lab.mm, hva, mm::kPageSize, mm::kProtRead) &&
             mm::mprotect(*lab.mm, hva, mm::kPageSize, mm::kProtRead | mm::kProtWrite);
    case HostOp::kMkclean: {
      mm::Pfn pfn = mapped_pfn(lab, hva);
      return pfn != mm::kNoPfn && mm::writeback_page(*lab.file, gfn);
    }
    case HostOp::kKsm:
      return merge_and_break(lab, hva, lab.scratch_hva(gfn));
    case HostOp::kPunchHole:
      // Guest RAM maps the file from offset 0: gfn is the file page.
      return mm::punch_hole(*lab.file, gfn, 1) > 0;
    default:
      break;  // an mm op no race applies
  }
  throw_internal("unknown host operation");
}

}  // namespace sptelab::host
