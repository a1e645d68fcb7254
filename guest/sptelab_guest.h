/*
 * Guest-side helpers for writing sptelab guests: port I/O, console output,
 * exit, arguments, reports, and the entry stub. Header-only, freestanding C
 * (GNU C11); include it from one or more translation units. guest/README.md
 * shows how to build a guest against it.
 *
 *   #include "sptelab_guest.h"
 *   static void guest_main(uint64_t vcpu, uint64_t vcpus, uint64_t ram_bytes) {
 *     if (vcpu == 0) { sptelab_puts("hello\n"); sptelab_exit(0); }
 *   }
 *   SPTELAB_GUEST_MAIN(guest_main);
 */
#ifndef SPTELAB_GUEST_H
#define SPTELAB_GUEST_H

#include <stddef.h>
#include <stdint.h>

#include "sptelab_abi.h"

/* Defines _start: calls fn(vcpu index, vcpu count, RAM bytes) with the
 * registers the ABI sets (rdi, rsi, rdx). The call keeps the stack aligned
 * as the SysV ABI wants; if fn returns, that vCPU halts. */
#define SPTELAB_GUEST_MAIN(fn)                                               \
  __asm__(                                                                   \
      ".section .text.entry,\"ax\",@progbits\n"                              \
      ".globl _start\n"                                                      \
      ".type _start, @function\n"                                            \
      "_start:\n"                                                            \
      "  call " #fn                                                          \
      "\n"                                                                   \
      "1: hlt\n"                                                             \
      "  jmp 1b\n"                                                           \
      ".size _start, . - _start\n"                                           \
      ".previous\n");                                                        \
  /* Only the asm calls fn: keep it (and its name) with a used reference. */ \
  static void (*const sptelab_guest_main_ref_)(uint64_t, uint64_t, uint64_t) \
      __attribute__((used)) = fn

/* --- Port I/O and CPU helpers --- */
static inline void sptelab_outb(uint16_t port, uint8_t value) {
  __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port) : "memory");
}
static inline void sptelab_outl(uint16_t port, uint32_t value) {
  __asm__ volatile("outl %0, %1" : : "a"(value), "Nd"(port) : "memory");
}
static inline uint8_t sptelab_inb(uint16_t port) {
  uint8_t value;
  __asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port) : "memory");
  return value;
}
static inline uint32_t sptelab_inl(uint16_t port) {
  uint32_t value;
  __asm__ volatile("inl %1, %0" : "=a"(value) : "Nd"(port) : "memory");
  return value;
}
static inline void sptelab_pause(void) {
  __asm__ volatile("pause" : : : "memory");
}
/* Stops this vCPU for good (interrupts are off). When every vCPU has
 * stopped, the VM ends with status 0. In native mode too: the #GP that hlt
 * raises at CPL3 reaches sptelab, which stops the vCPU the same way. */
static inline __attribute__((noreturn)) void sptelab_halt(void) {
  for (;;) __asm__ volatile("hlt" : : : "memory");
}
/* Native mode (guest/README.md): continues this vCPU at CPL3, on the same
 * stack and with the same registers, by an iretq to the user selectors.
 * There is no way back to CPL0; the ports, sptelab_halt() and sptelab_exit()
 * keep working. On backends that emulate CPL0 code (PVM) the code after
 * this runs natively, thousands of times faster. */
static inline void sptelab_enter_native(void) {
  __asm__ volatile(
      "mov %%rsp, %%rax\n\t"
      "pushq %[ss]\n\t"
      "pushq %%rax\n\t"
      "pushfq\n\t"
      "pushq %[cs]\n\t"
      "leaq 1f(%%rip), %%rax\n\t"
      "pushq %%rax\n\t"
      "iretq\n"
      "1:"
      :
      : [ss] "i"(SPTELAB_USER_DATA_SELECTOR), [cs] "i"(SPTELAB_USER_CODE_SELECTOR)
      : "rax", "memory", "cc");
}
/* Ends the VM; sptelab exits with `status`. */
static inline __attribute__((noreturn)) void sptelab_exit(uint32_t status) {
  sptelab_outl(SPTELAB_PORT_EXIT, status);
  sptelab_halt(); /* not reached: the exit stops every vCPU */
}

