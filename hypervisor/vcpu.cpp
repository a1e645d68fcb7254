#include "hypervisor/vcpu.h"

#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <mutex>
#include <stdexcept>

#include <fmt/core.h>

#include "base/error.h"
#include "base/x86_pte.h"
#include "guest/sptelab_abi.h"
#include "hypervisor/dump.h"
#include "hypervisor/guest_window.h"
#include "hypervisor/native_fault.h"
#include "hypervisor/operand.h"
#include "trace/insn.h"
#include "trace/symbols.h"
#include "trace/trace.h"

namespace sptelab::hypervisor {
namespace {

constexpr int kKickSignal = SIGUSR1;
// Recoveries (emulation failures, spurious #PFs) with identical registers
// before the loop gives up: a page that is zapped again every time the vCPU
// re-enters could otherwise spin forever.
constexpr uint64_t kMaxRecoveries = 100000;
// EFAULTs in a row whose instruction touches no denied page. One can be a
// race (another vCPU faulted the page in between); this many is something
// else failing.
constexpr uint64_t kMaxUnmatchedEfaults = 10000;
// x86-64's largest physical address (52 bits).
constexpr uint64_t kMaxPhysicalAddress = uint64_t{1} << 52;
// Retries in place of an emulation failure that names no guest page.
constexpr uint64_t kMaxBlindRecoveries = 64;

constexpr uint64_t kCr0 = (1ull << 0)       // PE
                          | (1ull << 1)     // MP
                          | (1ull << 4)     // ET
                          | (1ull << 5)     // NE
                          | (1ull << 16)    // WP
                          | (1ull << 18)    // AM
                          | (1ull << 31);   // PG
constexpr uint64_t kCr4 = (1ull << 5)       // PAE
                          | (1ull << 9)     // OSFXSR
                          | (1ull << 10);   // OSXMMEXCPT
constexpr uint64_t kEfer = (1ull << 8)      // LME
                           | (1ull << 10);  // LMA
constexpr uint64_t kRflagsReserved = 1ull << 1;

void kick_handler(int) {}

// ---- the instruction behind an exit, for the trace (kVcpuInsn) ----
// Read without disturbing the run: the guest page tables and the code are
// read only where the guest window maps them (GuestWindow::read_mapped), so
// tracing never faults an spte in, ages or dirties one, and costs no system
// call but KVM_GET_SREGS. What it cannot read is not recorded.

// The 4-level long-mode walk of dump.cpp, reading only what is mapped now.
std::optional<uint64_t> window_translate(const Vm& window, const kvm_sregs& s, uint64_t linear) {
  if (!(s.cr0 & x86::kCr0Paging)) return linear;
  if (!(s.efer & x86::kEferLma) || (s.cr4 & x86::kCr4La57)) return std::nullopt;
  uint64_t table = s.cr3 & x86::kPteAddressMask;
  for (int level = 4; level >= 1; --level) {
    unsigned shift = 12 + 9 * static_cast<unsigned>(level - 1);
    uint64_t entry = 0;
    if (!window.read_mapped(table + ((linear >> shift) & 511) * 8, &entry, sizeof entry) ||
        !(entry & x86::kPtePresent)) {
      return std::nullopt;
    }
    if (level == 1 || ((level == 2 || level == 3) && (entry & x86::kPteLarge))) {
      uint64_t page_mask = (uint64_t{1} << shift) - 1;
      return ((entry & x86::kPteAddressMask) & ~page_mask) | (linear & page_mask);
    }
    table = entry & x86::kPteAddressMask;
  }
  return std::nullopt;
}

void trace_instruction(const Vm& window, const kvm_sregs& s, uint64_t rip) {
  uint8_t bytes[trace::kMaxInsnBytes];
  size_t got = 0;
  while (got < sizeof bytes) {  // page by page: an instruction may cross a page
    uint64_t at = rip + got;
    size_t chunk = std::min<size_t>(sizeof bytes - got, 4096 - (at & 4095));
    std::optional<uint64_t> gpa = window_translate(window, s, at);
    if (!gpa || !window.read_mapped(*gpa, bytes + got, chunk)) break;
    got += chunk;
  }
  if (got > 0) trace::emit_vcpu_insn(rip, bytes, got);
}

// Exits whose rip is the instruction that caused them: an MMIO read (a
// locked read-modify-write exits as a read) and an emulation failure. After
// an MMIO write KVM has already moved rip past the store, so the bytes at
// rip would name the wrong instruction.
bool rip_names_the_instruction(const kvm_run& run) {
  return (run.exit_reason == KVM_EXIT_MMIO && !run.mmio.is_write) ||
         run.exit_reason == KVM_EXIT_INTERNAL_ERROR;
}

kvm_segment flat_segment(uint16_t selector, bool code) {
  kvm_segment segment{};
  segment.base = 0;
  segment.limit = 0xffffffff;
  segment.selector = selector;
  segment.type = code ? 11 : 3;  // execute/read accessed; read/write accessed
  segment.present = 1;
  segment.dpl = 0;
  segment.db = code ? 0 : 1;
  segment.s = 1;
  segment.l = code ? 1 : 0;
  segment.g = 1;
  return segment;
}

}  // namespace

void install_kick_signal_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction action {};
    action.sa_handler = kick_handler;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0;  // no SA_RESTART: the signal must interrupt KVM_RUN
    sigaction(kKickSignal, &action, nullptr);
  });
}

