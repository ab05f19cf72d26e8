"""Build a generated project, run it on many inputs, compare with the reference bit for bit.

On a difference, the trace build (-DMODEL_TRACE) runs the first failing input again and the
first step whose output differs is named, with the element, the expected and the actual value.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mcugen.errors import MCUGenError
from mcugen.ir.schedule import Schedule
from mcugen.reference.interpreter import quantize_input, run_codes

RUN_TIMEOUT = 600


def find_cc() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise MCUGenError("no C compiler found: install gcc (apt-get install gcc) or set CC")
    return cc


def build_harness(project: Path, variant: str = "", sanitize=False, trace=False) -> Path:
    """make in the project; returns the harness executable."""
    build = f"build/{variant or 'default'}"
    cmd = ["make", "-s", "-C", str(project), f"BUILD={build}", f"CC={find_cc()}"]
    if sanitize:
        cmd.append("SANITIZE=1")
    if trace:
        cmd.append("TRACE=1")
    if shutil.which("make") is None:
        raise MCUGenError("`make` not found: install it (apt-get install make)")
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        first = (done.stderr or done.stdout).strip().splitlines()[:1]
        raise MCUGenError(f"the generated C did not compile: {first[0] if first else 'make failed'}")
    return project / build / "model_test"


def run_harness(exe: Path, x: np.ndarray, n_out: int, trace_bytes: int = 0, timeout=RUN_TIMEOUT):
    """Float32 inputs (N, ...) -> raw int32 outputs (N, n_out) [, trace bytes]."""
    with tempfile.TemporaryDirectory() as tmp:
        fin, fout, ftrace = (Path(tmp) / n for n in ("in.f32", "out.i32", "trace.bin"))
        np.ascontiguousarray(x, dtype=np.float32).tofile(fin)
        args = [str(exe), str(fin), str(fout)] + ([str(ftrace)] if trace_bytes else [])
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0", UBSAN_OPTIONS="print_stacktrace=1")
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            raise MCUGenError(f"the generated program ran longer than {timeout} s") from None
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-3:]
            raise MCUGenError(f"the generated program failed (exit {done.returncode}): {' | '.join(tail)}")
        out = np.fromfile(fout, dtype=np.int32).reshape(-1, n_out)
        trace = np.fromfile(ftrace, dtype=np.uint8) if trace_bytes else None
    return (out, trace) if trace_bytes else out


@dataclass
class VerifyResult:
    n: int
    mismatches: int
    first: str | None = None


def verify_inputs(schedule: Schedule, n: int, seed: int, extra=None) -> np.ndarray:
    lo, hi = schedule.meta["input_range"]
    rng = np.random.default_rng(seed)
    shape = tuple(schedule.input["shape"][1:])
    x = rng.uniform(lo, hi, size=(n,) + shape)
    edges = np.stack([np.full(shape, lo), np.full(shape, hi)])    # the range's own ends
    parts = [edges, x] + ([extra] if extra is not None else [])
    return np.concatenate(parts).astype(np.float32)


def compare(project: Path, schedule: Schedule, x: np.ndarray, sanitize=False) -> VerifyResult:
    n_out = int(np.prod(schedule.output["shape"]))
    exe = build_harness(project, "asan" if sanitize else "", sanitize=sanitize)
    got = run_harness(exe, x, n_out)
    expected = run_codes(schedule, quantize_input(schedule, x)).reshape(len(x), -1)
    bad = np.nonzero(np.any(got != expected, axis=1))[0]
    if bad.size == 0:
        return VerifyResult(len(x), 0)
    return VerifyResult(len(x), int(bad.size), locate_mismatch(project, schedule, x[bad[0]:bad[0] + 1], int(bad[0])))


def locate_mismatch(project: Path, schedule: Schedule, x1: np.ndarray, index: int) -> str:
    """Run one failing input through the trace build and name the first differing step."""
    exe = build_harness(project, "trace", trace=True)
    total = sum(schedule.buffers[s.output].nbytes for s in schedule.steps)
    _, trace = run_harness(exe, x1, int(np.prod(schedule.output["shape"])), trace_bytes=total)
    _, expected = run_codes(schedule, quantize_input(schedule, x1), trace=True)
    pos = 0
    for step in schedule.steps:
        buf = schedule.buffers[step.output]
        got = trace[pos:pos + buf.nbytes].view(np.dtype(buf.dtype)).astype(np.int64)
        pos += buf.nbytes
        want = expected[step.name].reshape(-1)
        diff = np.nonzero(got != want)[0]
        if diff.size:
            e = int(diff[0])
            return (f"input {index}: layer '{step.layer}' (step {step.name}, {step.kind}) element {e}: "
                    f"expected {int(want[e])}, got {int(got[e])}")
    return f"input {index}: every step matches but the final output differs"


