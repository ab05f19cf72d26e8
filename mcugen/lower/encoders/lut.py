"""`lut` (any activation, within an error budget): the accumulator requantized to an index
(index.py), then one table of codes per layer (one per row when the activation itself is
per-channel, a PRelu):  code = T[clamp(u, lo, hi) - lo], index k standing for y = k * h.

The table spans the accumulator values where the float encoder changes at all, plus one
saturated cell on each side. T[k] is the float encoder at y = k * h, moved (only when it must)
to the middle of the codes the float encoder takes on the cell's accumulators over every row,
so that a cell that straddles two breakpoints is still within one code of all of them. The
table is the smallest whose exact code error, over every accumulator value of every row, is
within the budget (EncodeRequest.accepts)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcugen.lower.encoders.base import Encoder, EncoderParts, base_params
from mcugen.lower.encoders.exact import CodeError, tally
from mcugen.lower.encoders.index import (high_word_params, index_segments, index_thresholds, multipliers,
                                         requantize)
from mcugen.numerics import (activation_fn, activation_is_piecewise_linear,
                             activation_per_channel)

MIN_BITS, MAX_BITS = 4, 16
STEPS_PER_BIT = 4        # table sizes grow by 2^(1/4), then a bisection
SMALLEST_SIZE = 4        # a table spans its cells with size - 3 steps: fewer than 4 spans none
MULT_BITS = 15           # int16 multipliers: 2^-15 of an index step is far below the error the
                         # table size allows (measured exactly, like everything else)
ALIGNED_MULT_BITS = 31   # an aligned table is exact but for the multiplier: int32 there
SHARED_SHIFT_SPAN = 8    # one shift for every row when their scales span at most 2^8 (every
                         # multiplier keeps >= 7 significant bits; the error is measured anyway)
OPS_SHARED_SHIFT = 10    # RV32IMC per element: mulh, rounding add, shift, clamp, load, with one
OPS_ROW_SHIFT = 16       # shift (a literal) or a shift per row (bench/encoders.py section a: 15-16)
FEW_ROWS = 4             # auto searches a lut before pade on layers of at most this many
MANY_ELEMENTS = 1024     # rows, or of at least this many values encoded per inference


def changing_span(request):
    """(y_lo, y_hi): the real pre-activation values where the float encoder changes, over
    every row; None when it is constant on the whole range."""
    ref = request.reference()
    changing = np.flatnonzero(np.diff(ref.offsets) > 1)
    if not changing.size:
        return None
    firsts = ref.start[ref.offsets[changing] + 1] * request.scale[changing]
    lasts = ref.start[ref.offsets[changing + 1] - 1] * request.scale[changing]
    return firsts.min(), lasts.max()


def code_table(request, h, lo, hi):
    """T[k - lo] = float code at y = k * h; (rows, n) for a per-channel activation."""
    y = np.arange(lo, hi + 1, dtype=np.float64) * h
    per_row = activation_per_channel(request.activation) > 1
    sigma = activation_fn(request.activation, axis=0)
    values = sigma(np.repeat(y[None, :], request.rows, axis=0)) if per_row else sigma(y[None, :])[0]
    return request.encoding.encode(values).astype(request.encoding.ctype)


def row_multipliers(ratio, bits):
    """(mult, shift) per row, mult < 2^bits; one shift for all rows when their ratios allow it
    (a literal in the C, and one byte less per row)."""
    mult, shift = multipliers(ratio, bits)
    positive = ratio > 0
    if positive.any() and ratio[positive].max() <= ratio[positive].min() * 2.0 ** SHARED_SHIFT_SPAN:
        common = int(shift[positive].min())
        mult = np.clip(np.rint(ratio * 2.0 ** common), 0, (1 << bits) - 1).astype(np.int64)
        shift = np.full(ratio.shape, common, dtype=np.int64)
    return mult, shift


def row_shifts(params, consts):
    """Every row's shift, int64."""
    if params["enc_shift_all"] >= 0:
        return np.full(consts["enc_mult"].shape, params["enc_shift_all"], dtype=np.int64)
    return consts["enc_shift"].astype(np.int64)


