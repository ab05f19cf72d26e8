"""`threshold` (exact, non-decreasing activations only): code = code_min + #{j : acc >= T[r][j]},
T[r][j] the least accumulator value whose float encoding reaches code_min + 1 + j (a code
never reached gets bound + 1, which no accumulator meets). Worst code error: 0 by construction,
and measured like every other encoder. Costs 4 bytes per row and code."""
from __future__ import annotations

import numpy as np

from mcugen.lower.encoders.base import Encoder, EncoderParts, base_params
from mcugen.lower.encoders.exact import Segments, float_thresholds
from mcugen.numerics import activation_is_monotone


def threshold_table(encoding, activation, scale, bound: int) -> np.ndarray:
    """T[r, j], int32, for |acc| <= bound."""
    return float_thresholds(encoding, activation, scale, bound).astype(np.int32)


def search_steps(n):
    """An unrolled branch-per-step search for #{k : T[k] <= acc} over n sorted thresholds.
    With d = floor(log2(n + 1)): when n != 2^d - 1, a first probe at T[enc_pre] moves the base
    to n - 2^d + 1 (the count is then in [n - 2^d + 1, n]) or keeps it at 0 (count in
    [0, 2^d - 1]); then steps s = 2^(d-1) .. 1 each probe T[base + s - 1] and add s on success.
    Every probe index stays below n."""
    d = (n + 1).bit_length() - 1
    pre = n - (1 << d)                       # probe index, -1 when n == 2^d - 1
    return {"enc_pre": pre, "enc_pre_step": pre + 1,
            "enc_steps": [[1 << e, (1 << e) - 1] for e in range(d - 1, -1, -1)]}


def reached_counts(thresholds, rows, acc):
    """#{j : T[r][j] <= acc} for each (row r, acc) pair (rows and acc broadcast together), for
    (rows, n) thresholds sorted within each row: all rows at once, on one sorted line where row
    r's thresholds are shifted by r * stride."""
    thresholds = np.asarray(thresholds, dtype=np.int64)
    rows, acc = np.broadcast_arrays(np.asarray(rows, dtype=np.int64), np.asarray(acc, dtype=np.int64))
    low = min(thresholds.min(initial=0), acc.min(initial=0))
    stride = max(thresholds.max(initial=0), acc.max(initial=0)) - low + 2
    line = (thresholds + (np.arange(thresholds.shape[0], dtype=np.int64)[:, None] * stride - low)).reshape(-1)
    return np.searchsorted(line, rows * stride - low + acc, side="right") - rows * thresholds.shape[1]


class Threshold(Encoder):
    name = "threshold"
    realizes = "it needs a non-decreasing function"

    def supports(self, activation) -> bool:
        return activation_is_monotone(activation)

    def build(self, request, beaten=None):
        thresholds = request.thresholds().astype(np.int32)     # threshold_table, shared with
                                                               # the request's reference
        consts = {"enc_thresholds": thresholds}
        n = thresholds.shape[1]
        params = dict(base_params(self.name, request, consts, ["enc_thresholds"]),
                      n_thresholds=n, **search_steps(n))
        steps = len(params["enc_steps"]) + (params["enc_pre"] >= 0)
        return EncoderParts(consts, params, self.measure(request, params, consts),
                            ops_per_element=3 * steps)   # compare, branch, add per step
                                                          # (bench/encoders.py: 21.5-25.4 at 8 bits)

    def run(self, params, consts, acc, rows):
        acc, rows = np.broadcast_arrays(np.asarray(acc, dtype=np.int64), rows)
        codes = np.empty(acc.shape, dtype=np.int64)
        for r in np.unique(rows):
            where = rows == r
            codes[where] = np.searchsorted(consts["enc_thresholds"][r], acc[where], side="right")
        return codes + params["code_min"]

    def segments(self, request, params, consts):
        """Row r's code is code_min + #{j : T[r][j] <= acc}: it changes at each threshold met."""
        thresholds = consts["enc_thresholds"].astype(np.int64)
        rows, bound = thresholds.shape[0], request.bound
        starts = np.concatenate([np.full((rows, 1), -bound, dtype=np.int64), thresholds], axis=1)
        inside = starts <= bound
        row = np.broadcast_to(np.arange(rows, dtype=np.int64)[:, None], starts.shape)[inside]
        start = starts[inside]
        count = reached_counts(thresholds, row, start)
        return Segments.flat(row, start, params["code_min"] + count, rows)
