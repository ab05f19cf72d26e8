"""Activation ranges: from calibration samples, or (data-free) from inputs drawn uniformly over
the declared input range. The range of a tensor is max|x| over the samples, or a percentile of
|x| (clipping rare outliers buys resolution for the common values). A uniform grid's range is
then searched among fractions of it (clipped_ranges): its steps are all alike, so the range is
its one lever, where a power grid already spends its resolution near zero."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from mcugen.errors import MCUGenError
from mcugen.ops import get_op

SYNTHETIC_SAMPLES = 64
NUPES_MIN_SAMPLES = 32
CLIP_RANGE = np.round(np.arange(1.0, 0.299, -0.05), 4)  # activation range = factor x max
ACTIVATION_VALUES = 1 << 16  # values per tensor a range search looks at (a seeded subset)


def synthetic_inputs(shape, input_range, seed, n=SYNTHETIC_SAMPLES):
    lo, hi = input_range
    rng = np.random.default_rng(seed)
    return rng.uniform(lo, hi, size=(n,) + tuple(shape[1:]))


def _squeezed(dims) -> tuple:
    return tuple(d for d in dims if d != 1)


def coerce_inputs(x, shape, what="inputs"):
    """(N, *shape[1:]) or (N, flat) or one sample -> (N, *shape[1:]) float64, or a clear error.
    A sample may also differ from shape[1:] by axes of 1 only (a sequence-first model's
    [T, 1, E] samples for its batch-first [1, T, E]: frontend/batch_axis.py)."""
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        raise MCUGenError(f"{what} must be numeric, got dtype {x.dtype}")
    per_sample = int(np.prod(shape[1:]))
    if x.ndim >= 1 and x.size % per_sample == 0 and x.size > 0 and (
            x.shape[1:] == tuple(shape[1:]) or (x.ndim == 2 and x.shape[1] == per_sample)
            or tuple(x.shape) == tuple(shape) or _squeezed(x.shape[1:]) == _squeezed(shape[1:])):
        return x.reshape((-1,) + tuple(shape[1:])).astype(np.float64)
    forms = f"(N, {', '.join(map(str, shape[1:]))})"
    if len(shape) > 2:
        forms += f" or (N, {per_sample})"
    raise MCUGenError(f"{what} have shape {list(x.shape)}; expected {forms}")


def check_calibration(samples, method) -> np.ndarray:
    """Calibration samples the method can use, or a one-line error saying what to give instead.
    NUPES fits a layer's statistics on them: with fewer than NUPES_MIN_SAMPLES they describe
    the samples rather than the data."""
    if samples is None:
        if method == "nupes":
            raise MCUGenError("--method nupes learns from data: give calibration samples with --calib "
                              f"samples.npy (at least {NUPES_MIN_SAMPLES} inputs like the model's own)")
        return None
    least = NUPES_MIN_SAMPLES if method == "nupes" else 1
    if len(samples) < least:
        raise MCUGenError(f"--method nupes needs at least {least} calibration samples, got "
                          f"{len(samples)}: give more with --calib, or use --method powerquant")
    bad = ~np.isfinite(samples.reshape(len(samples), -1)).all(axis=1)
    if bad.any():
        raise MCUGenError(f"{int(bad.sum())} calibration samples hold NaN or infinite values (the "
                          f"first is sample {int(np.argmax(bad))}): remove them from --calib")
    if samples.min() == samples.max():
        raise MCUGenError("every calibration value is the same: --calib needs samples of real inputs")
    return samples


def with_known_bounds(graph, ranges) -> dict:
    """The ranges, with those of the tensors whose op knows its bounds replaced by them."""
    for node in graph.nodes:
        bounds = get_op(node.op).value_bounds(node)
        if bounds is not None:
            ranges[node.output] = (bounds[0] if bounds[0] > 0 else 1.0, bounds[1])
    return ranges


def token_calibration(graph, samples, seed):
    """Calibration for an input of token ids: the samples given (whole ids within the
    tables), or ids drawn uniformly; (samples, input range, notes)."""
    rows = graph.input_rows
    id_range = (0.0, float(rows - 1))
    if samples is None:
        drawn = np.round(synthetic_inputs(graph.shapes[graph.input], id_range, seed))
        return drawn, id_range, [f"no --calib given: token ids drawn uniformly from [0, {rows - 1}]"]
    bad = (samples != np.round(samples)) | (samples < 0) | (samples >= rows)
    if bad.any():
        first = samples.reshape(-1)[np.argmax(bad.reshape(-1))]
        raise MCUGenError(f"the model's input is token ids indexing a table of {rows} rows, but "
                          f"a calibration sample holds {first:g}: give whole ids in [0, {rows - 1}]")
    return samples, id_range, []


def tensor_ranges(values: dict, percentile=None) -> dict:
    """tensor -> (range R > 0, observed minimum) of values computed on the samples."""
    ranges = {}
    for tensor, value in values.items():
        mags = np.abs(value)
        r = float(np.percentile(mags, percentile)) if percentile else float(mags.max())
        if not np.isfinite(r):
            raise MCUGenError(f"activation '{tensor}' is not finite on the calibration inputs")
        ranges[tensor] = (r if r > 0 else 1.0, float(value.min()))
    return ranges


def value_subset(values, rng, weights=None):
    """At most ACTIVATION_VALUES of a tensor's calibration values (flattened; a seeded draw),
    with their `weights` (broadcast against values; None: all alike)."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    weight = np.broadcast_to(1.0 if weights is None else weights, np.shape(values)).reshape(-1)
    if flat.size > ACTIVATION_VALUES:
        pick = rng.choice(flat.size, ACTIVATION_VALUES, replace=False)
        flat, weight = flat[pick], weight[pick]
    return flat, weight


def clipped_ranges(encoding) -> list:
    """The encodings a range search tries: a uniform grid's range clipped by each CLIP_RANGE
    factor (the largest, 1, first); any other grid as it is."""
    if encoding.exponent != 1.0 or encoding.scheme != "power":
        return [encoding]
    return [replace(encoding, range=encoding.range * float(f)) for f in CLIP_RANGE]