@dataclass
class CellPieces:
    """exact.merge of the reference with the cells (index_segments with the cell k - lo as the
    code), without sorting, in two parts. The cells are a (rows, n) grid of accumulator
    intervals (a cell the index skips, or past the bound, is empty), so the union of both
    lists' starts is every cell's first accumulator, each with the reference code there, plus
    the reference breakpoints strictly inside a cell."""
    start: np.ndarray           # (rows, n) a cell's first accumulator
    length: np.ndarray          # (rows, n) up to the next cell or reference breakpoint (0: empty)
    code: np.ndarray            # (rows, n) the reference code there
    row: np.ndarray             # the pieces from a breakpoint inside a cell: flat
    cell: np.ndarray
    inner_start: np.ndarray
    inner_length: np.ndarray
    inner_code: np.ndarray


def cell_pieces(reference, mult, shift, lo, hi, bound) -> CellPieces:
    """The pieces of the cells k = lo..hi of rows with these multipliers and shifts, against
    the reference of the same rows; all rows at once, rows x cells work and no sort."""
    rows, n = mult.size, hi - lo + 1
    first = index_thresholds(mult, shift, np.arange(lo + 1, hi + 1), np.full(rows, -bound),
                             np.full(rows, bound))
    starts = np.concatenate([np.full((rows, 1), -bound, dtype=np.int64), first], axis=1)
    ends = np.concatenate([first, np.full((rows, 1), bound + 1, dtype=np.int64)], axis=1)
    stride = 2 * bound + 2                      # a key per (row, acc) for acc up to bound + 1
    cell_keys = (starts + (np.arange(rows, dtype=np.int64) * stride + bound)[:, None]).ravel()
    ref_keys = reference.row * stride + reference.start + bound
    same_row = np.append(reference.row[1:] == reference.row[:-1], False)
    ref_next = np.where(same_row, np.append(reference.start[1:], 0), bound + 1)
    # the reference segment each cell start falls in: the last one starting at or before it
    seg = np.zeros(rows * n + 1, dtype=np.int64)
    np.maximum.at(seg, np.searchsorted(cell_keys, ref_keys, side="left"), np.arange(ref_keys.size))
    seg = np.maximum.accumulate(seg)[:-1].reshape(rows, n)
    length = np.minimum(ends, ref_next[seg]) - starts
    # reference starts strictly inside a cell begin a piece of their own
    home = np.searchsorted(cell_keys, ref_keys, side="right") - 1
    inner = np.flatnonzero(cell_keys[home] != ref_keys)
    home = home[inner]
    inner_length = np.minimum(ref_next[inner], ends.ravel()[home]) - reference.start[inner]
    return CellPieces(starts, length, reference.code[seg], reference.row[inner], home % n,
                      reference.start[inner], inner_length, reference.code[inner])


def code_spans(pieces, per_row):
    """(mins, maxs) of the float codes that fall in each cell (per row and cell when the table
    is per row); cells no accumulator reaches keep min > max."""
    big, small = np.iinfo(np.int64).max, np.iinfo(np.int64).min
    mins = np.where(pieces.length > 0, pieces.code, big)
    maxs = np.where(pieces.length > 0, pieces.code, small)
    if not per_row:
        mins, maxs = mins.min(axis=0), maxs.max(axis=0)
    where = (pieces.row, pieces.cell) if per_row else (pieces.cell,)
    np.minimum.at(mins, where, pieces.inner_code)
    np.maximum.at(maxs, where, pieces.inner_code)
    return mins, maxs


def cells_error(reference, pieces, table, per_row) -> CodeError:
    """The exact code error of a table (int64, (n,) or (rows, n)) on the cells."""
    rows = np.arange(pieces.start.shape[0])[:, None]
    inner = table[pieces.row, pieces.cell] if per_row else table[pieces.cell]
    return (tally(reference, rows, pieces.start, pieces.length, np.abs(table - pieces.code)) +
            tally(reference, pieces.row, pieces.inner_start, pieces.inner_length,
                  np.abs(inner - pieces.inner_code))).code_error()


