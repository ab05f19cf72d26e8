"""`bracket` (exact, non-decreasing activations only): a small table gives the code of most
accumulators at once, and narrows the others to two neighbours that one threshold decides.

    u    = clamp(((acc >> pre) * mult_r) >> shift_r, lo, hi)       (32-bit, proven not to wrap)
    e    = C[u - lo]                                                (int16, shared by the rows)
    code = e (its low byte)                          when e >= 0   (one code in every row)
    code = hi - (acc < T'[r][hi - code_min])         else, hi - code_min = e + 256
                                                                    (T' = [unused, T])

A cell of C holds, over every row, at most two neighbouring codes: one (then C holds the
code's byte, 0..255, and the encoder is a multiply, a clamp, a load and a sign test) or two
(then C holds the greater's offset hi - code_min, less 256: negative, and the compare with the
exact threshold of hi decides). Any index that moves one way with acc will do, so it needs no
precision: one 32-bit multiply of the pre-shifted accumulator, where the lut's requantization
needs the high word of a 64-bit product (5 cycles on the CV32E40P). T' has a leading column
no code reads (T'[r][hi - code_min] is T[r][hi - code_min - 1]).

The table size: the smallest that brackets every cell, then 2, 4, ... times finer up to
FAST_CELLS, the one with the least table bytes + values encoded per inference x instructions
per value (auto's exchange rate: lower/encoders/__init__.py), the values taken as spread evenly
over the codes (what a grid fitted to its data is for) to count those that take the compare
(bracketed_share). Stored levels (DESIGN section 1): the one-code cells hold the level's byte,
the compare's code reads it from enc_out."""
from __future__ import annotations

import numpy as np

from mcugen.lower.encoders.base import Encoder, EncoderParts, base_params
from mcugen.lower.encoders.exact import Segments
from mcugen.lower.encoders.threshold import reached_counts
from mcugen.numerics import activation_is_monotone

PRODUCT_BITS = 31          # |acc >> pre| <= 2^ACC_BITS and mult < 2^MULT_BITS: below 2^31
MULT_BITS = 15
ACC_BITS = PRODUCT_BITS - MULT_BITS - 1
MAX_SHIFT = 31             # a 32-bit shift
MIN_CELLS, MAX_CELLS = 8, 4096
FAST_CELLS = 1024          # finer tables (for fewer compares) stop here: 2 KB of int16
STEPS_PER_DOUBLING = 4     # table sizes grow by 2^(1/4)
BRACKETED = 256            # a two-code cell holds its greater code's offset less this: < 0
OPS_ONE_CODE = 8           # RV32IMC per element: pre-shift, mul, shift, clamp (2), table address
OPS_BRACKETED = 6          # and load, the branch; then threshold address (3), load, compare, sub


def pre_shift(bound: int) -> int:
    """The shift that brings every acc in [-bound, bound] into int16 (ACC_BITS = 15): bound <
    2^(pre + 15), so bound >> pre <= 2^15 - 1 and -bound >> pre >= -2^15. The C may then
    multiply the low halves (CORE-V's cv.mulsN)."""
    return max(0, int(bound).bit_length() - ACC_BITS)


def index_multipliers(ratio):
    """(mult, shift) per row, mult / 2^shift ~ ratio, 0 <= mult < 2^MULT_BITS, 0 <= shift <=
    MAX_SHIFT; one shift for all rows when the ratios allow it (a literal in the C)."""
    ratio = np.asarray(ratio, dtype=np.float64)
    positive = ratio > 0
    exp = np.floor(np.log2(np.where(positive, ratio, 1.0))).astype(np.int64)
    shift = np.clip(MULT_BITS - 1 - exp, 0, MAX_SHIFT)
    if positive.any():
        common = int(shift[positive].min())
        if np.all(np.rint(ratio[positive] * 2.0 ** common) >= 1 << (MULT_BITS - 8)):
            shift = np.full(ratio.shape, common, dtype=np.int64)   # >= 7 significant bits each
    mult = np.clip(np.rint(ratio * np.exp2(shift.astype(np.float64))), 0, (1 << MULT_BITS) - 1)
    return mult.astype(np.int64), shift.astype(np.int64)


def cell_index(acc, pre, mult, shift):
    """The unclamped cell of acc, exactly as the C computes it."""
    return ((np.asarray(acc, dtype=np.int64) >> pre) * mult) >> shift


