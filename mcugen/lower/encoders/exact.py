"""The float encoder every realization is measured against, and exact comparisons with it.

The float encoder of a row r (an output channel, or a pooling window size) is
  code(acc) = clamp(round(B * (sigma(acc * scale_r) / R)^a))
evaluated in float64 on the integer accumulator. It is piecewise constant in acc. Between two
turning points of sigma it is monotone, so the least accumulator value that reaches each code
is found by integer bisection on the float encoder itself: no rounding argument to get wrong.
A realization (thresholds, a table behind an index, Pade arithmetic) is piecewise constant too;
comparing the two segment lists gives the worst code error and the number of accumulator
values off, over the whole range [-bound, bound], not over samples.

Segments of every row are kept in flat arrays and compared all rows at once: an encoder's
search measures tens of candidates of up to 2^16 segments per row on layers of hundreds of
rows, and a loop over rows (or np.union1d, which hashes) made that the cost of a build.
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


class Segments:
    """A piecewise-constant function of the accumulator, per row: starts[r] (sorted, the first
    is -bound) and the code on [starts[r][i], starts[r][i+1]).

    Stored flat, sorted by (row, start): `row`, `start`, `code`, with row r's segments at
    offsets[r]:offsets[r + 1]. A start repeated within a row is kept once (the last one, which
    is the one `at` always read)."""

    def __init__(self, starts, codes):
        counts = [len(s) for s in starts]
        row = np.repeat(np.arange(len(starts), dtype=np.int64), counts)
        flat = [np.asarray(s, dtype=np.int64).reshape(-1) for s in starts]
        values = [np.asarray(c, dtype=np.int64).reshape(-1) for c in codes]
        self._set(row, np.concatenate(flat) if flat else np.zeros(0, np.int64),
                  np.concatenate(values) if values else np.zeros(0, np.int64), len(starts))

    @classmethod
    def flat(cls, row, start, code, rows):
        """From flat arrays already sorted by (row, start)."""
        self = cls.__new__(cls)
        self._set(np.asarray(row, dtype=np.int64), np.asarray(start, dtype=np.int64),
                  np.asarray(code, dtype=np.int64), rows)
        return self

    def _set(self, row, start, code, rows):
        last = np.ones(row.size, dtype=bool)       # the last of each repeated (row, start)
        last[:-1] = (row[1:] != row[:-1]) | (start[1:] != start[:-1])
        self.row, self.start, self.code, self.rows = row[last], start[last], code[last], rows
        self.offsets = np.searchsorted(self.row, np.arange(rows + 1))

    @property
    def starts(self) -> list:
        return np.split(self.start, self.offsets[1:-1])

    @property
    def codes(self) -> list:
        return np.split(self.code, self.offsets[1:-1])

    def at(self, row, acc):
        lo, hi = self.offsets[row], self.offsets[row + 1]
        i = np.searchsorted(self.start[lo:hi], acc, side="right") - 1
        return self.code[lo:hi][i]

    def keys(self, bound):
        """One sorted int64 key per segment: row r's accumulator range [-bound, bound] maps to
        [r * (2 bound + 1), (r + 1) * (2 bound + 1)), so the rows tile one line."""
        return self.row * (2 * bound + 1) + (self.start + bound)

    def subset(self, rows):
        """The segments of the given rows (sorted, distinct), renumbered 0..len(rows) - 1."""
        pick = np.concatenate([np.arange(self.offsets[r], self.offsets[r + 1]) for r in rows])
        new_row = np.repeat(np.arange(len(rows), dtype=np.int64),
                            [self.offsets[r + 1] - self.offsets[r] for r in rows])
        return Segments.flat(new_row, self.start[pick], self.code[pick], len(rows))


@dataclass
class Merged:
    """Two segment lists over the same rows on the union of their starts: per piece its row,
    its start, its length in accumulator values and the code of each list there."""
    row: np.ndarray
    start: np.ndarray
    length: np.ndarray
    code_a: np.ndarray
    code_b: np.ndarray


def merge(a: Segments, b: Segments, bound: int) -> Merged:
    """The union of both lists' starts, every row at once. Each row of each list starts at
    -bound, so every piece has a code in both."""
    assert a.rows == b.rows and np.all(a.start[a.offsets[:-1]] == -bound) \
        and np.all(b.start[b.offsets[:-1]] == -bound), "segments must start every row at -bound"
    ka, kb = a.keys(bound), b.keys(bound)
    keys = np.concatenate([ka, kb])
    order = np.argsort(keys, kind="stable")        # two sorted runs: a linear merge
    keys = keys[order]
    from_a = order < ka.size
    ia = np.cumsum(from_a) - 1                     # the last segment of a at or before the key
    ib = np.cumsum(~from_a) - 1
    last = np.ones(keys.size, dtype=bool)          # of equal keys, the last has seen both
    last[:-1] = keys[1:] != keys[:-1]
    keys, ia, ib = keys[last], ia[last], ib[last]
    stride = 2 * bound + 1
    length = np.diff(np.append(keys, a.rows * stride))
    row = a.row[ia]
    return Merged(row, keys - row * stride - bound, length, a.code[ia], b.code[ib])


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


def float_thresholds(encoding, activation, scale, bound) -> np.ndarray:
    """(rows, codes - 1) int64: per row, the least acc in [-bound, bound] whose float encoding
    reaches each code above the lowest (bound + 1 when none does). Meaningful for an activation
    that does not decrease; float_segments and the threshold encoder share it."""
    scale = np.atleast_1d(np.asarray(scale, dtype=np.float64))
    lo, hi = np.full(scale.size, -bound, dtype=np.int64), np.full(scale.size, bound, dtype=np.int64)
    return least_reaching(float_encoder(encoding, activation, scale), encoding.codes()[1:], lo, hi)


def float_segments(encoding, activation, scale, bound, thresholds=None) -> Segments:
    """The float encoder of every row as segments over [-bound, bound]. `thresholds`, a
    callable returning float_thresholds(...), saves the search when sigma rises on every row
    over the whole range (the same bisection on the same values)."""
    scale = np.atleast_1d(np.asarray(scale, dtype=np.float64))
    encode = float_encoder(encoding, activation, scale)
    codes_all = encoding.codes()
    rows_found, starts_found = [], []
    for lo, hi, increasing in monotone_pieces(activation, scale, bound):
        for rising in (True, False):
            rows = np.flatnonzero((lo <= hi) & (increasing == rising))
            if rows.size == 0:
                continue
            targets = codes_all[1:] if rising else codes_all[::-1][1:]
            whole = rising and rows.size == scale.size and np.all(lo == -bound) and np.all(hi == bound)
            if whole and thresholds is not None:
                starts = thresholds()
            else:
                starts = least_reaching(lambda acc: _rows_encode(encode, scale.size, rows, acc),
                                        targets, lo[rows], hi[rows], rising)
            inside = starts <= hi[rows][:, None]
            rows_found += [rows, np.broadcast_to(rows[:, None], starts.shape)[inside]]
            starts_found += [lo[rows], starts[inside]]
    row, start = np.concatenate(rows_found), np.concatenate(starts_found)
    order = np.lexsort((start, row))
    row, start = row[order], start[order]
    return Segments.flat(row, start, _encode_flat(encode, scale.size, row, start), scale.size)


def _rows_encode(encode, n_rows, rows, acc):
    """The float encoder of a subset of rows: acc (len(rows), T)."""
    grid = np.zeros((n_rows, acc.shape[1]), dtype=np.int64)
    grid[rows] = acc
    return encode(grid)[rows]


def _encode_flat(encode, n_rows, row, acc):
    """The float encoder at (row[i], acc[i]), row sorted: one (rows, longest) grid, each row's
    values left-aligned (the float encoder is elementwise; the padding is never read)."""
    counts = np.bincount(row, minlength=n_rows)
    column = np.arange(row.size) - np.repeat(np.cumsum(counts) - counts, counts)
    grid = np.zeros((n_rows, max(int(counts.max(initial=0)), 1)), dtype=np.int64)
    grid[row, column] = acc
    return encode(grid)[row, column]


@dataclass
class CodeError:
    worst: int              # max |realized - float| over every accumulator value
    off_share: float        # share of accumulator values whose code differs at all
    mean: float             # mean |realized - float| over every accumulator value
    active_off_share: float = 0.0   # the same share among the accumulator values between each
                                    # row's first and last breakpoint (where codes change)


def compare(reference: Segments, realized: Segments, bound: int) -> CodeError:
    """Exact worst and mean code error of `realized` against `reference` on [-bound, bound]."""
    merged = merge(reference, realized, bound)
    return merged_error(reference, merged, merged.code_b)


def merged_error(reference: Segments, merged: Merged, realized_codes) -> CodeError:
    """The CodeError of realized codes given on the pieces of merge(reference, ...)."""
    error = np.abs(realized_codes - merged.code_a)
    return tally(reference, merged.row, merged.start, merged.length, error).code_error()


@dataclass
class Tally:
    """The integer sums a CodeError is made of, over some pieces (they add up)."""
    worst: int
    off: int
    weighted: int           # sum of length * |error|
    total: int
    active_off: int
    active: int

    def __add__(self, other):
        return Tally(max(self.worst, other.worst), *(a + b for a, b in zip(
            (self.off, self.weighted, self.total, self.active_off, self.active),
            (other.off, other.weighted, other.total, other.active_off, other.active))))

    def code_error(self) -> CodeError:
        return CodeError(self.worst, self.off / self.total, self.weighted / self.total,
                         self.active_off / self.active if self.active else 0.0)


def tally(reference: Segments, row, start, length, error) -> Tally:
    """The sums over pieces [start, start + length) of `row` (arrays that broadcast together;
    pieces of length 0 count for nothing) with code error `error` against `reference`."""
    off = (error > 0) & (length > 0)
    # [first breakpoint, last breakpoint) of each row: the part where its codes change
    has_breaks = np.diff(reference.offsets) > 1
    first = reference.start[np.minimum(reference.offsets[:-1] + 1, reference.start.size - 1)]
    last = reference.start[reference.offsets[1:] - 1]
    inside = has_breaks[row] & (start >= first[row]) & (start < last[row])
    return Tally(int(np.where(length > 0, error, 0).max(initial=0)), int((length * off).sum()),
                 int((length * error).sum()), int(length.sum()),
                 int((length * (inside & off)).sum()), int((length * inside).sum()))
