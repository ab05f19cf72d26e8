"""The integer model's outputs on the evaluation inputs.

`reference`: the Python integer reference, batched. `host`: the point's generated C compiled
with the host's cc and run on every input, its first CHECKED outputs compared with the
reference bit for bit. The two give the same numbers (the project's contract, checked here
on a sample and by `mcugen verify`); the C is the fast one: on resnet8 at W4A4 (product tables)
800 inputs take the reference about 33 s and the C about 4 s, compile included.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mcugen.errors import MCUGenError
from mcugen.explore.metrics import batched
from mcugen.reference.interpreter import dequantize_output, quantize_input, run_codes
from mcugen.targets import target_of

EVALUATIONS = ("auto", "host", "reference")
CHECKED = 16            # evaluation inputs whose C outputs are compared with the reference


def resolve_evaluation(evaluate: str, target) -> str:
    """`auto`: the generated C on the host for a target whose harness is a host program (host,
    rv32), else the reference."""
    if evaluate not in EVALUATIONS:
        raise MCUGenError(f"--evaluate takes {', '.join(EVALUATIONS)}, not '{evaluate}'")
    if evaluate == "auto":
        return "host" if target.host_harness else "reference"
    if evaluate == "host" and not target.host_harness:
        raise MCUGenError(f"--evaluate host runs the C of the host and rv32 targets; use "
                          f"--evaluate reference for the {target.name} target")
    return evaluate


def integer_outputs(path: Path, project, how: str, x: np.ndarray) -> np.ndarray:
    """(N, outputs per input) floats, as the integer model computes them."""
    if how == "reference":
        return batched(project.run, x)
    schedule = project.schedule
    target = target_of(schedule)
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    raw = target.run(target.build(path, on="host"), schedule, x32, on="host").outputs
    raw = raw.reshape((len(x),) + tuple(schedule.output["shape"][1:]))
    checked = run_codes(schedule, quantize_input(schedule, x32[:CHECKED]))
    differ = np.nonzero(np.any((raw[:CHECKED] != checked).reshape(len(checked), -1), axis=1))[0]
    if differ.size:
        raise MCUGenError(f"the generated C differs from the reference on evaluation input "
                          f"{int(differ[0])} (run `mcugen verify {path}`)")
    return dequantize_output(schedule, raw).reshape(len(x), -1)
