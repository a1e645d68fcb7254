// A KVM virtual machine running one toy guest: one memslot over the guest
// window, one thread per vCPU (named "vcpuN"), the exit loop, the kick and the
// per-run timeout. The VM reaches guest memory only through spte::GuestMemory,
// and the window is that memory's mirror: every spte change is reflected in
// the window before it returns, so the real shadow MMU only ever caches what
// the emulated sptes allow. hypervisor/README.md has the exit-loop rules.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "hypervisor/kvm_device.h"
#include "hypervisor/system_area.h"
#include "spte/mirror.h"

namespace sptelab::hypervisor {

class GuestWindow;
class Vcpu;
struct ElfImage;

// A port access on a scenario port (>= SPTELAB_PORT_SCENARIO_BASE). For an
// `in`, the handler sets value.
struct PortAccess {
  uint32_t vcpu = 0;
  uint16_t port = 0;
  uint8_t size = 0;  // 1, 2 or 4 bytes
  bool write = false;
  uint32_t value = 0;
};
enum class PortResult { kHandled, kUnhandled };
// Runs on the vCPU's thread. To end the run, call Vm::request_stop().
using PortHandler = std::function<PortResult(PortAccess& access)>;

struct GuestReport {
  uint32_t vcpu = 0;
  uint32_t key = 0;
  uint32_t value = 0;
};
// Runs on the reporting vCPU's thread, possibly on several vCPUs at once.
using ReportHandler = std::function<void(const GuestReport& report)>;

// Receives console output a line at a time (with its '\n'; the last piece of
// a run may lack it). Called from vCPU threads, never concurrently.
using ConsoleSink = std::function<void(uint32_t vcpu, std::string_view text)>;

struct VmConfig {
  uint32_t vcpus = 1;
  double timeout_seconds = 60;       // 0: no timeout
  std::string kvm_device;            // empty: default_kvm_device_path()
  std::vector<uint32_t> guest_args;  // read by the guest on SPTELAB_PORT_ARG
  ConsoleSink console;               // empty: stdout
  PortHandler scenario_ports;        // empty: scenario ports end the run (status 2)
  ReportHandler on_report;           // optional observer of SPTELAB_PORT_REPORT_*
  // Runs first on each vCPU thread, before the guest does (the race tags
  // its vCPU threads for delay injection with it).
  std::function<void(uint32_t vcpu)> on_vcpu_thread;
  // Keep the system area (stacks, TSSs, IDT and stubs, GDT, page tables) in
  // its own memslot of plain host memory, outside `memory`: no host
  // operation on guest RAM and no spte zap can make it inaccessible, so the
  // real MMU's walks and exception delivery never fail. Guest RAM's memslot
  // then starts where the system area ends; the pages of `memory` below
  // that are never used by the guest. Off: everything lives in `memory`
  // (zapped page-table pages give spurious #PFs, hypervisor/README.md).
  bool system_memslot = false;
};

// How a run ended, and the process exit status it maps to.
enum class RunEnd : uint8_t {
  kAllHalted,   // every vCPU executed hlt: status 0
  kGuestExit,   // a vCPU wrote SPTELAB_PORT_EXIT: its value (capped at 255)
  kStopped,     // request_stop(): the status given
  kTimeout,     // did not finish in time: status 4
  kNoMemory,    // the host could not provide a page: status 3
  kGuestError,  // the guest crashed or touched what it has not got: status 2
  kInternal,    // KVM refused or failed in a way sptelab cannot explain: status 4
};
const char* run_end_name(RunEnd end);
// The exit status of a run that ended so, for every end that decides it
// (all but kGuestExit and kStopped, whose status is given).
ExitStatus exit_status_of(RunEnd end);

struct VmStats {
  uint64_t exits = 0;
  uint64_t io_exits = 0;
  uint64_t mmio_exits = 0;
  uint64_t hlt_exits = 0;
  uint64_t interrupted = 0;  // KVM_RUN returned EINTR (a kick or a stray signal)
  uint64_t mmio_reads = 0;   // RAM reads completed from the frame
  uint64_t mmio_writes = 0;  // RAM stores performed on the frame
  uint64_t ram_faults = 0;   // GuestMemory::fault calls made by the exit loop
  uint64_t fault_retries = 0;
  uint64_t access_retries = 0;
  uint64_t emulation_retries = 0;     // emulation failures resolved by faulting pages in
  uint64_t spurious_page_faults = 0;  // #PFs KVM injected for an inaccessible page-table page
  uint64_t native_faults = 0;         // EFAULTs from CPL3 code resolved as spte faults
  uint64_t native_unmatched = 0;      // EFAULTs whose instruction needed no page (yet)
  uint64_t native_halts = 0;          // hlt at CPL3 (a #GP) taken as a halt
  uint64_t kick_signals = 0;
  uint64_t console_bytes = 0;
  VmStats& operator+=(const VmStats& other);
};

struct RunResult {
  int exit_status = 0;
  RunEnd end = RunEnd::kAllHalted;
  std::optional<uint32_t> guest_exit_value;  // kGuestExit: the full 32-bit value
  std::string message;                       // one line: why the run ended
  std::string dump;                          // crash dump, empty unless the guest crashed
  std::vector<GuestReport> reports;          // in the order the vCPUs made them
  VmStats stats;
};

class Vm {
 public:
  // Opens KVM (Error kEnvironment if it is missing or unusable), creates the
  // VM, its memslot over `window` and the vCPUs, and attaches `window` as
  // `memory`'s mirror (detached again by the destructor). `window` and
  // `memory` must outlive the Vm and cover the same number of pages.
  Vm(VmConfig config, spte::GuestMemory& memory, GuestWindow& window);
  ~Vm();
  Vm(const Vm&) = delete;
  Vm& operator=(const Vm&) = delete;