def balanced_table(table, mins, maxs):
    """The table with each cell's value clipped into [max - e, min + e], e = ceil((max - min)/2),
    min/max the float codes of every accumulator value (every row) that falls in the cell: the
    least worst error a single value per cell allows, exactly."""
    reached = mins <= maxs
    half = (maxs - mins + 1) // 2
    return np.where(reached, np.clip(table, maxs - half, mins + half), table)


def least_worst(mins, maxs):
    """The worst code error of the balanced table: max over cells of ceil((max - min) / 2)."""
    reached = mins <= maxs
    return int(((maxs - mins + 1) // 2)[reached].max(initial=0))


def screened_out(request, mult, shift, lo, hi, per_row):
    """Whether a few rows alone show a worst error over budget for the cells k = lo..hi: the
    balanced table's worst error is the least a value per cell allows (least_worst), and it
    only grows with more rows, so the candidate is refused without measuring every row."""
    probe, reference = request.probe()
    pieces = cell_pieces(reference, mult[probe], shift[probe], lo, hi, request.bound)
    return least_worst(*code_spans(pieces, per_row)) > request.max_code_error


class Lut(Encoder):
    name = "lut"

    def search_cost(self, request):
        """About 30 table sizes, costing rows x cells each. Searched before pade on a layer of
        a few rows (cheap), or one that encodes many values (pade's 20-odd more instructions
        per value then outweigh any table that size: its result stops pade's search, and the
        fit pade needs, at once); after it elsewhere, where the lut may need up to 2^16 cells
        per row to meet the budget and pade's result stops that search early."""
        return 0.5 if request.rows <= FEW_ROWS or request.elements >= MANY_ELEMENTS else 2.0

    def build(self, request, beaten=None):
        """The smallest table within budget: sizes grow by 2^(1/4) until one is accepted, then
        a bisection between it and the last size refused (the error is not strictly monotone
        in the size, so this is the smallest accepted size the search meets, not a proof).
        Candidates are screened on a few rows first (build_cells): most sizes the search
        refuses are refused there, at a few rows' cost instead of every row's. With `beaten`
        (auto), the search stops once every table it can still end with loses auto's choice."""
        span = changing_span(request)
        aligned = self.build_aligned(request, span)
        if aligned is not None:
            return aligned

        def hopeless(refused):          # the search ends above `refused`
            return beaten is not None and span is not None and \
                beaten(self.least_bytes(request, refused + 1), OPS_SHARED_SHIFT)
        refused = SMALLEST_SIZE - 1       # the bisection below never goes under it
        for step in range(MIN_BITS * STEPS_PER_BIT, MAX_BITS * STEPS_PER_BIT + 1):
            size = int(round(2 ** (step / STEPS_PER_BIT)))
            if hopeless(refused):
                return None
            parts = self.build_size(request, span, size, screen=True)
            if parts is not None and request.accepts(parts.error):
                break
            refused = size
        else:
            return None
        while size - refused > 1:
            middle = (size + refused) // 2
            if hopeless(refused):
                return None
            candidate = self.build_size(request, span, middle, screen=True)
            if candidate is not None and request.accepts(candidate.error):
                size, parts = middle, candidate
            else:
                refused = middle
        return parts

    @staticmethod
    def least_bytes(request, size):
        """A lower bound of the table bytes of build_size(..., s) for every s >= size: its cells
        number hi - lo + 1 >= s (less 1 for float rounding), its multipliers are int16."""
        per_row = activation_per_channel(request.activation) > 1
        entries = max(size - 1, 0) * (request.rows if per_row else 1)
        return entries * np.dtype(request.encoding.ctype).itemsize + 2 * request.rows

    def build_aligned(self, request, span):
        """On a uniform grid (a = 1) a piecewise-linear activation's codes change at y = (k + 1/2)
        R/B: cells of width h = R/B centred on the codes' values have their edges on the
        breakpoints, so the table is exact but for the multiplier's rounding (the int8
        requantization of the uniform baseline). Taken when accepted and not over MAX_BITS."""
        enc = request.encoding
        if span is None or enc.scheme != "power" or enc.exponent != 1.0 or \
                not activation_is_piecewise_linear(request.activation):
            return None
        h = enc.range / enc.B
        if (span[1] - span[0]) / h + 3 > 2 ** MAX_BITS:
            return None
        parts = self.build_cells(request, h, int(np.floor(span[0] / h)) - 1,
                                 int(np.ceil(span[1] / h)) + 1, ALIGNED_MULT_BITS)
        return parts if request.accepts(parts.error) else None

    def build_size(self, request, span, size, screen=False):
        if span is None:                              # constant: one cell
            return self.build_cells(request, 1.0, 0, 0, screen=screen)
        y_lo, y_hi = span
        h = max(y_hi - y_lo, 1e-300) / (size - 3)
        return self.build_cells(request, h, int(np.floor(y_lo / h)) - 1, int(np.ceil(y_hi / h)) + 1,
                                screen=screen)

    def build_cells(self, request, h, lo, hi, mult_bits=MULT_BITS, screen=False):
        """The table of cells k = lo..hi, cell k standing for y = k * h. With `screen`, None
        when a few rows alone already show a worst error over budget."""
        mult, shift = row_multipliers(request.scale / h, mult_bits)
        per_row = activation_per_channel(request.activation) > 1
        if screen and request.rows > 4 and screened_out(request, mult, shift, lo, hi, per_row):
            return None
        table = code_table(request, h, lo, hi)
        consts = {"enc_mult": mult.astype(np.int16 if mult_bits <= 15 else np.int32)}
        shared_shift = int(shift[0]) if np.all(shift == shift[0]) else -1
        if shared_shift < 0:
            consts["enc_shift"] = shift.astype(np.uint8)
        consts["enc_table"] = table
        row_consts = [k for k in ("enc_mult", "enc_shift") if k in consts] + (
            ["enc_table"] if per_row else [])
        params = dict(base_params(self.name, request, consts, row_consts),
                      enc_lo=lo, enc_hi=hi, enc_n=hi - lo + 1, enc_per_row=int(per_row),
                      enc_shift_all=shared_shift, **high_word_params(shift, mult_bits))
        # the table and its exact error over every row, on one merge of the reference and cells
        reference = request.reference()
        pieces = cell_pieces(reference, mult, shift, lo, hi, request.bound)
        mins, maxs = code_spans(pieces, per_row)
        consts["enc_table"] = balanced_table(table.astype(np.int64), mins, maxs).astype(table.dtype)
        error = cells_error(reference, pieces, consts["enc_table"].astype(np.int64), per_row)
        ops = OPS_SHARED_SHIFT if shared_shift >= 0 else OPS_ROW_SHIFT
        return EncoderParts(consts, params, error, ops, {"encoder_entries": hi - lo + 1})

    def store_levels(self, consts, params, values):
        """The table holds the levels itself."""
        consts["enc_table"] = values[consts["enc_table"].astype(np.int64) - params["code_min"]]
        return False

    def run(self, params, consts, acc, rows):
        acc, rows = np.broadcast_arrays(np.asarray(acc, dtype=np.int64), np.asarray(rows, dtype=np.int64))
        u = np.clip(requantize(acc, consts["enc_mult"].astype(np.int64)[rows], row_shifts(params, consts)[rows]),
                    params["enc_lo"], params["enc_hi"]) - params["enc_lo"]
        table = consts["enc_table"].astype(np.int64)
        return table[rows, u] if params["enc_per_row"] else table[u]

    def segments(self, request, params, consts):
        table = consts["enc_table"].astype(np.int64)
        lo = params["enc_lo"]

        def value(rows, u):
            return table[rows, u - lo] if params["enc_per_row"] else table[u - lo]
        return index_segments(consts["enc_mult"].astype(np.int64), row_shifts(params, consts),
                              lo, params["enc_hi"], request.bound, value)
