#include "host/lab.h"

#include <string>

#include "base/error.h"

namespace sptelab::host {
namespace {

uint64_t frames_for(const LabConfig& config) {
  return config.host_frames ? config.host_frames : config.guest_pages * 3 + 512;
}

}  // namespace

Lab::Lab(const LabConfig& config)
    : phys(frames_for(config), config.freed_frames),
      chain(config.scheme.placement),
      config_(config) {
  if (std::string why = spte::era_requirement(config.scheme, config.era); !why.empty()) {
    throw_bad_input(why);
  }
  // The file is larger than guest RAM so remaps have other pages to install.
  file = std::make_unique<mm::File>(phys, "guest-ram", config.guest_pages * 2 + 16);
  mm = std::make_unique<mm::Mm>(phys);
  mm->set_era(config.era);
  mm->set_notifier_hooks(&chain);
  const uint64_t size = config.guest_pages * mm::kPageSize;
  const uint32_t prot = mm::kProtRead | mm::kProtWrite;
  guest_hva_ = config.backing == Backing::kSharedFile ? mm->mmap_file(*file, 0, size, prot, true)
                                                      : mm->mmap_anon(size, prot);
  scratch_hva_ = mm->mmap_anon(size, prot);
  spte::MmuOptions options;
  options.protocol = config.scheme.protocol;
  options.fault_around = config.fault_around;
  mmu = std::make_unique<spte::Mmu>(*mm, chain, options, violations);
  mmu->add_memslot(0, config.guest_pages, guest_hva_);
}

Lab::~Lab() {
  mmu.reset();  // unregisters from the chain
  mm.reset();   // exit_mmap: release, unmap, free tables
  file.reset();
}

}  // namespace sptelab::host