  // Builds the system area and loads the image; sets every vCPU's entry
  // state. Error(kBadInput) if the system area does not fit below the image.
  void load(const ElfImage& image);

  // Runs the guest until it exits, every vCPU halts, it crashes, someone
  // calls request_stop(), or the timeout passes. Once per Vm.
  RunResult run();

  // Ends the run from any thread (a scenario, a test): kicks every vCPU out
  // of KVM_RUN. The first end recorded wins.
  void request_stop(int exit_status, std::string message);

  uint32_t vcpu_count() const { return config_.vcpus; }
  uint64_t ram_bytes() const { return ram_bytes_; }
  const SystemLayout& layout() const { return layout_; }
  const KvmDevice& kvm() const { return kvm_; }
  // Guest-physical bytes below this are the system memslot (0 without one).
  uint64_t system_bytes() const { return system_bytes_; }
  // Copies guest memory that is accessible right now (system memslot or
  // window) without faulting anything in; false if some page is not.
  bool read_mapped(uint64_t gpa, void* out, size_t len) const;
  // What the guest may do on gfn now without a fault (system memslot: all).
  spte::Access access_now(spte::Gfn gfn) const;

 private:
  friend class Vcpu;

  void set_memory_region(uint32_t slot, uint64_t gpa, uint64_t bytes, uint8_t* host,
                         const char* what);
  // Records how the run ends, with the status its end maps to
  // (exit_status_of); returns false if an end was already recorded.
  bool finish(RunEnd end, std::string message, std::string dump = {});
  // The same with the status given: a guest's exit value, a stop request's
  // status, the status of the error a layer below threw.
  bool finish_with_status(RunEnd end, int exit_status, std::string message, std::string dump = {},
                          std::optional<uint32_t> guest_exit_value = std::nullopt);
  bool stopping() const { return stopping_.load(std::memory_order_seq_cst); }
  void vcpu_done();
  void console(uint32_t vcpu, std::string_view text);
  void report(const GuestReport& report);
  void stop_all_vcpus();
  std::string vcpu_positions() const;

  VmConfig config_;
  spte::GuestMemory& memory_;
  GuestWindow& window_;
  KvmDevice kvm_;
  Fd vm_fd_;
  uint64_t ram_bytes_ = 0;
  SystemLayout layout_;
  uint8_t* system_memory_ = nullptr;  // VmConfig::system_memslot
  uint64_t system_bytes_ = 0;
  bool loaded_ = false;
  bool ran_ = false;
  std::vector<std::unique_ptr<Vcpu>> vcpus_;

  std::mutex mutex_;  // guards the fields below
  std::condition_variable changed_;
  std::optional<RunResult> end_;
  uint32_t running_ = 0;
  std::vector<GuestReport> reports_;
  std::atomic<bool> stopping_{false};

  std::mutex console_mutex_;
};

}  // namespace sptelab::hypervisor
