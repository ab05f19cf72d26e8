"""Encoders: from an integer accumulator to the next layer's code, integer-only.

`threshold` (exact): for a non-decreasing sigma, code(acc) = code_min + #{j : acc >= T[j]},
with T[j] the least accumulator value whose float encoding reaches code_min + 1 + j. The table
is found by integer bisection on the float encoder itself, so it agrees with
  code = clamp(round(B * (sigma(acc * scale) / R)^a))
for every accumulator value, with no rounding argument to get wrong.
"""
from __future__ import annotations

import numpy as np

from mcugen.errors import MCUGenError
from mcugen.lower.fixedpoint import ACC_LIMIT
from mcugen.ops._common import activation_fn, activation_is_monotone


def float_encoder(encoding, activation, scale):
    """acc (C, M) integers, scale (C,) -> codes: the reference semantics thresholds realize."""
    sigma = activation_fn(activation)
    scale = np.asarray(scale, dtype=np.float64).reshape(-1, 1)

    def encode(acc):
        return encoding.encode(sigma(np.asarray(acc, dtype=np.float64) * scale))
    return encode


def threshold_table(encoding, activation, scale, bound: int) -> np.ndarray:
    """T[c, j], int32, for |acc| <= bound; a code never reached gets bound + 1."""
    scale = np.atleast_1d(np.asarray(scale, dtype=np.float64))
    encode = float_encoder(encoding, activation, scale)
    targets = np.arange(encoding.code_min + 1, encoding.B + 1)                  # (J,)
    channels = scale.size
    lo = np.full((channels, targets.size), -bound, dtype=np.int64)
    hi = np.full((channels, targets.size), bound + 1, dtype=np.int64)
    while np.any(lo < hi):
        mid = (lo + hi) // 2
        reached = encode(mid) >= targets[None, :]
        active = lo < hi
        hi = np.where(active & reached, mid, hi)
        lo = np.where(active & ~reached, mid + 1, lo)
    return lo.astype(np.int32)


def apply_thresholds(acc: np.ndarray, thresholds: np.ndarray, code_min: int) -> np.ndarray:
    """acc (N, C, M) -> codes (N, C, M): the reference of the C binary search."""
    codes = np.empty(acc.shape, dtype=np.int64)
    for c in range(acc.shape[1]):
        codes[:, c] = np.searchsorted(thresholds[c], acc[:, c], side="right")
    return codes + code_min


def encoder_step_parts(encoding, activation, scale, bound):
    """The threshold encoder of a step: (consts, params, info) to merge into the step's own."""
    if not activation_is_monotone(activation):
        raise MCUGenError(f"activation {activation[0]} with a negative slope is not monotone: "
                          f"no threshold encoder can realize it")
    if bound > ACC_LIMIT:      # callers prove their bound; an unproven one is a lowering bug
        raise AssertionError(f"accumulator bound {bound} exceeds int32")
    thresholds = threshold_table(encoding, activation, scale, bound)
    params = {"n_thresholds": thresholds.shape[1], "code_min": encoding.code_min}
    info = {"abits": encoding.bits, "exponent": encoding.exponent, "encoder": "threshold",
            "encoder_max_code_error": 0, "table_bytes": int(thresholds.nbytes)}
    return {"thresholds": thresholds}, params, info
