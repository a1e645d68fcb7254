// One vCPU: its KVM file descriptor and kvm_run page, its thread, the exit
// loop and the kick. Internal to the hypervisor library; Vm owns the vCPUs.
#pragma once

#include <linux/kvm.h>

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "hypervisor/guest_physical.h"
#include "hypervisor/kvm_device.h"
#include "hypervisor/vm.h"

namespace sptelab::hypervisor {

// Installs the empty SIGUSR1 handler (without SA_RESTART) that kicks use to
// interrupt KVM_RUN. Process-wide, idempotent.
void install_kick_signal_handler();

class Vcpu {
 public:
  Vcpu(Vm& vm, uint32_t index);
  ~Vcpu();
  Vcpu(const Vcpu&) = delete;
  Vcpu& operator=(const Vcpu&) = delete;

  // Entry state of the guest ABI: long mode, the system area's GDT/IDT/TSS,
  // rip = entry, rsp = top of this vCPU's stack, rdi/rsi/rdx.
  void configure(const SystemLayout& layout, uint64_t entry);

  void start();
  // Makes the thread leave KVM_RUN for good (the VM must be stopping):
  // immediate_exit plus one SIGUSR1, without waiting.
  void request_exit();
  // request_exit(), then SIGUSR1 again until the thread acknowledges.
  void kick();
  void join();

  uint32_t index() const { return index_; }
  uint64_t rip();                                  // after join
  const VmStats& stats() const { return stats_; }  // after join
  uint64_t kick_signals() const { return kick_signals_; }

 private:
  enum class Next { kContinue, kHalt, kEnd };

  void thread_main();
  void run_loop();
  Next handle_exit();
  Next handle_mmio();
  Next handle_io();
  // One port access of an `in`/`out` exit; `value` holds the bytes written
  // (out) and takes the answer (in).
  struct PortIo {
    uint16_t port;
    uint8_t size;
    bool write;
    uint32_t value;
  };
  // The handler of one ABI port (guest/sptelab_abi.h), from the table
  // kAbiPorts in vcpu.cpp; nullopt: not an access this port takes.
  using PortHandler = std::optional<Next> (Vcpu::*)(PortIo& io);
  struct AbiPort {
    uint16_t port;
    PortHandler handle;
  };
  static const AbiPort kAbiPorts[];
  Next handle_port(uint16_t port, uint8_t size, bool write, uint8_t* data);
  std::optional<Next> port_console(PortIo& io);
  std::optional<Next> port_exit(PortIo& io);
  std::optional<Next> port_exception(PortIo& io);
  std::optional<Next> port_arg(PortIo& io);
  std::optional<Next> port_report_key(PortIo& io);
  std::optional<Next> port_report_value(PortIo& io);
  std::optional<Next> port_of_scenario(PortIo& io);
  Next handle_exception_report(uint32_t vector);
  Next handle_internal_error();
  Next handle_native_fault();
  Next memory_failure(const MemoryFailure& failure, const char* doing);
  // Ends the run with a crash dump; the status is the end's (exit_status_of).
  Next crash(RunEnd end, std::string headline, std::vector<std::string> details = {},
             const kvm_regs* regs_override = nullptr);
  bool making_progress(const kvm_regs& state);
  // The page of the current instruction's memory operand, if it decodes.
  std::optional<spte::Gfn> operand_gfn(const kvm_regs& regs, const kvm_sregs& sregs);
  void resume_at(const kvm_regs& regs, bool user = false);
  void flush_console();
  std::vector<std::string> inaccessible_system_pages();

  kvm_regs regs();
  kvm_sregs sregs();
  uint64_t current_rip();

  Vm& vm_;
  uint32_t index_;
  Fd fd_;
  kvm_run* run_ = nullptr;
  size_t run_size_ = 0;
  bool sync_regs_ = false;
  bool sync_sregs_ = false;
  GuestPhysical memory_;
  std::thread thread_;
  std::atomic<bool> exited_{false};
  uint64_t kick_signals_ = 0;

  // State of the exit loop (vCPU thread only).
  VmStats stats_;
  std::string console_line_;
  uint32_t arg_index_ = 0;
  uint32_t report_key_ = 0;
  struct LastMmio {
    uint64_t gfn = 0;
    uint64_t rip = 0;
  };
  std::optional<LastMmio> last_mmio_;
  kvm_regs recovery_state_{};  // registers at the last recovery
  uint64_t recoveries_in_place_ = 0;
  uint64_t unmatched_in_a_row_ = 0;  // EFAULTs that named no denied page
};

}  // namespace sptelab::hypervisor
