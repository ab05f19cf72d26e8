"""The C99 targets: `host` (the build machine's cc) and `rv32` (RV32IMC, picolibc, run under qemu
or on the CV32E40P RTL). One codegen (mcugen/codegen/host.py); the plan is the C kernels' loop
structure, with the SIMD kernels on boards that have dot-product instructions (the board's
`simd`, an ISA of codegen/kernel_plan.py's SIMD_ISAS)."""
from __future__ import annotations

from mcugen.codegen.add_plan import c_add_plan
from mcugen.codegen.host import render as render_c99
from mcugen.codegen.kernel_plan import c_kernel_plan
from mcugen.lower.head_loops import plan_head_loops
from mcugen.targets.base import Target
from mcugen.targets.rtl import RtlRuns
from mcugen.targets.simd_lines import simd_lines


class C99Target(Target):
    codegen = "host"
    runs_on = ("host", "qemu")       # the same portable C, with a rule for RV32 under qemu
    host_harness = True

    def render(self, schedule, model_file, board, plan) -> dict:
        return render_c99(schedule, model_file, board, plan, rtl="rtl" in self.runs_on)

    def plan(self, schedule, board, options=None) -> dict:
        """Each step's kernel (an Add's: its lookup, codegen/add_plan.py); and attention's steps
        run head by head where that lowers the arena's peak (lower/head_loops.py), each kernel
        then planned for one head."""
        isa = board.get("simd") if board else None      # the board's SIMD ISA, if any
        plan = {s.name: c_add_plan(schedule, s) if s.kind == "add" else c_kernel_plan(s, isa)
                for s in schedule.steps}
        plan_head_loops(schedule)
        for loop in schedule.head_loops:
            for name, params in loop["per_head"].items():
                plan[name].update(params)
        return plan

    def report_extras(self, report, schedule, board, plan) -> None:
        """On a SIMD board, each MAC layer's kernel (its lanes, or plain)."""
        super().report_extras(report, schedule, board, plan)
        if not board.get("simd"):
            return
        report["simd"] = f"{board['name']} ({board['simd']})"
        for layer in report["layers"]:
            if layer["macs"]:
                kernel = plan[layer["step"]]
                layer["kernel"] = kernel.get("simd") or kernel.get("matmul_simd") or "plain"

    def report_lines(self, report) -> list:
        return simd_lines(report)


class HostTarget(C99Target):
    name = "host"
    default_board = "host"
    description = "C99 for the build machine (cc): simulate and verify here"


class Rv32Target(RtlRuns, C99Target):
    name = "rv32"
    default_board = "rv32imc-qemu"
    description = ("C99 for RV32IMC microcontrollers (riscv64-unknown-elf-gcc + picolibc; qemu or "
                   "the CV32E40P RTL here; SIMD kernels with --board cv32e40p)")
    runs_on = ("host", "qemu", "rtl")
