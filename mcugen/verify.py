"""Build a generated project, run it on many inputs, compare with the reference bit for bit.

Runs on the host (cc), on RV32IMC under qemu (`on="qemu"`: the same C cross-compiled with
picolibc, semihosting for the files, minstret for exact per-step instruction counts) or on the
CV32E40P RTL (`on="rtl"`, mcugen/targets/rtl.py: mcycle for exact per-step cycles). On a
difference, the trace build (-DMODEL_TRACE) runs the first failing input again on the host and
names the first step whose output differs, with the element, expected and actual value.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mcugen.codegen import hls_sim
from mcugen.errors import MCUGenError
from mcugen.ir.schedule import Schedule
from mcugen.reference.inputs import verify_inputs
from mcugen.reference.interpreter import quantize_input, run_codes
from mcugen.runners import INSTALL_HINT, RV_CC
from mcugen.targets import target_of

__all__ = ["compare", "verify_inputs", "VerifyResult", "profile_record", "model_sizes"]


@dataclass
class VerifyResult:
    n: int
    mismatches: int
    first: str | None = None
    profile: dict = field(default_factory=dict)
    dataflow: dict | None = None       # an hls stream project: its simulated interval and latency


def compare(project: Path, schedule: Schedule, x: np.ndarray, sanitize=False, on="host") -> VerifyResult:
    """Build the project for its target (mcugen/targets), run it on x, compare with the
    reference; on a difference the target names the first differing layer it can."""
    target = target_of(schedule)
    target.check_run_place(on, schedule)
    exe = target.build(project, "asan" if sanitize else "", sanitize=sanitize, on=on)
    run = target.run(exe, schedule, x, on=on)
    expected = run_codes(schedule, quantize_input(schedule, x)).reshape(len(x), -1)
    dataflow = hls_sim.check_project(Path(project))     # an hls stream project: its cycles
    bad = np.nonzero(np.any(run.outputs != expected, axis=1))[0]
    if bad.size == 0:
        return VerifyResult(len(x), 0, profile=run.profile, dataflow=dataflow)
    first = int(bad[0])
    return VerifyResult(len(x), int(bad.size),
                        target.locate_mismatch(project, schedule, x[first:first + 1], first),
                        run.profile)


def profile_record(project: Path, schedule: Schedule, profile: dict, on: str) -> dict:
    """What profile.json holds after one inference on qemu (instructions) or the RTL (cycles):
    per-step counts by step name, the GAP8 emulation's counters if any, the model's sections."""
    counted = "cycles" if on == "rtl" else "instructions"
    record = {counted: {"total": profile.get("total"),
                        "steps": {s.name: profile.get(i) for i, s in enumerate(schedule.steps)}},
              "sections": model_sizes(project)}
    if "gap8" in profile:
        record["gap8"] = {s.name: profile["gap8"].get(i) for i, s in enumerate(schedule.steps)}
    return record


def model_sizes(project: Path) -> dict:
    """text / rodata / data / bss bytes of the model alone (model.c for RV32IMC at -O2; the
    harness and libc excluded), from riscv64-unknown-elf-size -A."""
    size_tool = shutil.which("riscv64-unknown-elf-size")
    if size_tool is None or shutil.which(RV_CC) is None:
        raise MCUGenError(f"riscv64-unknown-elf-size not found: {INSTALL_HINT}")
    with tempfile.TemporaryDirectory(prefix="mcugen") as tmp:
        obj = Path(tmp) / "model.o"
        emulation = ["-I", str(project / "pmsis_emu")] if (project / "pmsis_emu").is_dir() else []
        subprocess.run([RV_CC, "-march=rv32imc", "-mabi=ilp32", "-O2", "-std=c99", *emulation,
                        "--specs=picolibc.specs", "-c", str(project / "model.c"), "-o", str(obj)],
                       check=True, capture_output=True)
        done = subprocess.run([size_tool, "-A", str(obj)], capture_output=True, text=True, check=True)
    sizes = {"text": 0, "rodata": 0, "data": 0, "bss": 0}
    for name, size in re.findall(r"^\.(\w+)\S*\s+(\d+)", done.stdout, re.M):
        for key in sizes:
            if name.startswith(key) or name == "s" + key:
                sizes[key] += int(size)
    return sizes
