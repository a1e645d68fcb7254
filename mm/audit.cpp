#include "mm/audit.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <mutex>

namespace sptelab::mm {
namespace {

struct Expected {
  int32_t mappings = 0;
  int32_t cached = 0;
  std::vector<std::pair<const Mm*, uint64_t>> rmap;
};

}  // namespace

std::vector<std::string> audit(PhysMem& phys, const std::vector<const Mm*>& mms,
                               const std::vector<const File*>& files, AuditOptions options) {
  std::vector<std::string> problems;
  std::map<Pfn, Expected> expected;
  std::map<Pfn, int> tables;

  for (const Mm* mm : mms) {
    for (Pfn table : mm->table_frames()) ++tables[table];
    mm->for_each_pte([&](uint64_t addr, Pte pte) {
      if (pte.is_migration()) {
        problems.push_back(
            fmt::format("migration entry left at {:#x} (pfn {:#x})", addr, pte.pfn()));
        return;
      }
      if (!pte.maps_page()) {
        problems.push_back(fmt::format("unknown PTE {:#x} at {:#x}", pte.raw(), addr));
        return;
      }
      if (!phys.valid(pte.pfn())) {
        problems.push_back(
            fmt::format("PTE at {:#x} maps pfn {:#x} beyond memory", addr, pte.pfn()));
        return;
      }
      if (phys.is_zero_pfn(pte.pfn())) {
        if (pte.writable()) problems.push_back(fmt::format("zero page writable at {:#x}", addr));
        return;
      }
      Expected& e = expected[pte.pfn()];
      ++e.mappings;
      e.rmap.emplace_back(mm, addr);
    });
  }
  for (const File* file : files) {
    for (Pfn pfn : file->cached_frames()) ++expected[pfn].cached;
  }

  for (Pfn pfn = 0; pfn < phys.frame_count(); ++pfn) {
    Page& page = phys.page(pfn);
    const int32_t refcount = page.refcount.load(std::memory_order_acquire);
    const int32_t mapcount = page.mapcount.load(std::memory_order_acquire);
    std::vector<std::pair<const Mm*, uint64_t>> rmap;
    {
      std::lock_guard lock(page.rmap_lock);
      for (const RmapEntry& entry : page.rmap) rmap.emplace_back(entry.mm, entry.addr);
    }
    auto found = expected.find(pfn);
    auto table = tables.find(pfn);

    if (page.test(kPageFree)) {
      if (found != expected.end() || table != tables.end()) {
        problems.push_back(fmt::format("pfn {:#x} is free but still mapped or cached", pfn));
      }
      if (refcount != 0 || mapcount != 0 || !rmap.empty()) {
        problems.push_back(fmt::format("free pfn {:#x} has refcount {} mapcount {} rmap {}", pfn,
                                       refcount, mapcount, rmap.size()));
      }
      // Generation 0: never allocated, still the memfd's zeros.
      if (options.check_free_poison && phys.poisons_freed_frames() && phys.generation(pfn) != 0 &&
          !phys.is_poisoned(pfn)) {
        problems.push_back(fmt::format("free pfn {:#x} was written after it was freed", pfn));
      }
      continue;
    }
    if (table != tables.end()) {
      if (!page.test(kPageTable) || refcount != 1 || table->second != 1) {
        problems.push_back(fmt::format("page-table pfn {:#x}: flagged {} refcount {} owners {}",
                                       pfn, page.test(kPageTable), refcount, table->second));
      }
      continue;
    }
    if (phys.is_zero_pfn(pfn)) {
      if (!page.test(kPageZero) || mapcount != 0 || !rmap.empty() || refcount < 1) {
        problems.push_back(fmt::format("zero page pfn {:#x}: refcount {} mapcount {} rmap {}", pfn,
                                       refcount, mapcount, rmap.size()));
      }
      continue;
    }
    if (found == expected.end()) {
      if (!options.allow_unowned) {
        problems.push_back(fmt::format(
            "pfn {:#x} is allocated (refcount {}) but neither mapped nor cached: leaked", pfn,
            refcount));
      }
      continue;
    }
    const Expected& e = found->second;
    if (mapcount != e.mappings) {
      problems.push_back(
          fmt::format("pfn {:#x}: mapcount {} but {} PTEs map it", pfn, mapcount, e.mappings));
    }
    if (refcount != e.mappings + e.cached) {
      problems.push_back(fmt::format("pfn {:#x}: refcount {} but {} mappings + {} page-cache", pfn,
                                     refcount, e.mappings, e.cached));
    }
    std::vector<std::pair<const Mm*, uint64_t>> want = e.rmap;
    std::sort(want.begin(), want.end());
    std::sort(rmap.begin(), rmap.end());
    if (want != rmap) {
      problems.push_back(
          fmt::format("pfn {:#x}: rmap has {} entries, page tables {} (or they differ)", pfn,
                      rmap.size(), want.size()));
    }
  }
  return problems;
}

}  // namespace sptelab::mm
