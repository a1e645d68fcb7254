// Runs the benchtouch guest (touch.c) on a guest stack and times its passes
// from the host: each vCPU reports the start and end of every pass and the
// report handler, which runs on that vCPU's thread, reads the clocks. VM
// setup, image loading and teardown are outside every pass.
//
// Two clocks: the wall clock (a pass lasts from its first start to its last
// end) and each vCPU thread's CPU time. Everything a page touch costs, on
// either stack, runs on the vCPU's thread: the guest's instructions (KVM's
// emulator here), the real KVM's fault, and for emulated sptes the exit, the
// spte fault and the window's mmap. Its CPU time leaves out the time the
// thread waited for a CPU, which on a loaded 2-CPU machine is most of the
// noise.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "host/run_stack.h"
#include "hypervisor/vm.h"

namespace sptelab::bench {

struct TouchConfig {
  std::string guest_path;  // benchtouch.elf
  uint64_t ram_bytes = 0;
  uint32_t vcpus = 1;
  uint64_t pages = 0;  // pages touched per pass, over all vCPUs
  bool random = false;
  uint32_t stride = 1;  // touch every stride-th page
  uint32_t passes = 3;
  uint32_t seed = 1;
  bool native = false;     // the passes run at CPL3 (guest/README.md, "Native mode")
  bool port_loop = false;  // each page is an exit on BENCH_TOUCH_PORT, not a store
  double timeout_seconds = 120;
};

struct TouchRun {
  std::vector<double> pass_seconds;       // CPU time of the vCPU threads, summed, per pass
  std::vector<double> pass_wall_seconds;  // wall clock per pass
  uint64_t pages = 0;                     // pages each pass touched, as the guest reported
  hypervisor::VmStats vm_stats;
};

// Builds the stack for a VM configuration (the report handler is set in it).
using StackBuilder = std::function<std::unique_ptr<host::RunStack>(const hypervisor::VmConfig& vm)>;
// Called with the stack before the image is loaded, and after the guest has
// ended (the VM and its real shadow MMU still exist then).
using StackHook = std::function<void(host::RunStack& stack)>;

// Throws Error(kInternal) if the guest does not end with status 0 or its
// reports are incomplete.
TouchRun run_touch(const TouchConfig& config, const StackBuilder& build,
                   const StackHook& before = {}, const StackHook& after = {});

// The first guest page benchtouch touches: the page after its image.
uint64_t touch_first_gfn(const std::string& guest_path, uint64_t ram_bytes);

}  // namespace sptelab::bench