/* --- Console (port 0xE9) --- */
static inline void sptelab_putc(char c) {
  sptelab_outb(SPTELAB_PORT_CONSOLE, (uint8_t)c);
}
static inline void sptelab_puts(const char* s) {
  while (*s) sptelab_putc(*s++);
}
static inline void sptelab_put_u64(uint64_t value) {
  char digits[20];
  int n = 0;
  do {
    digits[n++] = (char)('0' + value % 10);
    value /= 10;
  } while (value != 0);
  while (n > 0) sptelab_putc(digits[--n]);
}
static inline void sptelab_put_hex(uint64_t value) {
  sptelab_puts("0x");
  int shift = 60;
  while (shift > 0 && ((value >> shift) & 0xf) == 0) shift -= 4;
  for (; shift >= 0; shift -= 4) sptelab_putc("0123456789abcdef"[(value >> shift) & 0xf]);
}

/* --- Arguments and reports --- */
/* Argument `index` of this run (`sptelab run --arg V`, in order); 0 if not given. */
static inline uint32_t sptelab_arg(uint32_t index) {
  sptelab_outl(SPTELAB_PORT_ARG, index);
  return sptelab_inl(SPTELAB_PORT_ARG);
}
static inline uint32_t sptelab_arg_or(uint32_t index, uint32_t fallback) {
  uint32_t value = sptelab_arg(index);
  return value != 0 ? value : fallback;
}
/* Records (vCPU, key, value) for the host side (RunResult::reports). */
static inline void sptelab_report(uint32_t key, uint32_t value) {
  sptelab_outl(SPTELAB_PORT_REPORT_KEY, key);
  sptelab_outl(SPTELAB_PORT_REPORT_VALUE, value);
}

/* --- Spinlock (xchg acquire, plain store release) --- */
static inline void sptelab_spin_lock(volatile uint32_t* lock) {
  while (__atomic_exchange_n(lock, 1u, __ATOMIC_ACQUIRE) != 0) {
    while (__atomic_load_n(lock, __ATOMIC_RELAXED) != 0) sptelab_pause();
  }
}
static inline void sptelab_spin_unlock(volatile uint32_t* lock) {
  __atomic_store_n(lock, 0u, __ATOMIC_RELEASE);
}

/* Waits until *counter reaches `target` (a barrier built from lock inc). */
static inline void sptelab_wait_for(volatile uint32_t* counter, uint32_t target) {
  while (__atomic_load_n(counter, __ATOMIC_ACQUIRE) < target) sptelab_pause();
}

/* --- What the compiler may call even in freestanding code --- */
/* Weak, so several translation units (or a guest's own versions) can coexist. */
__attribute__((weak)) void* memset(void* dst, int c, size_t n) {
  unsigned char* d = (unsigned char*)dst;
  while (n--) *d++ = (unsigned char)c;
  return dst;
}
__attribute__((weak)) void* memcpy(void* dst, const void* src, size_t n) {
  unsigned char* d = (unsigned char*)dst;
  const unsigned char* s = (const unsigned char*)src;
  while (n--) *d++ = *s++;
  return dst;
}
__attribute__((weak)) void* memmove(void* dst, const void* src, size_t n) {
  unsigned char* d = (unsigned char*)dst;
  const unsigned char* s = (const unsigned char*)src;
  if (d < s) {
    while (n--) *d++ = *s++;
  } else {
    while (n--) d[n] = s[n];
  }
  return dst;
}
__attribute__((weak)) int memcmp(const void* a, const void* b, size_t n) {
  const unsigned char* x = (const unsigned char*)a;
  const unsigned char* y = (const unsigned char*)b;
  for (; n; --n, ++x, ++y) {
    if (*x != *y) return *x < *y ? -1 : 1;
  }
  return 0;
}

/* Linker-script symbol: the first byte after the image (page aligned). */
extern char _end[];

#endif /* SPTELAB_GUEST_H */
