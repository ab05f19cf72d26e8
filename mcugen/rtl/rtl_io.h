/* The memory and I/O contract between a program and mcugen's CV32E40P RTL harness.
 *
 * Memory: one 4 MiB RAM at 0x00000000, zero wait states unless the harness is run with
 * --stall-percent. The linker places code and read-only data in the first 2 MiB ("flash") and
 * .data/.bss/heap/stack in the second 2 MiB ("ram"); the core boots at the ELF entry point,
 * which crt0.S puts at address 0.
 *
 * MMIO: 32-bit registers at RTL_MMIO_BASE. Access them with word loads and stores only:
 * a read of RTL_IN_WORD consumes 4 input bytes whatever the access size.
 *   RTL_EXIT      +0x00  write: ends the simulation; the value is the exit code
 *   RTL_PUTC      +0x04  write: the low byte goes to the harness's stderr (debug text)
 *   RTL_IN_LEFT   +0x08  read:  bytes not yet read from the input stream
 *   RTL_IN_WORD   +0x0C  read:  the next 4 input bytes, little endian (zero past the end)
 *   RTL_OUT_WORD  +0x10  write: 4 bytes appended to the output stream, little endian
 *   RTL_PROF_BYTE +0x14  write: the low byte appended to the profile text
 *   +0x18, +0x1C are the trap report that crt0.S's trap handler writes (mcause, then mepc);
 *   the write of mepc ends the simulation as a trap.
 *
 * The offsets are plain numbers so that crt0.S and the C++ harness include this same file.
 * Performance counters: crt0.S clears mcountinhibit, so mcycle and minstret count from boot.
 */
#ifndef MCUGEN_RTL_IO_H
#define MCUGEN_RTL_IO_H

#define RTL_MEM_BASE 0x00000000u
#define RTL_MEM_BYTES 0x00400000u
#define RTL_MMIO_BASE 0x10000000u
#define RTL_MMIO_BYTES 0x20u

#define RTL_EXIT_OFFSET 0x00
#define RTL_PUTC_OFFSET 0x04
#define RTL_IN_LEFT_OFFSET 0x08
#define RTL_IN_WORD_OFFSET 0x0C
#define RTL_OUT_WORD_OFFSET 0x10
#define RTL_PROF_BYTE_OFFSET 0x14
#define RTL_TRAP_CAUSE_OFFSET 0x18
#define RTL_TRAP_PC_OFFSET 0x1C

#if defined(__riscv) && !defined(__ASSEMBLER__)
#include <stdint.h>

#define RTL_MMIO_REG(offset) (*(volatile uint32_t *)(RTL_MMIO_BASE + (offset)))
#define RTL_EXIT RTL_MMIO_REG(RTL_EXIT_OFFSET)
#define RTL_PUTC RTL_MMIO_REG(RTL_PUTC_OFFSET)
#define RTL_IN_LEFT RTL_MMIO_REG(RTL_IN_LEFT_OFFSET)
#define RTL_IN_WORD RTL_MMIO_REG(RTL_IN_WORD_OFFSET)
#define RTL_OUT_WORD RTL_MMIO_REG(RTL_OUT_WORD_OFFSET)
#define RTL_PROF_BYTE RTL_MMIO_REG(RTL_PROF_BYTE_OFFSET)

static inline __attribute__((noreturn)) void rtl_exit(int code)
{
    RTL_EXIT = (uint32_t)code;
    for (;;) {
    }
}

static inline uint32_t rtl_in_left(void) { return RTL_IN_LEFT; }

/* dst and src should be word aligned: the core splits a misaligned access in two (slower). */
static inline void rtl_read_words(void *dst, unsigned n_words)
{
    uint32_t *words = (uint32_t *)dst;
    for (unsigned i = 0; i < n_words; i++)
        words[i] = RTL_IN_WORD;
}

static inline void rtl_write_words(const void *src, unsigned n_words)
{
    const uint32_t *words = (const uint32_t *)src;
    for (unsigned i = 0; i < n_words; i++)
        RTL_OUT_WORD = words[i];
}

static inline void rtl_prof_puts(const char *text)
{
    while (*text)
        RTL_PROF_BYTE = (uint8_t)*text++;
}

static inline void rtl_prof_putu(unsigned long value)
{
    char digits[24];
    int n = 0;
    do {
        digits[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    while (n)
        RTL_PROF_BYTE = (uint8_t)digits[--n];
}

/* -march=rv32imc keeps picolibc's rv32im multilib; +zicsr is enabled for the csrr alone.
 * The low 32 bits: differences of two readings are right across one wrap (~4.3e9 cycles). */
static inline uint32_t rtl_cycles(void)
{
    uint32_t value;
    __asm__ volatile(".option push\n.option arch, +zicsr\ncsrr %0, mcycle\n.option pop" : "=r"(value));
    return value;
}

static inline uint32_t rtl_instret(void)
{
    uint32_t value;
    __asm__ volatile(".option push\n.option arch, +zicsr\ncsrr %0, minstret\n.option pop" : "=r"(value));
    return value;
}
#endif /* __riscv && !__ASSEMBLER__ */

#endif /* MCUGEN_RTL_IO_H */