Vcpu::Vcpu(Vm& vm, uint32_t index)
    : vm_(vm), index_(index), memory_(vm.memory_, index, &vm.stopping_) {
  memory_.set_fixed(vm.system_memory_, vm.system_bytes_);
  fd_ = Fd(ioctl(vm.vm_fd_.get(), KVM_CREATE_VCPU, static_cast<unsigned long>(index)));
  if (!fd_.valid()) {
    throw_environment(
        fmt::format("KVM_CREATE_VCPU {} failed: {}; the KVM backend may limit "
                    "vCPUs (it reports at most {})",
                    index, std::strerror(errno), vm.kvm_.max_vcpus()));
  }
  run_size_ = vm.kvm_.vcpu_mmap_size();
  void* run = mmap(nullptr, run_size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
  if (run == MAP_FAILED) {
    throw_environment(fmt::format("cannot map vCPU {}'s kvm_run: {}", index, std::strerror(errno)));
  }
  run_ = static_cast<kvm_run*>(run);
  sync_regs_ = vm.kvm_.has_sync_regs();
  // The special registers too: an EFAULT (native mode) needs cr3 and the
  // segments, and KVM stores them even then (saves a KVM_GET_SREGS).
  sync_sregs_ =
      sync_regs_ && (vm.kvm_.check_extension(KVM_CAP_SYNC_REGS) & KVM_SYNC_X86_SREGS) != 0;
  if (sync_regs_) run_->kvm_valid_regs = KVM_SYNC_X86_REGS;
  if (sync_sregs_) run_->kvm_valid_regs |= KVM_SYNC_X86_SREGS;
}

Vcpu::~Vcpu() {
  if (thread_.joinable()) {
    kick();
    join();
  }
  if (run_ != nullptr) munmap(run_, run_size_);
}

void Vcpu::configure(const SystemLayout& layout, uint64_t entry) {
  const auto& cpuid = vm_.kvm_.supported_cpuid();
  if (!cpuid.empty()) {
    std::vector<uint8_t> buffer(sizeof(kvm_cpuid2) + cpuid.size() * sizeof(kvm_cpuid_entry2));
    auto* table = reinterpret_cast<kvm_cpuid2*>(buffer.data());
    table->nent = static_cast<uint32_t>(cpuid.size());
    std::copy(cpuid.begin(), cpuid.end(), table->entries);
    if (ioctl(fd_.get(), KVM_SET_CPUID2, table) != 0) {
      throw_environment(fmt::format("KVM_SET_CPUID2 failed: {}", std::strerror(errno)));
    }
  }

  kvm_sregs s = sregs();
  s.cs = flat_segment(kCodeSelector, true);
  s.ds = s.es = s.fs = s.gs = s.ss = flat_segment(kDataSelector, false);
  s.tr = kvm_segment{};
  s.tr.base = layout.tss_address(index_);
  s.tr.limit = SystemLayout::kTssBytes - 1;
  s.tr.selector = layout.tss_selector(index_);
  s.tr.type = 11;  // busy 64-bit TSS
  s.tr.present = 1;
  s.gdt.base = layout.gdt;
  s.gdt.limit = layout.gdt_limit();
  s.idt.base = layout.idt;
  s.idt.limit = layout.idt_limit();
  s.cr0 = kCr0;
  s.cr3 = layout.pml4;
  s.cr4 = kCr4;
  s.efer = kEfer;
  if (ioctl(fd_.get(), KVM_SET_SREGS, &s) != 0) {
    throw_environment(
        fmt::format("KVM_SET_SREGS (long mode) failed: {}; this KVM cannot run "
                    "64-bit guests",
                    std::strerror(errno)));
  }
  kvm_regs r{};
  r.rip = entry;
  r.rsp = layout.stack_top(index_);
  r.rflags = kRflagsReserved;  // interrupts off
  r.rdi = index_;
  r.rsi = layout.vcpus;
  r.rdx = layout.ram_bytes;
  if (ioctl(fd_.get(), KVM_SET_REGS, &r) != 0) {
    throw_environment(fmt::format("KVM_SET_REGS failed: {}", std::strerror(errno)));
  }
}

void Vcpu::start() {
  thread_ = std::thread([this] { thread_main(); });
}

void Vcpu::kick() {
  // immediate_exit makes a KVM_RUN that has not started yet return at once;
  // the signal interrupts one in progress. The loop re-checks stopping()
  // before every KVM_RUN, so the retries only cover a signal that arrived
  // while the thread was outside KVM_RUN.
  if (!thread_.joinable()) return;  // never started
  request_exit();
  auto delay = std::chrono::microseconds(50);
  while (!exited_.load(std::memory_order_acquire)) {
    std::this_thread::sleep_for(delay);
    delay = std::min(delay * 2, std::chrono::microseconds(5000));
    if (exited_.load(std::memory_order_acquire)) break;
    pthread_kill(thread_.native_handle(), kKickSignal);
    ++kick_signals_;
  }
}

void Vcpu::request_exit() {
  if (!thread_.joinable() || exited_.load(std::memory_order_acquire)) return;
  __atomic_store_n(&run_->immediate_exit, 1, __ATOMIC_SEQ_CST);
  pthread_kill(thread_.native_handle(), kKickSignal);
  ++kick_signals_;
}

void Vcpu::join() {
  if (thread_.joinable()) thread_.join();
}

kvm_regs Vcpu::regs() {
  kvm_regs r{};
  if (ioctl(fd_.get(), KVM_GET_REGS, &r) != 0) std::memset(&r, 0, sizeof(r));
  return r;
}

kvm_sregs Vcpu::sregs() {
  kvm_sregs s{};
  if (ioctl(fd_.get(), KVM_GET_SREGS, &s) != 0) std::memset(&s, 0, sizeof(s));
  return s;
}

uint64_t Vcpu::current_rip() {
  return sync_regs_ ? run_->s.regs.regs.rip : regs().rip;
}

uint64_t Vcpu::rip() {
  return regs().rip;
}

void Vcpu::thread_main() {
  std::string name = fmt::format("vcpu{}", index_);
  pthread_setname_np(pthread_self(), name.c_str());
  trace::name_this_thread(name);
  if (vm_.config_.on_vcpu_thread) vm_.config_.on_vcpu_thread(index_);
  sigset_t kick_set;
  sigemptyset(&kick_set);
  sigaddset(&kick_set, kKickSignal);
  pthread_sigmask(SIG_UNBLOCK, &kick_set, nullptr);

  try {
    run_loop();
  } catch (const Error& error) {
    // A layer below gave up (e.g. the window ran out of mappings).
    vm_.finish_with_status(RunEnd::kInternal, static_cast<int>(error.status()),
                           fmt::format("vcpu{}: {}", index_, error.what()));
  } catch (const std::exception& error) {
    vm_.finish(RunEnd::kInternal, fmt::format("vcpu{}: internal error: {}", index_, error.what()));
  }
  flush_console();
  const GuestPhysicalStats& memory = memory_.stats();
  stats_.ram_faults = memory.faults;
  stats_.fault_retries = memory.fault_retries;
  stats_.access_retries = memory.access_retries;
  exited_.store(true, std::memory_order_release);
  vm_.vcpu_done();
}

void Vcpu::run_loop() {
  // A traced run reads cr3 at the exits that record their instruction; KVM
  // stores the special registers in kvm_run at every exit (sync_sregs_).
  const bool sregs_synced = sync_sregs_;
  while (!vm_.stopping()) {
    if (ioctl(fd_.get(), KVM_RUN, 0) < 0) {
      if (errno == EINTR || errno == EAGAIN) {
        ++stats_.interrupted;
        continue;
      }
      if (errno == EFAULT) {
        if (handle_native_fault() != Next::kContinue) return;
        trace::emit(trace::Kind::kVcpuEntry, index_);
        continue;
      }
      crash(RunEnd::kInternal, fmt::format("KVM_RUN failed: {}", std::strerror(errno)));
      return;
    }
    ++stats_.exits;
    if (trace::enabled()) {
      uint64_t gpa = run_->exit_reason == KVM_EXIT_MMIO ? run_->mmio.phys_addr : 0;
      uint64_t rip = current_rip();
      trace::emit(trace::Kind::kVcpuExit, index_, run_->exit_reason, rip, gpa);
      if (rip_names_the_instruction(*run_)) {
        trace_instruction(vm_, sregs_synced ? run_->s.regs.sregs : sregs(), rip);
      }
    }
    if (handle_exit() != Next::kContinue) return;
    trace::emit(trace::Kind::kVcpuEntry, index_);
  }
}

Vcpu::Next Vcpu::handle_exit() {
  switch (run_->exit_reason) {
    case KVM_EXIT_MMIO:
      ++stats_.mmio_exits;
      return handle_mmio();
    case KVM_EXIT_IO:
      ++stats_.io_exits;
      return handle_io();
    case KVM_EXIT_HLT:
      ++stats_.hlt_exits;
      return Next::kHalt;
    case KVM_EXIT_INTR:
      ++stats_.interrupted;
      return Next::kContinue;
    case KVM_EXIT_INTERNAL_ERROR:
      return handle_internal_error();
    case KVM_EXIT_SHUTDOWN: {
      std::vector<std::string> details = {
          "KVM_EXIT_SHUTDOWN: an exception could not be delivered (the guest's IDT, GDT, stack "
          "or page tables are broken, or the guest loaded its own empty IDT)"};
      for (std::string& page : inaccessible_system_pages()) details.push_back(std::move(page));
      return crash(RunEnd::kGuestError, "the guest triple-faulted", std::move(details));
    }
    case KVM_EXIT_FAIL_ENTRY:
      return crash(
          RunEnd::kInternal, "KVM could not enter the guest (KVM_EXIT_FAIL_ENTRY)",
          {fmt::format("hardware entry failure reason {:#x}, cpu {}",
                       run_->fail_entry.hardware_entry_failure_reason, run_->fail_entry.cpu)});
    default:
      return crash(RunEnd::kInternal, fmt::format("unexpected KVM exit {} ({})", run_->exit_reason,
                                                  trace::kvm_exit_name(run_->exit_reason)));
  }
}

// docs/design.md, "The hypervisor and real hardware": an MMIO exit on a RAM gfn is
// an spte fault. For a read, rip has not moved and KVM finishes the load
// with the data we put in the exit, read from the frame (never zeros); a
// locked read-modify-write gives this same read exit and KVM then completes
// it atomically on the window page, which the fault has just mapped. For a
// plain store, rip has moved on and the store is ours to perform.
Vcpu::Next Vcpu::handle_mmio() {
  uint64_t gpa = run_->mmio.phys_addr;
  uint32_t len = run_->mmio.len;
  bool write = run_->mmio.is_write;
  uint64_t rip = current_rip();
  if (gpa >= vm_.ram_bytes_ || len > vm_.ram_bytes_ - gpa) {
    return crash(RunEnd::kGuestError,
                 fmt::format("guest touched memory it has not got: gpa={:#x}, rip={:#x}", gpa, rip),
                 {fmt::format("{}-byte {} beyond the {:#x} bytes of guest RAM", len,
                              write ? "write" : "read", vm_.ram_bytes_)});
  }
  last_mmio_ = LastMmio{gpa >> 12, rip};
  auto failure =
      write ? memory_.store(gpa, run_->mmio.data, len) : memory_.load(gpa, run_->mmio.data, len);
  if (failure) return memory_failure(*failure, write ? "a guest store" : "a guest load");
  ++(write ? stats_.mmio_writes : stats_.mmio_reads);
  return Next::kContinue;
}

Vcpu::Next Vcpu::memory_failure(const MemoryFailure& failure, const char* doing) {
  uint64_t rip = current_rip();
  switch (failure.outcome) {
    case spte::FaultOutcome::kRetry:
      return Next::kEnd;  // the run is ending while the fault kept being retried
    case spte::FaultOutcome::kNoMemory:
      return crash(RunEnd::kNoMemory,
                   fmt::format("the host ran out of memory for {} at gpa={:#x}, rip={:#x}; give "
                               "the emulated host more frames",
                               doing, failure.gpa, rip));
    case spte::FaultOutcome::kBadAccess:
      return crash(
          RunEnd::kGuestError,
          fmt::format("guest wrote read-only memory: gpa={:#x}, rip={:#x}", failure.gpa, rip));
    default:
      return crash(RunEnd::kGuestError,
                   fmt::format("guest touched memory it has not got: gpa={:#x}, rip={:#x}",
                               failure.gpa, rip),
                   {failure.describe()});
  }
}

Vcpu::Next Vcpu::handle_io() {
  auto& io = run_->io;
  uint8_t* data = reinterpret_cast<uint8_t*>(run_) + io.data_offset;
  bool write = io.direction == KVM_EXIT_IO_OUT;
  // String I/O (rep outsb) arrives as `count` elements of `size` bytes.
  for (uint32_t i = 0; i < io.count; ++i) {
    Next next = handle_port(io.port, io.size, write, data + i * io.size);
    if (next != Next::kContinue) return next;
  }
  return Next::kContinue;
}

// The ports of the guest ABI, in the order they are looked up.
const Vcpu::AbiPort Vcpu::kAbiPorts[] = {
    {SPTELAB_PORT_CONSOLE, &Vcpu::port_console},
    {SPTELAB_PORT_EXIT, &Vcpu::port_exit},
    {SPTELAB_PORT_EXCEPTION, &Vcpu::port_exception},
    {SPTELAB_PORT_ARG, &Vcpu::port_arg},
    {SPTELAB_PORT_REPORT_KEY, &Vcpu::port_report_key},
    {SPTELAB_PORT_REPORT_VALUE, &Vcpu::port_report_value},
};

Vcpu::Next Vcpu::handle_port(uint16_t port, uint8_t size, bool write, uint8_t* data) {
  const size_t bytes = std::min<size_t>(size, 4);
  PortIo io{port, size, write, 0};
  std::memcpy(&io.value, data, bytes);
  std::optional<Next> next;
  for (const AbiPort& abi : kAbiPorts) {
    if (abi.port == port) next = (this->*abi.handle)(io);
  }
  if (!next && port >= SPTELAB_PORT_SCENARIO_BASE) next = port_of_scenario(io);
  if (next) {
    if (!write) std::memcpy(data, &io.value, bytes);
    return *next;
  }
  std::string what =
      fmt::format("{} port {:#x} ({} bytes)", write ? "out to" : "in from", port, size);
  std::string why = port >= SPTELAB_PORT_SCENARIO_BASE
                        ? "scenario ports need the scenario that defines them, and none handled it"
                        : "sptelab does not provide it (guest/README.md lists the ports)";
  return crash(RunEnd::kGuestError, fmt::format("guest used an I/O port it has not got: {}", what),
               {why});
}

// Out: the bytes go to the console, a line at a time. In: the port's number
// (a guest can probe for the console this way).
std::optional<Vcpu::Next> Vcpu::port_console(PortIo& io) {
  if (!io.write) {
    io.value = SPTELAB_PORT_CONSOLE;
    return Next::kContinue;
  }
  for (uint8_t i = 0; i < io.size && i < sizeof(io.value); ++i) {
    char c = static_cast<char>(io.value >> (8 * i));
    console_line_.push_back(c);
    if (c == '\n') flush_console();
  }
  stats_.console_bytes += io.size;
  return Next::kContinue;
}

std::optional<Vcpu::Next> Vcpu::port_exit(PortIo& io) {
  if (!io.write) return std::nullopt;
  const uint32_t status = std::min<uint32_t>(io.value, 255);
  std::string message = fmt::format("guest exited with value {}", io.value);
  if (io.value > 255) message += " (exit status capped at 255)";
  vm_.finish_with_status(RunEnd::kGuestExit, static_cast<int>(status), std::move(message), {},
                         io.value);
  return Next::kEnd;
}

// Only the system area's exception stubs report here (the vector they were
// built for); anything else on this port is a guest's stray access.
std::optional<Vcpu::Next> Vcpu::port_exception(PortIo& io) {
  if (!io.write) return std::nullopt;
  const int vector = vm_.layout_.stub_vector_at(current_rip());
  if (vector < 0 || static_cast<uint32_t>(vector) != io.value) return std::nullopt;
  return handle_exception_report(io.value);
}

// Out selects an argument, in reads it (0 past the last).
std::optional<Vcpu::Next> Vcpu::port_arg(PortIo& io) {
  if (io.write) {
    arg_index_ = io.value;
  } else {
    const auto& args = vm_.config_.guest_args;
    io.value = arg_index_ < args.size() ? args[arg_index_] : 0;
  }
  return Next::kContinue;
}

std::optional<Vcpu::Next> Vcpu::port_report_key(PortIo& io) {
  if (!io.write) return std::nullopt;
  report_key_ = io.value;
  return Next::kContinue;
}

std::optional<Vcpu::Next> Vcpu::port_report_value(PortIo& io) {
  if (!io.write) return std::nullopt;
  vm_.report({index_, report_key_, io.value});
  return Next::kContinue;
}

std::optional<Vcpu::Next> Vcpu::port_of_scenario(PortIo& io) {
  if (!vm_.config_.scenario_ports) return std::nullopt;
  PortAccess access{index_, io.port, io.size, io.write, io.value};
  if (vm_.config_.scenario_ports(access) != PortResult::kHandled) return std::nullopt;
  io.value = access.value;
  return Next::kContinue;
}

// The stub left rsp at: saved rax, [error code], rip, cs, rflags, rsp, ss.
Vcpu::Next Vcpu::handle_exception_report(uint32_t vector) {
  kvm_regs stub_regs = regs();
  kvm_sregs s = sregs();
  std::vector<uint8_t> raw = read_guest_virtual(memory_, s, stub_regs.rsp, 7 * 8);
  if (raw.size() != 7 * 8) {
    return crash(RunEnd::kGuestError,
                 fmt::format("guest exception {} ({}); its exception frame is unreadable", vector,
                             exception_name(vector)));
  }
  uint64_t frame[7];
  std::memcpy(frame, raw.data(), sizeof(frame));
  size_t at = 1;
  std::optional<uint64_t> error_code;
  if (exception_has_error_code(vector)) error_code = frame[at++];
  kvm_regs faulting = stub_regs;
  faulting.rax = frame[0];
  faulting.rip = frame[at];
  faulting.rflags = frame[at + 2];
  faulting.rsp = frame[at + 3];

  const uint64_t frame_cs = frame[at + 1];
  if (vector == 13 && (frame_cs & 3) == 3) {
    // Native mode: hlt is privileged at CPL3 and raises #GP(0). The guest
    // meant to stop this vCPU (sptelab_halt), so it stops.
    std::vector<uint8_t> opcode = read_guest_virtual(memory_, s, faulting.rip, 1);
    if (opcode.size() == 1 && opcode[0] == 0xf4) {
      ++stats_.native_halts;
      ++stats_.hlt_exits;
      return Next::kHalt;
    }
  }
  std::vector<std::string> details;
  if (error_code) details.push_back(fmt::format("error code {:#x}", *error_code));
  if (vector == 14) {
    bool write = error_code && (*error_code & 2);
    PageWalk walk = walk_guest_page_tables(memory_, s, s.cr2);
    if (walk.translated && walk.gpa < vm_.ram_bytes_ && (!write || walk.writable)) {
      // The guest's tables do map cr2: KVM injected this #PF because a
      // page-table page was inaccessible in the window when its walker read
      // it. The walk above faulted those pages back in; retry the access.
      ++stats_.spurious_page_faults;
      if (!making_progress(faulting)) {
        return crash(RunEnd::kGuestError,
                     fmt::format("KVM keeps injecting page faults for cr2={:#x} although the "
                                 "guest page tables map it",
                                 s.cr2),
                     {}, &faulting);
      }
      resume_at(faulting, (frame_cs & 3) == 3);
      return Next::kContinue;
    }
    details.push_back(fmt::format("cr2={:#x} ({})", s.cr2, write ? "write" : "read"));
    details.push_back(format_page_walk(walk, s.cr2));
    if (!walk.translated && s.cr2 >= vm_.ram_bytes_) {
      // RAM is identity-mapped, so a linear address in the physical range
      // names the gpa the guest meant; beyond it (0xffff...) it names none.
      std::string what =
          s.cr2 < kMaxPhysicalAddress
              ? fmt::format("guest touched memory it has not got: gpa={:#x}", s.cr2)
              : fmt::format(
                    "guest touched an address its page tables do not map: linear address "
                    "{:#x}",
                    s.cr2);
      return crash(RunEnd::kGuestError, fmt::format("{}, rip={:#x}", what, faulting.rip),
                   std::move(details), &faulting);
    }
  }
  return crash(RunEnd::kGuestError,
               fmt::format("guest exception {} ({}) at rip={:#x}", vector, exception_name(vector),
                           faulting.rip),
               std::move(details), &faulting);
}

bool Vcpu::making_progress(const kvm_regs& state) {
  // The same instruction may need recovering many times in a run (a locked
  // increment in a loop whose page keeps moving), but never with the same
  // registers over and over: that is a loop sptelab cannot get out of.
  if (std::memcmp(&state, &recovery_state_, sizeof(state)) == 0) {
    return ++recoveries_in_place_ <= kMaxRecoveries;
  }
  recovery_state_ = state;
  recoveries_in_place_ = 1;
  return true;
}

void Vcpu::resume_at(const kvm_regs& target, bool user) {
  // The stub's `out` is still pending in KVM: complete it without running
  // the guest (immediate_exit), then put the interrupted context back.
  __atomic_store_n(&run_->immediate_exit, 1, __ATOMIC_SEQ_CST);
  ioctl(fd_.get(), KVM_RUN, 0);
  __atomic_store_n(&run_->immediate_exit, 0, __ATOMIC_SEQ_CST);
  kvm_regs r = target;
  if (ioctl(fd_.get(), KVM_SET_REGS, &r) != 0) {
    crash(RunEnd::kInternal, fmt::format("KVM_SET_REGS failed: {}", std::strerror(errno)));
  }
  if (user) {  // back to CPL3 (native mode): the exception entered CPL0
    kvm_sregs s = sregs();
    s.cs = flat_segment(kUserCodeSelector | 3, true);
    s.cs.dpl = 3;
    s.ss = flat_segment(kUserDataSelector | 3, false);
    s.ss.dpl = 3;
    if (ioctl(fd_.get(), KVM_SET_SREGS, &s) != 0) {
      crash(RunEnd::kInternal, fmt::format("KVM_SET_SREGS failed: {}", std::strerror(errno)));
    }
  }
}

namespace {

// The resolver's view of this VM: the system memslot and the window.
class VmFaultView final : public NativeFaultView {
 public:
  explicit VmFaultView(const Vm& vm) : vm_(vm) {}
  bool read_mapped(uint64_t gpa, void* out, size_t len) const override {
    return vm_.read_mapped(gpa, out, len);
  }
  spte::Access access(spte::Gfn gfn) const override { return vm_.access_now(gfn); }
  uint64_t ram_bytes() const override { return vm_.ram_bytes(); }

 private:
  const Vm& vm_;
};

}  // namespace

// Native mode: KVM_RUN failed with EFAULT because the instruction at rip
// touches a window page the emulated spte does not allow (native_fault.h).
// Fault those pages in through the secondary MMU and re-enter: the
// instruction runs again, natively.
Vcpu::Next Vcpu::handle_native_fault() {
  kvm_regs r = sync_regs_ ? run_->s.regs.regs : regs();
  kvm_sregs s = sync_sregs_ ? run_->s.regs.sregs : sregs();
  NativeFault fault = resolve_native_fault(r, s, VmFaultView(vm_));
  if (trace::enabled()) {
    uint64_t gpa = fault.needs.empty() ? 0 : fault.needs.front().gfn << 12;
    trace::emit(trace::Kind::kVcpuExit, index_, 0, r.rip, gpa);
    trace_instruction(vm_, s, r.rip);  // rip has not moved: it names the instruction
  }
  if (fault.needs.empty()) {
    ++stats_.native_unmatched;
    if (++unmatched_in_a_row_ <= kMaxUnmatchedEfaults) {
      std::this_thread::yield();  // perhaps another vCPU just faulted it in
      return Next::kContinue;
    }
    std::vector<std::string> details = {fault.why};
    if (!fault.instruction.empty()) details.push_back("instruction: " + fault.instruction);
    for (const LinearAccess& access : fault.accesses) {
      details.push_back(fmt::format("{} of {} byte(s) at {:#x}",
                                    access.fetch   ? "fetch"
                                    : access.write ? "write"
                                                   : "read",
                                    access.size, access.address));
    }
    return crash(RunEnd::kInternal,
                 fmt::format("KVM_RUN failed with EFAULT {} times in a row at rip={:#x}, but the "
                             "instruction touches no page the guest window denies",
                             unmatched_in_a_row_, r.rip),
                 std::move(details), &r);
  }
  unmatched_in_a_row_ = 0;
  ++stats_.native_faults;
  for (const PageNeed& need : fault.needs) {
    if (auto failure = memory_.fault_in(need.gfn, need.write)) {
      return memory_failure(*failure, need.write ? "a native guest store" : "a native guest load");
    }
  }
  return Next::kContinue;
}

// KVM reports an emulation failure when the instruction it had to emulate
// touches a page that is inaccessible in the window: a locked
// read-modify-write whose page was zapped between its read exit and
// re-entry, or an instruction fetched from a zapped page. rip has not moved,
// so fault those pages in again and re-enter.
Vcpu::Next Vcpu::handle_internal_error() {
  auto& internal = run_->internal;
  std::vector<std::string> details;
  details.push_back(fmt::format("suberror {}", internal.suberror));
  for (uint32_t i = 0; i < std::min<uint32_t>(internal.ndata, 16); ++i) {
    details.push_back(fmt::format("data[{}] = {:#x}", i, internal.data[i]));
  }
  if (internal.suberror != KVM_INTERNAL_ERROR_EMULATION) {
    return crash(RunEnd::kInternal, "KVM internal error (KVM_EXIT_INTERNAL_ERROR)",
                 std::move(details));
  }
  kvm_regs r = regs();
  if (!making_progress(r)) {
    return crash(RunEnd::kGuestError,
                 fmt::format("KVM cannot emulate the instruction at rip={:#x}, even with its "
                             "pages mapped",
                             r.rip),
                 std::move(details));
  }
  kvm_sregs s = sregs();
  bool page_named = false;
  if (last_mmio_ && last_mmio_->rip == r.rip) {
    // Write access: the instruction's write half needs the page writable.
    page_named = true;
    if (auto failure = memory_.fault_in(last_mmio_->gfn, true)) {
      return memory_failure(*failure, "a locked guest access");
    }
  } else if (auto gfn = operand_gfn(r, s)) {
    // No MMIO exit named the page: a locked read-modify-write on a page the
    // window maps read-only (its spte is read-only). The instruction's own
    // memory operand says which page needs a write fault.
    page_named = true;
    if (auto failure = memory_.fault_in(*gfn, true)) {
      return memory_failure(*failure, "a locked guest access");
    }
  }
  if (read_guest_virtual(memory_, s, r.rip, 15).empty()) {
    details.push_back(format_page_walk(walk_guest_page_tables(memory_, s, r.rip), r.rip));
    return crash(RunEnd::kGuestError,
                 fmt::format("the guest executes from memory it has not got: rip={:#x}", r.rip),
                 std::move(details));
  }
  // No page to fault in and the code readable: only a fetch from a page
  // zapped meanwhile is worth a few retries. An instruction KVM cannot
  // emulate at all (int $0x80 past sptelab's IDT) must fail now, not after
  // kMaxRecoveries rounds: with many vCPUs those outlast --timeout.
  if (!page_named && recoveries_in_place_ > kMaxBlindRecoveries) {
    return crash(RunEnd::kGuestError,
                 fmt::format("KVM cannot emulate the instruction at rip={:#x} (it touches no "
                             "guest page that could be missing; an int, a far jump or a "
                             "privileged instruction sptelab's guest setup does not support?)",
                             r.rip),
                 std::move(details));
  }
  ++stats_.emulation_retries;
  return Next::kContinue;
}

std::optional<spte::Gfn> Vcpu::operand_gfn(const kvm_regs& r, const kvm_sregs& s) {
  std::vector<uint8_t> bytes = read_guest_virtual(memory_, s, r.rip, 15);
  std::optional<uint64_t> linear = memory_operand_address(bytes, r.rip, r);
  if (!linear) return std::nullopt;
  PageWalk walk = walk_guest_page_tables(memory_, s, *linear);
  if (!walk.translated || walk.gpa >= vm_.ram_bytes_) return std::nullopt;
  return walk.gpa >> 12;
}

std::vector<std::string> Vcpu::inaccessible_system_pages() {
  std::vector<std::string> out;
  if (vm_.system_bytes_ > 0) return out;  // its own memslot: never inaccessible
  for (const SystemRegion& region : vm_.layout_.regions()) {
    for (uint64_t gpa = region.start; gpa < region.end; gpa += 4096) {
      if (vm_.window_.access(gpa >> 12) == spte::Access::kNone) {
        out.push_back(
            fmt::format("{} page at gpa {:#x} is inaccessible in the guest window "
                        "(its spte is not present)",
                        region.name, gpa));
      }
    }
  }
  return out;
}

Vcpu::Next Vcpu::crash(RunEnd end, std::string headline, std::vector<std::string> details,
                       const kvm_regs* regs_override) {
  kvm_regs r = regs_override != nullptr ? *regs_override : regs();
  kvm_sregs s = sregs();
  std::string dump = format_crash_dump(index_, {headline, std::move(details)}, r, s, memory_);
  vm_.finish(end, fmt::format("vcpu{}: {}", index_, headline), std::move(dump));
  return Next::kEnd;
}

void Vcpu::flush_console() {
  if (console_line_.empty()) return;
  vm_.console(index_, console_line_);
  console_line_.clear();
}

}  // namespace sptelab::hypervisor
