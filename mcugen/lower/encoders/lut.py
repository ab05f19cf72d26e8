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

import numpy as np

from mcugen.lower.encoders.base import Encoder, EncoderParts, base_params
from mcugen.lower.encoders.index import high_word_params, index_segments, multipliers, requantize
from mcugen.numerics import (activation_fn, activation_is_piecewise_linear,
                             activation_per_channel)

MIN_BITS, MAX_BITS = 4, 16
STEPS_PER_BIT = 4        # table sizes grow by 2^(1/4), then a bisection
MULT_BITS = 15           # int16 multipliers: 2^-15 of an index step is far below the error the
                         # table size allows (measured exactly, like everything else)
ALIGNED_MULT_BITS = 31   # an aligned table is exact but for the multiplier: int32 there
SHARED_SHIFT_SPAN = 8    # one shift for every row when their scales span at most 2^8 (every
                         # multiplier keeps >= 7 significant bits; the error is measured anyway)
OPS_SHARED_SHIFT = 10    # RV32IMC per element: mulh, rounding add, shift, clamp, load, with one
OPS_ROW_SHIFT = 16       # shift (a literal) or a shift per row (bench/encoders.py section a: 15-16)


def changing_span(request):
    """(y_lo, y_hi): the real pre-activation values where the float encoder changes, over
    every row; None when it is constant on the whole range."""
    ref = request.reference()
    firsts = [s[1] * request.scale[r] for r, s in enumerate(ref.starts) if s.size > 1]
    lasts = [s[-1] * request.scale[r] for r, s in enumerate(ref.starts) if s.size > 1]
    if not firsts:
        return None
    return min(firsts), max(lasts)


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


def balanced_table(request, params, consts):
    """The table with each cell's value clipped into [max - e, min + e], e = ceil((max - min)/2),
    min/max the float codes of every accumulator value (every row) that falls in the cell: the
    least worst error a single value per cell allows, exactly."""
    lo, table = params["enc_lo"], consts["enc_table"].astype(np.int64)
    cells = index_segments(consts["enc_mult"].astype(np.int64), row_shifts(params, consts),
                           lo, params["enc_hi"], request.bound, lambda row, u: u - lo)
    reference = request.reference()
    shape = table.shape
    mins, maxs = np.full(shape, np.iinfo(np.int64).max), np.full(shape, np.iinfo(np.int64).min)
    for r in range(request.rows):
        starts = np.union1d(reference.starts[r], cells.starts[r])
        cell, code = cells.at(r, starts), reference.at(r, starts)
        where = (r, cell) if params["enc_per_row"] else (cell,)
        np.minimum.at(mins, where, code)
        np.maximum.at(maxs, where, code)
    reached = mins <= maxs
    half = (maxs - mins + 1) // 2
    return np.where(reached, np.clip(table, maxs - half, mins + half), table)


class Lut(Encoder):
    name = "lut"

    def build(self, request):
        """The smallest table within budget: sizes grow by 2^(1/4) until one is accepted, then
        a bisection between it and the last size refused (the error is not strictly monotone
        in the size, so this is the smallest accepted size the search meets, not a proof)."""
        span = changing_span(request)
        aligned = self.build_aligned(request, span)
        if aligned is not None:
            return aligned
        refused = 0
        for step in range(MIN_BITS * STEPS_PER_BIT, MAX_BITS * STEPS_PER_BIT + 1):
            size = int(round(2 ** (step / STEPS_PER_BIT)))
            parts = self.build_size(request, span, size)
            if request.accepts(parts.error):
                break
            refused = size
        else:
            return None
        while size - refused > 1:
            middle = (size + refused) // 2
            candidate = self.build_size(request, span, middle)
            if request.accepts(candidate.error):
                size, parts = middle, candidate
            else:
                refused = middle
        return parts

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

    def build_size(self, request, span, size):
        if span is None:                              # constant: one cell
            return self.build_cells(request, 1.0, 0, 0)
        y_lo, y_hi = span
        h = max(y_hi - y_lo, 1e-300) / (size - 3)
        return self.build_cells(request, h, int(np.floor(y_lo / h)) - 1, int(np.ceil(y_hi / h)) + 1)

    def build_cells(self, request, h, lo, hi, mult_bits=MULT_BITS):
        """The table of cells k = lo..hi, cell k standing for y = k * h."""
        mult, shift = row_multipliers(request.scale / h, mult_bits)
        table = code_table(request, h, lo, hi)
        consts = {"enc_mult": mult.astype(np.int16 if mult_bits <= 15 else np.int32)}
        shared_shift = int(shift[0]) if np.all(shift == shift[0]) else -1
        if shared_shift < 0:
            consts["enc_shift"] = shift.astype(np.uint8)
        consts["enc_table"] = table
        row_consts = [k for k in ("enc_mult", "enc_shift") if k in consts] + (
            ["enc_table"] if table.ndim == 2 else [])
        params = dict(base_params(self.name, request, consts, row_consts),
                      enc_lo=lo, enc_hi=hi, enc_n=hi - lo + 1, enc_per_row=int(table.ndim == 2),
                      enc_shift_all=shared_shift, **high_word_params(shift, mult_bits))
        consts["enc_table"] = balanced_table(request, params, consts).astype(table.dtype)
        error = self.measure(request, params, consts)
        ops = OPS_SHARED_SHIFT if shared_shift >= 0 else OPS_ROW_SHIFT
        return EncoderParts(consts, params, error, ops, {"encoder_entries": hi - lo + 1})

    def run(self, params, consts, acc, rows):
        acc, rows = np.broadcast_arrays(np.asarray(acc, dtype=np.int64), np.asarray(rows, dtype=np.int64))
        u = np.clip(requantize(acc, consts["enc_mult"].astype(np.int64)[rows], row_shifts(params, consts)[rows]),
                    params["enc_lo"], params["enc_hi"]) - params["enc_lo"]
        table = consts["enc_table"].astype(np.int64)
        return table[rows, u] if params["enc_per_row"] else table[u]

    def segments(self, request, params, consts):
        table = consts["enc_table"].astype(np.int64)
        lo = params["enc_lo"]

        def value(row, u):
            return table[row, u - lo] if params["enc_per_row"] else table[u - lo]
        return index_segments(consts["enc_mult"].astype(np.int64), row_shifts(params, consts),
                              lo, params["enc_hi"], request.bound, value)
