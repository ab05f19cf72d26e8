"""The float encoder every realization is measured against, and exact comparisons with it.

The float encoder of a row r (an output channel, or a pooling window size) is
  code(acc) = clamp(round(B * (sigma(acc * scale_r) / R)^a))
evaluated in float64 on the integer accumulator. It is piecewise constant in acc. Between two
turning points of sigma it is monotone, so the least accumulator value that reaches each code
is found by integer bisection on the float encoder itself: no rounding argument to get wrong.
A realization (thresholds, a table behind an index, Pade arithmetic) is piecewise constant too;
comparing the two segment lists gives the worst code error and the number of accumulator
values off, over the whole range [-bound, bound], not over samples.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcugen.numerics import activation_fn, activation_turning_points


def float_encoder(encoding, activation, scale):
    """acc (rows, M) integers -> codes, with scale (rows,): the reference semantics."""
    sigma = activation_fn(activation, axis=0)
    scale = np.asarray(scale, dtype=np.float64).reshape(-1, 1)

    def encode(acc):
        return encoding.encode(sigma(np.asarray(acc, dtype=np.float64) * scale))
    return encode


def least_reaching(code_fn, targets, lo, hi, increasing=True):
    """(rows, T): per row, the least acc in [lo_r, hi_r] with code_fn(acc) >= target (or <=
    target when decreasing), hi_r + 1 when none does. code_fn must be monotone on the range;
    code_fn maps an int64 (rows, T) array to codes."""
    rows = lo.size
    targets = np.asarray(targets, dtype=np.int64)
    targets = np.broadcast_to(targets, (rows, targets.shape[-1]))
    low = np.repeat(lo.reshape(-1, 1).astype(np.int64), targets.shape[1], axis=1)
    high = np.repeat(hi.reshape(-1, 1).astype(np.int64) + 1, targets.shape[1], axis=1)
    while True:
        active = low < high
        if not active.any():
            return low
        mid = (low + high) // 2
        codes = code_fn(np.where(active, mid, low))
        reached = codes >= targets if increasing else codes <= targets
        high = np.where(active & reached, mid, high)
        low = np.where(active & ~reached, mid + 1, low)


@dataclass
class Segments:
    """A piecewise-constant function of the accumulator, per row: starts[r] (sorted, the first
    is -bound) and the code on [starts[r][i], starts[r][i+1])."""
    starts: list
    codes: list

    def at(self, row, acc):
        i = np.searchsorted(self.starts[row], acc, side="right") - 1
        return self.codes[row][i]


def monotone_pieces(activation, scale, bound):
    """Per row, the accumulator intervals [lo, hi] on which sigma(acc * scale_r) is monotone,
    with their direction per row (a per-channel PRelu rises on one row and falls on another):
    [(lo (rows,), hi (rows,), increasing (rows,) bool)]."""
    scale = np.asarray(scale, dtype=np.float64)
    edges = [np.full(scale.size, -bound - 1, dtype=np.int64)]
    for t in activation_turning_points(activation):
        edges.append(np.clip(np.floor(t / scale), -bound - 1, bound).astype(np.int64))
    edges.append(np.full(scale.size, bound, dtype=np.int64))
    sigma = activation_fn(activation, axis=0)
    pieces = []
    for left, right in zip(edges[:-1], edges[1:]):
        lo, hi = left + 1, right
        # the direction of this piece, read off sigma at its ends
        ends = sigma(np.stack([lo, np.maximum(hi, lo)], axis=1).astype(np.float64) * scale[:, None])
        increasing = ends[:, 1] >= ends[:, 0]
        pieces.append((lo, hi, increasing))
    return pieces


def float_segments(encoding, activation, scale, bound) -> Segments:
    """The float encoder of every row as segments over [-bound, bound]."""
    scale = np.atleast_1d(np.asarray(scale, dtype=np.float64))
    encode = float_encoder(encoding, activation, scale)
    codes_all = encoding.codes()
    per_row = [[] for _ in range(scale.size)]
    for lo, hi, increasing in monotone_pieces(activation, scale, bound):
        for rising in (True, False):
            rows = np.flatnonzero((lo <= hi) & (increasing == rising))
            if rows.size == 0:
                continue
            targets = codes_all[1:] if rising else codes_all[::-1][1:]
            starts = least_reaching(lambda acc: _rows_encode(encode, scale.size, rows, acc),
                                    targets, lo[rows], hi[rows], rising)
            for i, r in enumerate(rows):
                inside = starts[i][starts[i] <= hi[r]]
                per_row[r].append(np.concatenate([[lo[r]], inside]))
    starts = [np.unique(np.concatenate(p)) for p in per_row]
    return Segments(starts, [_rows_encode(encode, scale.size, [r], s[None, :])[0]
                             for r, s in enumerate(starts)])


def _rows_encode(encode, n_rows, rows, acc):
    """The float encoder of a subset of rows: acc (len(rows), T)."""
    grid = np.zeros((n_rows, acc.shape[1]), dtype=np.int64)
    grid[rows] = acc
    return encode(grid)[rows]


@dataclass
class CodeError:
    worst: int              # max |realized - float| over every accumulator value
    off_share: float        # share of accumulator values whose code differs at all
    mean: float             # mean |realized - float| over every accumulator value
    active_off_share: float = 0.0   # the same share among the accumulator values between each
                                    # row's first and last breakpoint (where codes change)


def compare(reference: Segments, realized: Segments, bound: int) -> CodeError:
    """Exact worst and mean code error of `realized` against `reference` on [-bound, bound]."""
    worst, off, total_error, total, active_off, active = 0, 0, 0, 0, 0, 0
    for r in range(len(reference.starts)):
        starts = np.union1d(reference.starts[r], realized.starts[r])
        lengths = np.diff(np.append(starts, bound + 1))
        error = np.abs(realized.at(r, starts) - reference.at(r, starts))
        worst = max(worst, int(error.max()))
        off += int(lengths[error > 0].sum())
        total_error += int((lengths * error).sum())
        total += int(lengths.sum())
        breaks = reference.starts[r][1:]
        if breaks.size:     # [first breakpoint, last breakpoint): the changing part of the row
            inside = (starts >= breaks[0]) & (starts < breaks[-1])
            active_off += int(lengths[inside & (error > 0)].sum())
            active += int(lengths[inside].sum())
    return CodeError(worst, off / total, total_error / total, active_off / active if active else 0.0)
