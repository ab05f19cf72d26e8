"""`lut` (any activation, within an error budget): the accumulator requantized to an index
(index.py), then one table of codes per layer (one per row when the activation itself is
per-channel, a PRelu):  code = T[clamp(u, lo, hi) - lo], index k standing for y = k * h.

The table spans the accumulator values where the float encoder changes at all, plus one
saturated cell on each side; T[k] is the float encoder at y = k * h. The index width L is the
smallest (from MIN_BITS) whose exact worst code error, over every accumulator value of every
row, is within the budget."""
from __future__ import annotations

import numpy as np

from mcugen.lower.encoders.base import Encoder, EncoderParts, base_params
from mcugen.lower.encoders.index import index_segments, multipliers, requantize
from mcugen.ops._common import activation_fn, activation_per_channel
from mcugen.quant.power import Encoding

MIN_BITS, MAX_BITS = 4, 16
OPS = 22                 # RV32: 64-bit multiply-add, shift, clamp, load (measured in bench/encoders.py)


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


class Lut(Encoder):
    name = "lut"

    def build(self, request):
        span = changing_span(request)
        for bits in range(MIN_BITS, MAX_BITS + 1):
            parts = self.build_bits(request, span, bits)
            if parts.error.worst <= request.max_code_error:
                return parts
        return None

    def build_bits(self, request, span, bits):
        if span is None:                              # constant: one cell
            h, lo, hi = 1.0, 0, 0
        else:
            y_lo, y_hi = span
            h = max(y_hi - y_lo, 1e-300) / ((1 << bits) - 3)
            lo, hi = int(np.floor(y_lo / h)) - 1, int(np.ceil(y_hi / h)) + 1
        mult, shift = multipliers(request.scale / h)
        table = code_table(request, h, lo, hi)
        consts = {"enc_mult": mult.astype(np.int32), "enc_shift": shift.astype(np.uint8),
                  "enc_table": table}
        row_consts = ["enc_mult", "enc_shift"] + (["enc_table"] if table.ndim == 2 else [])
        params = dict(base_params(self.name, request, consts, row_consts),
                      enc_lo=lo, enc_hi=hi, enc_n=hi - lo + 1, enc_per_row=int(table.ndim == 2))
        error = self.measure(request, params, consts)
        return EncoderParts(consts, params, error, OPS, {"encoder_bits": bits})

    def run(self, params, consts, acc, rows):
        acc, rows = np.broadcast_arrays(np.asarray(acc, dtype=np.int64), np.asarray(rows, dtype=np.int64))
        u = np.clip(requantize(acc, consts["enc_mult"].astype(np.int64)[rows],
                               consts["enc_shift"].astype(np.int64)[rows]),
                    params["enc_lo"], params["enc_hi"]) - params["enc_lo"]
        table = consts["enc_table"].astype(np.int64)
        return table[rows, u] if params["enc_per_row"] else table[u]

    def segments(self, request, params, consts):
        table = consts["enc_table"].astype(np.int64)
        lo = params["enc_lo"]

        def value(row, u):
            return table[row, u - lo] if params["enc_per_row"] else table[u - lo]
        return index_segments(consts["enc_mult"].astype(np.int64), consts["enc_shift"].astype(np.int64),
                              lo, params["enc_hi"], request.bound, value)
