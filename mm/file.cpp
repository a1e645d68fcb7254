#include "mm/file.h"

#include <fmt/format.h>

#include <algorithm>
#include <mutex>
#include <set>
#include <shared_mutex>

#include "base/error.h"
#include "mm/mm.h"

namespace sptelab::mm {

File::File(PhysMem& phys, std::string name, uint64_t size_pages)
    : phys_(phys),
      name_(std::move(name)),
      id_(phys.new_file_id()),
      size_pages_(size_pages),
      cache_(size_pages, kNoPfn),
      disk_(size_pages) {
  if (size_pages == 0) {
    throw_bad_input(fmt::format("file '{}' must have at least one page", name_));
  }
}

File::~File() {
  std::set<Mm*> mappers;
  {
    std::unique_lock lock(i_mmap_lock_);
    for (const FileMapping& mapping : mappings_) mappers.insert(mapping.mm);
    mappings_.clear();
  }
  for (Mm* mm : mappers) mm->forget_file(this);
  std::vector<Pfn> cached;
  {
    std::lock_guard lock(cache_lock_);
    for (Pfn& pfn : cache_) {
      if (pfn != kNoPfn) cached.push_back(pfn);
      pfn = kNoPfn;
    }
  }
  for (Pfn pfn : cached) {
    // A page still mapped somewhere outlives the file: make it an orphan
    // rather than leave it pointing at a dead File (read under the lock).
    phys_.lock_page(pfn);
    phys_.page(pfn).mapping = nullptr;
    phys_.unlock_page(pfn);
    phys_.put(pfn);
  }
}

uint64_t File::pattern_word(uint32_t file_id, uint64_t index, uint64_t version) {
  return (uint64_t{file_id & 0xffffu} << 48) | ((index & 0xffffffffu) << 16) | (version & 0xffffu);
}

void File::check_index(uint64_t index) const {
  if (index >= size_pages_) {
    throw_bad_input(
        fmt::format("page index {} is beyond file '{}' of {} pages", index, name_, size_pages_));
  }
}

void File::read_disk_locked(uint64_t index, Pfn pfn) {
  std::lock_guard lock(disk_lock_);
  const uint64_t* stored = disk_[index].get();
  for (size_t i = 0; i < PhysMem::kWordsPerFrame; ++i) {
    phys_.store_word(pfn, i, stored ? stored[i] : pattern_word(id_, index, 0));
  }
}

Pfn File::get_page(uint64_t index) {
  const Pfn cached = find_page(index);
  if (cached != kNoPfn) return cached;
  // filemap_add_folio: a new page is set up locked and only then inserted;
  // a racing fault that inserted first wins (-EEXIST) and ours is dropped.
  // The page lock is a scheduling point under `explore` and cache_lock_ is
  // not, so the page is prepared before cache_lock_ is taken: a thread
  // switched out at lock_page must not hold it.
  const Pfn pfn = phys_.alloc(0);
  if (pfn == kNoPfn) return kNoPfn;
  // Set up under the page lock, as Linux adds a locked folio: a migration or
  // reclaim that reaches the frame through a stale pfn reads Page::mapping
  // only under that lock.
  phys_.lock_page(pfn);
  Page& page = phys_.page(pfn);
  page.mapping = this;
  page.index = index;
  read_disk_locked(index, pfn);
  Pfn winner = pfn;
  {
    std::lock_guard lock(cache_lock_);
    if (cache_[index] == kNoPfn) {
      cache_[index] = pfn;  // the cache keeps alloc()'s reference
    } else {
      winner = cache_[index];
    }
    phys_.get(winner);  // the caller's reference
  }
  if (winner != pfn) page.mapping = nullptr;
  phys_.unlock_page(pfn);
  if (winner != pfn) phys_.put(pfn);  // alloc()'s: the lost page is freed
  return winner;
}

Pfn File::find_page(uint64_t index) {
  check_index(index);
  std::lock_guard lock(cache_lock_);
  Pfn pfn = cache_[index];
  if (pfn != kNoPfn) phys_.get(pfn);
  return pfn;
}

Pfn File::cached_pfn(uint64_t index) const {
  check_index(index);
  std::lock_guard lock(cache_lock_);
  return cache_[index];
}

size_t File::cached_pages() const {
  std::lock_guard lock(cache_lock_);
  size_t count = 0;
  for (Pfn pfn : cache_) count += pfn != kNoPfn;
  return count;
}

std::vector<Pfn> File::cached_frames() const {
  std::lock_guard lock(cache_lock_);
  std::vector<Pfn> frames;
  for (Pfn pfn : cache_) {
    if (pfn != kNoPfn) frames.push_back(pfn);
  }
  return frames;
}

bool File::remove_frozen(uint64_t index, Pfn pfn, int32_t expected_refs) {
  check_index(index);
  std::lock_guard lock(cache_lock_);
  if (cache_[index] != pfn) return false;
  // Freezing under the cache lock: a concurrent get_page() either took its
  // reference before (the freeze fails) or finds the slot empty after.
  if (!phys_.ref_freeze(pfn, expected_refs)) return false;
  // Dirtied after the caller's writeback (say by a GUP holder that has just
  // dropped its reference): keep it (__remove_mapping checks this too).
  if (phys_.page(pfn).test(kPageDirty)) {
    phys_.ref_unfreeze(pfn, expected_refs);
    return false;
  }
  cache_[index] = kNoPfn;
  return true;
}

bool File::migrate_page(uint64_t index, Pfn old_pfn, Pfn new_pfn, int32_t expected_refs) {
  check_index(index);
  std::lock_guard lock(cache_lock_);
  if (cache_[index] != old_pfn || !phys_.ref_freeze(old_pfn, expected_refs)) return false;
  phys_.copy_page(new_pfn, old_pfn);
  Page& target = phys_.page(new_pfn);
  target.mapping = this;
  target.index = index;
  phys_.page(old_pfn).mapping = nullptr;
  cache_[index] = new_pfn;
  phys_.ref_unfreeze(old_pfn, expected_refs - 1);
  return true;
}

bool File::remove_page(uint64_t index, Pfn pfn) {
  check_index(index);
  std::lock_guard lock(cache_lock_);
  if (cache_[index] != pfn) return false;
  cache_[index] = kNoPfn;
  return true;
}

void File::set_mappings(Mm* mm, std::vector<FileMapping> mappings) {
  std::unique_lock lock(i_mmap_lock_);
  std::erase_if(mappings_, [&](const FileMapping& mapping) { return mapping.mm == mm; });
  mappings_.insert(mappings_.end(), mappings.begin(), mappings.end());
}

std::vector<FileMapping> File::mappings_of(uint64_t first, uint64_t count) const {
  std::vector<FileMapping> out;
  for (const FileMapping& mapping : mappings_) {
    if (mapping.pgoff < first + count && first < mapping.pgoff + mapping.pages()) {
      out.push_back(mapping);
    }
  }
  // The interval tree's order: by first file page (ties in insertion order).
  std::stable_sort(out.begin(), out.end(),
                   [](const FileMapping& a, const FileMapping& b) { return a.pgoff < b.pgoff; });
  return out;
}

void File::write_disk(uint64_t index, Pfn pfn) {
  check_index(index);
  std::lock_guard lock(disk_lock_);
  std::unique_ptr<uint64_t[]>& stored = disk_[index];
  if (!stored) stored = std::make_unique<uint64_t[]>(PhysMem::kWordsPerFrame);
  for (size_t i = 0; i < PhysMem::kWordsPerFrame; ++i) stored[i] = phys_.load_word(pfn, i);
  writebacks_.fetch_add(1, std::memory_order_relaxed);
}

void File::punch_disk(uint64_t index) {
  check_index(index);
  std::lock_guard lock(disk_lock_);
  // Value-initialised: every word zero.
  disk_[index] = std::make_unique<uint64_t[]>(PhysMem::kWordsPerFrame);
}

uint64_t File::disk_word(uint64_t index, size_t word) const {
  check_index(index);
  std::lock_guard lock(disk_lock_);
  const uint64_t* stored = disk_[index].get();
  return stored ? stored[word] : pattern_word(id_, index, 0);
}

}  // namespace sptelab::mm
