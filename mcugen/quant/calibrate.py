"""Activation ranges: from calibration samples, or (data-free) from inputs drawn uniformly over
the declared input range. The range of a tensor is max|x| over the samples, or a percentile of
|x| (clipping rare outliers buys resolution for the common values)."""
from __future__ import annotations

import numpy as np

from mcugen.errors import MCUGenError

SYNTHETIC_SAMPLES = 64


def synthetic_inputs(shape, input_range, seed, n=SYNTHETIC_SAMPLES):
    lo, hi = input_range
    rng = np.random.default_rng(seed)
    return rng.uniform(lo, hi, size=(n,) + tuple(shape[1:]))


def coerce_inputs(x, shape, what="inputs"):
    """(N, *shape[1:]) or (N, flat) or one sample -> (N, *shape[1:]) float64, or a clear error."""
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        raise MCUGenError(f"{what} must be numeric, got dtype {x.dtype}")
    per_sample = int(np.prod(shape[1:]))
    if x.ndim >= 1 and x.size % per_sample == 0 and x.size > 0 and (
            x.shape[1:] == tuple(shape[1:]) or (x.ndim == 2 and x.shape[1] == per_sample)
            or tuple(x.shape) == tuple(shape)):
        return x.reshape((-1,) + tuple(shape[1:])).astype(np.float64)
    raise MCUGenError(f"{what} have shape {list(x.shape)}; expected (N, {', '.join(map(str, shape[1:]))}) "
                      f"or (N, {per_sample})")


def activation_ranges(graph, samples, percentile=None) -> dict:
    """tensor -> (range R > 0, observed minimum)."""
    values = graph.run_float(samples)
    ranges = {}
    for tensor, value in values.items():
        mags = np.abs(value)
        r = float(np.percentile(mags, percentile)) if percentile else float(mags.max())
        if not np.isfinite(r):
            raise MCUGenError(f"activation '{tensor}' is not finite on the calibration inputs")
        ranges[tensor] = (r if r > 0 else 1.0, float(value.min()))
    return ranges