def cell_starts(pre, mult, shift, lo, hi, bound):
    """(rows, cells) first accumulator of each cell k = lo..hi, clamped cells included: cell lo
    starts at -bound, cell k > lo at the least acc with index >= k, ceil(k 2^s / m) 2^pre (past
    the bound when the row's multiplier is 0). Starts past the bound mark empty cells."""
    k = np.arange(lo + 1, hi + 1, dtype=np.int64)[None, :]
    mult, shift = mult[:, None], shift[:, None]
    divisor = np.maximum(mult, 1)
    first = -((-(k << shift)) // divisor) << pre
    first = np.where(mult > 0, np.clip(first, -bound, bound + 1), bound + 1)
    return np.concatenate([np.full((mult.shape[0], 1), -bound, dtype=np.int64), first], axis=1)


def cell_codes(thresholds, starts, bound):
    """Per cell (shared by every row): the least and the greatest code offset an accumulator of
    the cell takes in any row; empty cells get least > greatest."""
    ends = np.concatenate([starts[:, 1:] - 1, np.full((starts.shape[0], 1), bound, dtype=np.int64)], axis=1)
    empty = (starts > ends) | (starts > bound)
    rows = np.arange(thresholds.shape[0], dtype=np.int64)[:, None]
    first = reached_counts(thresholds, rows, np.minimum(starts, bound))
    last = reached_counts(thresholds, rows, np.minimum(ends, bound))
    big = thresholds.shape[1] + 1
    return np.where(empty, big, first).min(axis=0), np.where(empty, -1, last).max(axis=0)


def bracket_table(least, greatest, code_min):
    """The cells' entries (int16), or None when a cell spans more than two codes: the code's
    byte (0..255) where every row has one code there (an empty cell copies its left
    neighbour), else greatest - BRACKETED (< 0: T'[r][greatest] decides; least and greatest
    are offsets from code_min)."""
    reached = least <= greatest
    if np.any(greatest[reached] - least[reached] > 1):
        return None
    two = reached & (greatest > least)
    table = np.where(two, greatest - BRACKETED, (code_min + np.where(reached, least, 0)) & 0xFF)
    filled = np.maximum.accumulate(np.where(reached, np.arange(table.size), 0))
    return table[filled].astype(np.int16)


def bracketed_share(table, lo, h, breakpoints) -> float:
    """The share of encoded values that take the compare, were they spread evenly over the
    codes (what a grid fitted to its data is for): a two-code cell [k h, (k + 1) h) takes of
    each code's interval the part it covers. `breakpoints`: the codes' boundaries in y (the
    rows' median, within the changing span); the end codes' intervals count as long as their
    neighbours'."""
    edges = np.concatenate([[2 * breakpoints[0] - breakpoints[1]] if breakpoints.size > 1 else
                            [breakpoints[0] - h], breakpoints,
                            [2 * breakpoints[-1] - breakpoints[-2]] if breakpoints.size > 1 else
                            [breakpoints[-1] + h]])
    lengths = np.maximum(np.diff(edges), 1e-300)
    cells = lo + np.flatnonzero(table < 0)
    left, right = cells[:, None] * h, (cells[:, None] + 1) * h
    covered = np.clip(np.minimum(right, edges[None, 1:]) - np.maximum(left, edges[None, :-1]), 0, None)
    return float(min(1.0, (covered / lengths[None, :]).sum() / lengths.size))


class Bracket(Encoder):
    name = "bracket"
    realizes = "it needs a non-decreasing function"
    unbuilt = (f"no bracket table of at most {MAX_CELLS:,} cells keeps every cell within two codes "
               f"of this grid (its codes are too close somewhere); use --encoder threshold (exact) "
               f"or auto")

    def supports(self, activation) -> bool:
        return activation_is_monotone(activation)

    def build(self, request, beaten=None):
        """The smallest table (sizes growing by 2^(1/4)) whose cells each span two codes at
        most, then finer ones (fastest_table); None when the grid has a single code or
        MAX_CELLS do not suffice."""
        thresholds = request.thresholds().astype(np.int64)
        n, bound = thresholds.shape[1], request.bound
        inside = (thresholds > -bound) & (thresholds <= bound)
        if n < 1 or n >= BRACKETED or not inside.any() or request.encoding.code_min > 0 or \
                request.encoding.B > 255 or request.encoding.code_min < -128:
            return None
        y = thresholds * request.scale[:, None]
        span = y[inside].min(), y[inside].max()
        for step in range(int(np.log2(MIN_CELLS) * STEPS_PER_DOUBLING),
                          int(np.log2(MAX_CELLS) * STEPS_PER_DOUBLING) + 1):
            size = int(round(2 ** (step / STEPS_PER_DOUBLING)))
            first = self.table_of_size(request, thresholds, span, size)
            if first is not None:
                return self.parts(request, thresholds, *self.fastest_table(request, thresholds, span, size, first))
        return None

    @staticmethod
    def table_of_size(request, thresholds, span, size):
        """(table, pre, mult, shift, lo, hi, share of values compared) of `size` cells over the
        changing span, or None when a cell holds three codes."""
        bound, pre = request.bound, pre_shift(request.bound)
        h = max(span[1] - span[0], 1e-300) / (size - 3)
        # a cell of margin past the span on each side: the clamped end cells, which take every
        # accumulator beyond the span, then hold one code in every row (rows' cells differ by
        # their multipliers' rounding and the pre-shift)
        lo, hi = int(np.floor(span[0] / h)) - 2, int(np.ceil(span[1] / h)) + 2
        mult, shift = index_multipliers(request.scale * 2.0 ** pre / h)
        starts = cell_starts(pre, mult, shift, lo, hi, bound)
        table = bracket_table(*cell_codes(thresholds, starts, bound), request.encoding.code_min)
        if table is None:
            return None
        breakpoints = np.sort(np.median(thresholds * request.scale[:, None], axis=0))
        share = bracketed_share(table, lo, h, np.clip(breakpoints, *span))
        return table, pre, mult, shift, lo, hi, share

    @staticmethod
    def fastest_table(request, thresholds, span, size, first):
        """Among `first`, the tables of 2, 4, ... times its cells below FAST_CELLS and the one of
        FAST_CELLS, the one with the least bytes + elements x instructions per value."""
        def key(found):
            ops = OPS_ONE_CODE + OPS_BRACKETED * found[-1]
            return found[0].nbytes + request.elements * ops
        best = first
        sizes = [size << k for k in range(1, 16) if size << k < FAST_CELLS] + [FAST_CELLS] * (size < FAST_CELLS)
        for finer in sizes:
            found = Bracket.table_of_size(request, thresholds, span, finer)
            if found is not None and key(found) < key(best):
                best = found
        return best

    def parts(self, request, thresholds, table, pre, mult, shift, lo, hi, share):
        consts = {"enc_mult": mult.astype(np.int16)}
        shared_shift = int(shift[0]) if np.all(shift == shift[0]) else -1
        if shared_shift < 0:
            consts["enc_shift"] = shift.astype(np.uint8)
        consts["enc_table"] = table
        # the leading column: T'[r][0], which no code reads (hi > code_min); a copy of T[r][0]
        consts["enc_thresholds"] = np.concatenate([thresholds[:, :1], thresholds], axis=1).astype(np.int32)
        row_consts = [k for k in ("enc_mult", "enc_shift") if k in consts] + ["enc_thresholds"]
        params = dict(base_params(self.name, request, consts, row_consts),
                      enc_threshold_row=thresholds.shape[1] + 1, enc_pre=pre, enc_lo=lo, enc_hi=hi,
                      enc_n=hi - lo + 1, enc_shift_all=shared_shift, enc_bracketed=BRACKETED,
                      enc_out_signed=int(request.encoding.code_min < 0))
        return EncoderParts(consts, params, self.measure(request, params, consts),
                            ops_per_element=int(round(OPS_ONE_CODE + OPS_BRACKETED * share)),
                            extra_info={"encoder_entries": hi - lo + 1,
                                        "encoder_bracketed_share": round(share, 3)})

    def store_levels(self, consts, params, values):
        """One-code cells hold their level; the compare's code reads enc_out (the snippet
        writes the levels itself: no wrapper)."""
        table = consts["enc_table"].astype(np.int64)
        one = table >= 0
        code = (table + 128) % 256 - 128 if params["enc_out_signed"] else table
        level = values.astype(np.int64)[np.where(one, code - params["code_min"], 0)]
        consts["enc_table"] = np.where(one, level & 0xFF, table).astype(np.int16)
        consts["enc_out"] = values
        params["enc_consts"] = params["enc_consts"] + ["enc_out"]
        params["enc_out_signed"] = int(np.dtype(values.dtype).kind == "i")
        return False

    def run(self, params, consts, acc, rows):
        acc, rows = np.broadcast_arrays(np.asarray(acc, dtype=np.int64), np.asarray(rows, dtype=np.int64))
        shift = params["enc_shift_all"] if params["enc_shift_all"] >= 0 else \
            consts["enc_shift"].astype(np.int64)[rows]
        u = np.clip(cell_index(acc, params["enc_pre"], consts["enc_mult"].astype(np.int64)[rows], shift),
                    params["enc_lo"], params["enc_hi"])
        entry = consts["enc_table"].astype(np.int64)[u - params["enc_lo"]]
        two = entry < 0
        offset = np.where(two, entry + BRACKETED, 1)          # hi - code_min
        below = acc < consts["enc_thresholds"].astype(np.int64)[rows, offset]
        code = params["code_min"] + offset - below
        if "enc_out" in consts:
            code = consts["enc_out"].astype(np.int64)[code - params["code_min"]]
        # a one-code cell's byte, read back as the output type (the C's conversion)
        one = (entry + 128) % 256 - 128 if params["enc_out_signed"] else entry
        return np.where(two, code, one)

    def segments(self, request, params, consts):
        """The realized code only changes at a cell's start or at a threshold: evaluated at
        every one of them (and -bound) in each row."""
        thresholds = consts["enc_thresholds"].astype(np.int64)[:, 1:]
        rows, bound = thresholds.shape[0], request.bound
        mult = consts["enc_mult"].astype(np.int64)
        shift = consts["enc_shift"].astype(np.int64) if params["enc_shift_all"] < 0 else \
            np.full(rows, params["enc_shift_all"], dtype=np.int64)
        starts = cell_starts(params["enc_pre"], mult, shift, params["enc_lo"], params["enc_hi"], bound)
        points = np.concatenate([starts, np.clip(thresholds, -bound, bound + 1)], axis=1)
        row = np.broadcast_to(np.arange(rows, dtype=np.int64)[:, None], points.shape)
        keep = points <= bound
        row, point = row[keep], points[keep]
        order = np.lexsort((point, row))
        row, point = row[order], point[order]
        return Segments.flat(row, point, self.run(params, consts, point, row), rows)
