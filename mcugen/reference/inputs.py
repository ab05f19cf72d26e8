"""Test inputs drawn over a schedule's calibrated input range, its two ends first: what verify,
the HLS test bench and the tests run the generated code on."""
from __future__ import annotations

import numpy as np

from mcugen.ir.schedule import Schedule


def verify_inputs(schedule: Schedule, n: int, seed: int, extra=None) -> np.ndarray:
    lo, hi = schedule.meta["input_range"]
    rng = np.random.default_rng(seed)
    shape = tuple(schedule.input["shape"][1:])
    x = rng.uniform(lo, hi, size=(n,) + shape)
    edges = np.stack([np.full(shape, lo), np.full(shape, hi)])    # the range's own ends
    parts = [edges, x] + ([extra] if extra is not None else [])
    return np.concatenate(parts).astype(np.float32)
