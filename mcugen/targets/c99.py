"""The C99 targets: `host` (the build machine's cc) and `rv32` (RV32IMC, picolibc, run under qemu
or on the CV32E40P RTL). One codegen (mcugen/codegen/host.py); the plan is the C kernels' loop
structure, with the SIMD kernels on boards that have dot-product instructions."""
from __future__ import annotations

import sys

import numpy as np

from mcugen.codegen.kernel_plan import c_kernel_plan
from mcugen.errors import MCUGenError
from mcugen.targets.base import Target


class C99Target(Target):
    codegen = "host"
    runs_on = ("host", "qemu")       # the same portable C, with a rule for RV32 under qemu

    def plan(self, schedule, board, options=None) -> dict:
        simd = bool(board and board.get("simd"))
        return {s.name: c_kernel_plan(s, simd) for s in schedule.steps}

    def report_extras(self, report, schedule, board, plan) -> None:
        """On a SIMD board, each MAC layer's kernel (its lanes, or plain)."""
        super().report_extras(report, schedule, board, plan)
        if not board.get("simd"):
            return
        report["simd"] = f"{board['name']} ({board['simd']})"
        for layer in report["layers"]:
            if layer["macs"]:
                layer["kernel"] = plan[layer["step"]].get("simd", "plain")


class HostTarget(C99Target):
    name = "host"
    default_board = "host"
    description = "C99 for the build machine (cc): simulate and verify here"


class Rv32Target(C99Target):
    name = "rv32"
    default_board = "rv32imc-qemu"
    description = ("C99 for RV32IMC microcontrollers (riscv64-unknown-elf-gcc + picolibc; qemu or "
                   "the CV32E40P RTL here; SIMD kernels with --board cv32e40p)")
    runs_on = ("host", "qemu", "rtl")

    def build(self, project, variant="", sanitize=False, trace=False, on="host"):
        if on == "rtl":
            if sanitize or trace:
                raise MCUGenError("--sanitize runs on the host, not on the RTL")
            from mcugen.rtl.simulator import build_simulator
            build_simulator(progress=lambda text: print(text, file=sys.stderr, flush=True))
        return super().build(project, variant, sanitize, trace, on)

    def run(self, exe, schedule, x, on="host", timeout=None, trace_bytes=0):
        if on != "rtl":
            return super().run(exe, schedule, x, on, timeout, trace_bytes)
        from mcugen.rtl.simulator import run_program
        from mcugen.verify import RunResult, parse_profile
        n_out = int(np.prod(schedule.output["shape"]))
        done = run_program(exe, np.ascontiguousarray(x, dtype=np.float32).tobytes(),
                           max_cycles=rtl_cycle_budget(schedule, len(x)), timeout=timeout)
        outputs = np.frombuffer(done.output, dtype=np.int32)
        if outputs.size != len(x) * n_out:
            raise MCUGenError(f"the program on the RTL wrote {outputs.size // max(n_out, 1)} of "
                              f"{len(x)} outputs")
        return RunResult(outputs.reshape(len(x), n_out).copy(), None, parse_profile(done.profile))


def rtl_cycle_budget(schedule, n: int) -> int:
    """Generous: 40 cycles per MAC (a plain kernel takes about 10), 200 per input value for the
    soft-float quantization, and a million for the rest, per input."""
    macs = sum(s.info.get("macs", 0) for s in schedule.steps)
    values = int(np.prod(schedule.input["shape"]))
    return n * (40 * macs + 200 * values + 1_000_000)
