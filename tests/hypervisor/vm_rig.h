// A VM on a test-chosen GuestMemory (the FakeMemory double, or the direct
// baseline) with the console captured, for the KVM tests.
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "hypervisor/direct_memory.h"
#include "hypervisor/elf.h"
#include "hypervisor/guest_window.h"
#include "hypervisor/vm.h"
#include "mm/phys_mem.h"
#include "tests/hypervisor/fake_memory.h"

namespace sptelab::hypervisor::testing {

enum class Backing { kFake, kDirect };

class VmRig {
 public:
  // spare_frames: extra physical frames (migration targets).
  VmRig(uint64_t ram_bytes, VmConfig config, Backing backing = Backing::kFake,
        uint64_t spare_frames = 64)
      : phys_(ram_bytes / mm::kPageSize + spare_frames) {
    uint64_t pages = ram_bytes / mm::kPageSize;
    if (backing == Backing::kFake) {
      auto fake = std::make_unique<FakeMemory>(phys_, pages);
      fake_ = fake.get();
      memory_ = std::move(fake);
    } else {
      memory_ = std::make_unique<DirectMemory>(phys_, pages);
    }
    window_ = std::make_unique<GuestWindow>(phys_, pages);
    config.console = [this](uint32_t, std::string_view text) {
      std::lock_guard lock(console_mutex_);
      console_ += text;
    };
    vm_ = std::make_unique<Vm>(std::move(config), *memory_, *window_);
  }

  ~VmRig() {
    vm_.reset();  // stops the vCPUs and detaches the window first
  }

  RunResult run(const std::string& image_path) {
    vm_->load(read_elf_file(image_path, vm_->ram_bytes()));
    return vm_->run();
  }

  Vm& vm() { return *vm_; }
  FakeMemory& fake() { return *fake_; }
  spte::GuestMemory& memory() { return *memory_; }
  GuestWindow& window() { return *window_; }
  std::string console() {
    std::lock_guard lock(console_mutex_);
    return console_;
  }

 private:
  mm::PhysMem phys_;
  std::unique_ptr<spte::GuestMemory> memory_;
  FakeMemory* fake_ = nullptr;
  std::unique_ptr<GuestWindow> window_;
  std::unique_ptr<Vm> vm_;
  std::mutex console_mutex_;
  std::string console_;
};

}  // namespace sptelab::hypervisor::testing
