/* Startup for programs run by mcugen's CV32E40P RTL harness (link with -nostartfiles, through
 * picolibc.ld: its .text.init.enter section comes first, so _start sits at the boot address).
 * Differs from picolibc's crt0 in what this harness needs: counters enabled, a trap handler
 * that reports mcause/mepc through the MMIO, and _exit that ends the simulation. */
#include "rtl_io.h"

    /* -march=rv32imc (picolibc's multilib) lacks the CSR instructions this file needs */
    .option arch, +zicsr

    .section .text.init.enter, "ax"
    .globl _start
    .type _start, @function
_start:
    /* gp must be loaded with an absolute address: relaxation would make it gp-relative */
    .option push
    .option norelax
    la gp, __global_pointer$
    .option pop
    la sp, __stack
    la t0, rtl_trap_entry
    csrw mtvec, t0              /* direct mode: every trap to rtl_trap_entry */
    csrw 0x320, zero            /* mcountinhibit: this core resets with mcycle/minstret stopped */

    /* .data and .tdata from their load image in flash, then .tbss and .bss zeroed */
    la a0, __data_start
    la a1, __data_source
    la a2, __data_size
    call memcpy
    la a0, __bss_start
    li a1, 0
    la a2, __bss_size
    call memset
    la tp, __tls_base           /* picolibc keeps errno and friends in TLS */

    call __libc_init_array
    li a0, 0
    li a1, 0
    call main
    call exit                   /* atexit handlers, then _exit */
    .size _start, . - _start

    .section .text._exit, "ax"
    .globl _exit
    .type _exit, @function
_exit:
    li t0, RTL_MMIO_BASE
    sw a0, RTL_EXIT_OFFSET(t0)
1:  j 1b
    .size _exit, . - _exit

    /* mtvec keeps only bits 31:8 of the base on this core */
    .section .text.rtl_trap, "ax"
    .balign 256
    .globl rtl_trap_entry
rtl_trap_entry:
    csrr t0, mcause
    csrr t1, mepc
    li t2, RTL_MMIO_BASE
    sw t0, RTL_TRAP_CAUSE_OFFSET(t2)
    sw t1, RTL_TRAP_PC_OFFSET(t2)   /* the harness stops here */
1:  j 1b
