// A complete emulated host with one secondary MMU: physical memory, a shared
// file, an address space whose notifier chain uses the scheme's placement, and
// an spte::Mmu with the scheme's protocol over guest RAM. Race scenarios and
// tests build on it; the software and KVM backends both run guests over it.
#pragma once

#include <cstdint>
#include <memory>

#include "mm/file.h"
#include "mm/mm.h"
#include "mm/phys_mem.h"
#include "mmu_notifier/chain.h"
#include "spte/mmu.h"
#include "spte/scheme.h"
#include "spte/violations.h"

namespace sptelab::host {

// What backs guest RAM in the host: a shared file mapping (QEMU's
// memory-backend-file,share=on: remap, mkclean, reclaim apply) or private
// anonymous memory (migrate, COW, KSM, dontneed discard content).
enum class Backing : uint8_t { kSharedFile, kAnon };

struct LabConfig {
  spte::Scheme scheme;
  uint64_t guest_pages = 64;
  Backing backing = Backing::kSharedFile;
  uint64_t host_frames = 0;  // 0: guest_pages * 3 + 512 (page tables, copies, spare file pages)
  uint32_t fault_around = 0;
  // The host's kernel era (mm/kernel_era.h): the CLI's --era unless a
  // caller (an explore cell) names one.
  mm::KernelEra era = mm::process_kernel_era();
  // Whether freed frames are poisoned (mm/phys_mem.h): kept where an
  // mm::audit reads the poison.
  mm::FreedFrames freed_frames = mm::FreedFrames::kPoisoned;
};

class Lab {
 public:
  explicit Lab(const LabConfig& config);
  ~Lab();
  Lab(const Lab&) = delete;
  Lab& operator=(const Lab&) = delete;

  const LabConfig& config() const { return config_; }
  uint64_t hva_of(spte::Gfn gfn) const { return guest_hva_ + gfn * mm::kPageSize; }
  uint64_t guest_hva() const { return guest_hva_; }
  // File pages beyond guest RAM, free for remap targets.
  uint64_t spare_file_index(uint64_t n) const { return config_.guest_pages + n; }
  // Host-only anonymous scratch pages, one per guest page (KSM twins).
  uint64_t scratch_hva(spte::Gfn gfn) const { return scratch_hva_ + gfn * mm::kPageSize; }

  mm::PhysMem phys;
  mmu_notifier::Chain chain;  // before mm: ~Mm calls release on it
  std::unique_ptr<mm::File> file;
  std::unique_ptr<mm::Mm> mm;
  spte::ViolationLog violations;
  std::unique_ptr<spte::Mmu> mmu;

 private:
  LabConfig config_;
  uint64_t guest_hva_ = 0;
  uint64_t scratch_hva_ = 0;
};

}  // namespace sptelab::host
