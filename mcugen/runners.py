"""Build a generated C project and run its harness: on the host (cc), on RV32IMC under qemu
(`on="qemu"`: the same C cross-compiled with picolibc, semihosting for the files, minstret for
exact per-step instruction counts) or, through the targets' own runners, on the CV32E40P RTL.
The layer below the targets: it knows make, the compilers, qemu and the harness's file protocol,
not what a target is; RUN_PLACES lists every place a project runs (the hls C simulation's too),
and each target names the places it runs on. On a difference, `locate_mismatch` runs the trace build (-DMODEL_TRACE)
and names the first step whose output differs.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mcugen.codegen.project import recording_new_files
from mcugen.errors import MCUGenError
from mcugen.ir.schedule import Schedule
from mcugen.lower.head_loops import partial_outputs
from mcugen.reference.interpreter import quantize_input, run_codes

HOST_TIMEOUT = 600
QEMU = "qemu-system-riscv32"
RV_CC = "riscv64-unknown-elf-gcc"
INSTALL_HINT = ("apt-get install gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf "
                "qemu-system-misc")
# RISC-V mcause codes of the exceptions a generated program may hit (qemu and the RTL)
FAULT_CAUSES = {0: "misaligned fetch", 1: "instruction access fault", 2: "illegal instruction",
                3: "breakpoint", 4: "misaligned load", 5: "load access fault",
                6: "misaligned store", 7: "store access fault", 11: "ecall"}


@dataclass(frozen=True)
class RunPlace:
    """Where a built project runs: `on`, the `--on` value that selects it; the make goal that
    builds for it (the same in every target's makefile: rv32's Makefile, gap8's emu.mk; None:
    the makefile's default goal, or no make); the program it makes; the compiler it needs (`cc`,
    `c++`: the host's, see find_compiler; else a cross compiler on PATH); the emulator that
    runs the program (None: it runs itself, or its target runs it, as targets/rtl.py does).
    The hls target's C simulation (g++ of its firmware and testbench) is selected with `--on
    host`: to a user both mean "here, on this machine", so `host` stays every target's default."""
    name: str
    on: str
    goal: str | None
    program: str
    compiler: str
    emulator: str | None = None


RUN_PLACES = {place.name: place for place in (
    RunPlace("host", on="host", goal=None, program="model_test", compiler="cc"),
    RunPlace("qemu", on="qemu", goal="rv32", program="model_test.elf", compiler=RV_CC,
             emulator=QEMU),
    RunPlace("rtl", on="rtl", goal="rtl", program="model_rtl.elf", compiler=RV_CC),
    RunPlace("csim", on="host", goal=None, program="csim", compiler="c++"),
)}


def find_cc() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise MCUGenError("no C compiler found: install gcc (apt-get install gcc) or set CC")
    return cc


def find_cxx() -> str:
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        raise MCUGenError("no C++ compiler found: install g++ (apt-get install g++) or set CXX")
    return cxx


HOST_COMPILERS = {"cc": find_cc, "c++": find_cxx}


def find_compiler(name: str) -> str:
    """A run place's compiler: the host's C or C++ compiler (CC, CXX or the usual names), or a
    cross compiler, which must be on PATH."""
    if name in HOST_COMPILERS:
        return HOST_COMPILERS[name]()
    if shutil.which(name) is None:
        raise MCUGenError(f"{name} not found: {INSTALL_HINT}")
    return name


def build_harness(project: Path, variant: str = "", sanitize=False, trace=False, on="host",
                  makefile="Makefile") -> Path:
    """make in the project; returns the harness executable (an ELF for qemu). `makefile`: the
    target's (GAP8 projects keep the SDK's Makefile and build the emulation from emu.mk)."""
    if shutil.which("make") is None:
        raise MCUGenError("`make` not found: install it (apt-get install make)")
    build = f"build/{variant or on}"
    cmd = ["make", "-s", "-f", makefile, "-C", str(project), f"BUILD={build}"]
    place = RUN_PLACES[on]
    compiler = find_compiler(place.compiler)
    # a cross goal names its compiler in the makefile; the host harness takes the host's
    cmd.append(place.goal or f"CC={compiler}")
    cmd += ["SANITIZE=1"] if sanitize else []
    cmd += ["TRACE=1"] if trace else []
    with recording_new_files(project):     # so that `build --force` knows build/ for mcugen's
        done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        errors = [line for line in lines if "error" in line] or lines or ["make failed"]
        raise MCUGenError(f"the generated C did not compile: {errors[0]}")
    return project / build / place.program


@dataclass
class RunResult:
    outputs: np.ndarray
    trace: np.ndarray | None = None
    profile: dict = field(default_factory=dict)     # parse_profile's: instructions or cycles


def harness_command(exe: Path, files, on):
    """The command that runs a harness on its files (input, output, trace) at run place `on`:
    the program itself, or qemu's virt machine with the files as semihosting arguments."""
    emulator = RUN_PLACES[on].emulator
    if emulator is None:
        return [str(exe)] + [str(f) for f in files]
    if shutil.which(emulator) is None:
        raise MCUGenError(f"{emulator} not found: {INSTALL_HINT}")
    args = ",".join(f"arg={f}" for f in files)
    return [emulator, "-machine", "virt", "-bios", "none", "-nographic", "-icount", "shift=0",
            "-semihosting-config", f"enable=on,target=native,{args}", "-kernel", str(exe)]


def _failure(done, on):
    text = (done.stdout or "") + (done.stderr or "")
    if on == "qemu" and "RISCV fault" in text:
        cause = re.search(r"mcause:\s*0x([0-9a-f]+)", text)
        pc = re.search(r"mepc:\s*0x([0-9a-f]+)", text)
        code = int(cause.group(1), 16) if cause else -1
        return (f"the generated program trapped on RV32: {FAULT_CAUSES.get(code, f'mcause {code}')}"
                f" at pc 0x{pc.group(1) if pc else '?'}")
    tail = text.strip().splitlines()[-3:]
    return f"the generated program failed (exit {done.returncode}): {' | '.join(tail)}"


def run_harness(exe: Path, x: np.ndarray, n_out: int, trace_bytes: int = 0, on="host",
                timeout=HOST_TIMEOUT) -> RunResult:
    """Float32 inputs (N, ...) -> raw int32 outputs (N, n_out), with trace and profile."""
    with tempfile.TemporaryDirectory(prefix="mcugen") as tmp:
        fin, fout, ftrace = (Path(tmp) / n for n in ("in.f32", "out.i32", "trace.bin"))
        np.ascontiguousarray(x, dtype=np.float32).tofile(fin)
        files = [fin, fout] + ([ftrace] if trace_bytes else [])
        # use-after-return: a local whose address outlives its function (a device's conf)
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0:detect_stack_use_after_return=1",
                   UBSAN_OPTIONS="print_stacktrace=1")
        try:
            done = subprocess.run(harness_command(exe, files, on), capture_output=True, text=True,
                                  timeout=timeout, env=env, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise MCUGenError(f"the generated program ran longer than {timeout} s ({on})") from None
        if done.returncode != 0:
            raise MCUGenError(_failure(done, on))
        out = np.fromfile(fout, dtype=np.int32).reshape(-1, n_out)
        if len(out) != len(x):
            raise MCUGenError(f"the generated program wrote {len(out)} of {len(x)} outputs ({on})")
        trace = np.fromfile(ftrace, dtype=np.uint8) if trace_bytes else None
        fprof = Path(f"{fout}.prof")
        profile_text = fprof.read_text() if fprof.is_file() else ""
    return RunResult(out, trace, parse_profile(profile_text))


GAP8_COUNTERS = ("cores_longest", "cores_total", "emulation", "transfers", "forks")


def parse_profile(text: str) -> dict:
    """"total" and step index -> instructions (qemu) or cycles (the RTL); "gap8": step index ->
    the PMSIS emulation's counters in the same unit (gap8 projects only)."""
    profile = {}
    for key, count in re.findall(r"mcugen-profile (\w+) (\d+)", text):
        profile[key if key == "total" else int(key)] = int(count)
    for line in re.findall(r"mcugen-gap8 ([\d ]+)", text):
        index, *values = map(int, line.split())
        profile.setdefault("gap8", {})[index] = dict(zip(GAP8_COUNTERS, values))
    return profile


def qemu_timeout(schedule: Schedule, n: int) -> float:
    """Generous: qemu runs well over 50 M instructions a second; 200 instructions per MAC."""
    macs = sum(s.info.get("macs", 0) for s in schedule.steps) + 10_000
    return 60 + n * macs * 200 / 50e6


def locate_mismatch(project: Path, schedule: Schedule, x1: np.ndarray, index: int,
                    makefile="Makefile") -> str:
    """Run one failing input through the host trace build and name the first differing step."""
    exe = build_harness(project, "trace", trace=True, makefile=makefile)
    # a head loop's scores and probabilities are never whole: not traced
    traced = [s for s in schedule.steps if s.name not in partial_outputs(schedule)]
    total = sum(schedule.buffers[s.output].nbytes for s in traced)
    trace = run_harness(exe, x1, int(np.prod(schedule.output["shape"])), trace_bytes=total).trace
    _, expected = run_codes(schedule, quantize_input(schedule, x1), trace=True)
    pos = 0
    for step in traced:
        buf = schedule.buffers[step.output]
        got = trace[pos:pos + buf.nbytes].view(np.dtype(buf.dtype)).astype(np.int64)
        pos += buf.nbytes
        want = expected[step.name].reshape(-1)
        diff = np.nonzero(got != want)[0]
        if diff.size:
            e = int(diff[0])
            return (f"input {index}: layer '{step.layer}' (step {step.name}, {step.kind}) element {e}: "
                    f"expected {int(want[e])}, got {int(got[e])}")
    return f"input {index}: every step matches on the host; the difference is specific to the target"


