"""`--on rtl` for the targets whose projects build a program for mcugen's CV32E40P RTL harness
(rv32: the Makefile's `rtl` goal; gap8: emu.mk's, the PMSIS emulation counting cycles). The
goal and the ELF it makes are runners.RUN_PLACES["rtl"]; this mixin adds the simulator build
and the run, and leaves every other place to the target's own build and run."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from mcugen.errors import MCUGenError
from mcugen.rtl.simulator import build_simulator, run_program
from mcugen.runners import RunResult, parse_profile


class RtlRuns:
    """Mix in before the target's base class: class Rv32Target(RtlRuns, C99Target)."""

    def build(self, project, variant="", sanitize=False, trace=False, on="host"):
        if on == "rtl":
            if sanitize or trace:
                raise MCUGenError("--sanitize runs on the host, not on the RTL")
            if not (Path(project) / "rtl" / "rtl_io.h").is_file():
                raise MCUGenError(f"{project} has no rtl/ program files (an older mcugen made it): "
                                  f"build it again with `mcugen build ... --force`")
            build_simulator(progress=lambda text: print(text, file=sys.stderr, flush=True))
        return super().build(project, variant, sanitize, trace, on)

    def run(self, exe, schedule, x, on="host", timeout=None, trace_bytes=0):
        if on != "rtl":
            return super().run(exe, schedule, x, on, timeout, trace_bytes)
        return run_on_rtl(exe, schedule, x, timeout)


def run_on_rtl(elf, schedule, x: np.ndarray, timeout=None):
    """Float inputs (N, ...) streamed to the program on the RTL -> RunResult with the raw int32
    outputs and the profile channel's counts (cycles)."""
    n_out = int(np.prod(schedule.output["shape"]))
    done = run_program(elf, np.ascontiguousarray(x, dtype=np.float32).tobytes(),
                       max_cycles=rtl_cycle_budget(schedule, len(x)), timeout=timeout)
    outputs = np.frombuffer(done.output, dtype=np.int32)
    if outputs.size != len(x) * n_out:
        raise MCUGenError(f"the program on the RTL wrote {outputs.size // max(n_out, 1)} of "
                          f"{len(x)} outputs")
    return RunResult(outputs.reshape(len(x), n_out).copy(), None, parse_profile(done.profile))


def rtl_cycle_budget(schedule, n: int) -> int:
    """Generous: 40 cycles per MAC (a plain kernel takes about 10), 200 per input value for the
    soft-float quantization, 20 per constant byte (GAP8's emulated L3 copies its weights a few
    times) and a million for the rest, per input."""
    macs = sum(s.info.get("macs", 0) for s in schedule.steps)
    values = int(np.prod(schedule.input["shape"]))
    consts = sum(schedule.step_consts_bytes(s) for s in schedule.steps)
    return n * (40 * macs + 200 * values + 20 * consts + 1_000_000)
