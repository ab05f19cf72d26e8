"""The bit-exact reference: numpy runs the Schedule, mirroring C integer semantics.

The host-side input quantizer is part of the contract too: q = trunc(t + copysign(0.5, t)) with
t = clamp(x * mul) in double precision (NaN clamps to the lower bound), exactly as model.c does.
"""
from __future__ import annotations

import numpy as np

from mcugen.ops import step_op
from mcugen.numerics import activation_fn
from mcugen.ops.softmax import apply_output_transform
from mcugen.quant.calibrate import coerce_inputs


def quantize_input(schedule, x):
    """Float inputs (N, ...) -> input codes, as model_quantize_input() in C."""
    spec = schedule.input
    t = np.asarray(x, dtype=np.float32).astype(np.float64) * np.float64(spec["mul"])
    lo = -spec["B"] if spec["signed"] else 0
    t = np.where(t >= lo, t, lo)                 # also maps NaN to lo, like the C comparison
    t = np.where(t <= spec["B"], t, spec["B"])
    return np.trunc(t + np.copysign(0.5, t)).astype(np.int64)


def run_codes(schedule, codes, trace=False):
    """Input codes (N, *shape[1:]) -> output integers (N, *out_shape[1:]); with trace, every
    step's output too (step name -> array)."""
    n = codes.shape[0]
    values = {schedule.input["buffer"]: codes.reshape((n,) + tuple(schedule.input["shape"][1:]))}
    traced = {}
    for step in schedule.steps:
        inputs = [values[name].reshape((n,) + tuple(shape))
                  for name, shape in zip(step.inputs, step.params["in_shapes"])]
        out = step_op(step.kind).run_int(step, inputs)
        values[step.output] = out
        if trace:
            traced[step.name] = out.reshape(n, -1)
    out = values[schedule.output["buffer"]].reshape((n,) + tuple(schedule.output["shape"][1:]))
    return (out, traced) if trace else out


def dequantize_output(schedule, raw):
    """Integer outputs -> floats: acc * per-channel scale, or the code's real value; then any
    fused output activation and the host-side Softmax/LogSoftmax."""
    spec = schedule.output
    raw = np.asarray(raw, dtype=np.int64)
    if spec["kind"] == "acc":
        scales = np.asarray(spec["scales"], dtype=np.float64)      # one per output element
        y = raw * scales.reshape((1,) + raw.shape[1:])
        if spec.get("activation"):
            y = activation_fn(tuple(spec["activation"]))(y)
    else:
        y = np.asarray(spec["values"])[raw + spec["offset"]]
    return apply_output_transform(schedule.output_transform, y)


def run(schedule, x, raw=False):
    """Float inputs in the model's own terms -> float outputs (or raw integers)."""
    x = coerce_inputs(x, schedule.input["shape"])
    out = run_codes(schedule, quantize_input(schedule, x))
    return out if raw else dequantize_output(schedule, out)
