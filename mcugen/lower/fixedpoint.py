"""Decode tables, fractional bits and the proven accumulator bound (DESIGN section 2).

A decode table turns a code into a fixed-point integer: D[q] = sign(q) * round(S * level(|q|))
with S = B * 2^F. With the uniform grid and F = 0 it is the identity, so uniform inference is
the same code with the tables elided. A MAC layer's accumulator
acc_c = beta_c + sum_k Dw[c,k] * Dx[x_k] stands for the real value acc_c * M_c * R / (Sw * Sx).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcugen.errors import MCUGenError
from mcugen.numerics import round_half_away

TABLE_LIMIT = (1 << 15) - 1      # decoded values stay within int16 ...
WIDE_TABLE_LIMIT = (1 << 31) - 1  # ... or int32, for a weight table that is the only precision
ACC_LIMIT = (1 << 31) - 2        # ... and |acc| <= 2^31 - 2, so a threshold of 2^31 - 1 is never met
CONSTANT_BITS = 24               # a weightless channel's bias is +-2^24 units of its own scale


def is_identity(grid) -> bool:
    return grid.scheme != "log2" and grid.exponent == 1.0


def stores_levels(grid) -> bool:
    """A levels encoding (quant/power.py LevelsEncoding): identity decode, but its values are a
    power grid's levels, whose fractional bits follow that grid's (DESIGN section 1)."""
    return getattr(grid, "source", None) is not None


def table_scale(grid, frac_bits: int) -> int:
    return grid.B << frac_bits


def decode_table(grid, frac_bits: int) -> np.ndarray:
    """Fixed-point values of every code, in table order (-B..B signed, 0..B unsigned)."""
    codes = grid.codes()
    mags = round_half_away(table_scale(grid, frac_bits) * grid.levels[np.abs(codes)])
    return (np.sign(codes) * mags).astype(np.int64)


def code_grid(grid):
    """The grid of the codes an encoder chooses among: a levels encoding's source."""
    return grid.source if stores_levels(grid) else grid


def stored_codes(grid, stored):
    """The codes of stored integers: those whose levels a levels encoding holds (its written
    values are sorted), the integers themselves otherwise. For errors counted in codes."""
    if not stores_levels(grid):
        return stored
    return np.searchsorted(grid.written(), stored) + grid.source.code_min


def stored_values(grid, codes):
    """What a tensor on `grid` stores for `codes` of its codes' grid (stored_codes' inverse)."""
    if not stores_levels(grid):
        return codes
    return grid.written()[np.asarray(codes) - grid.source.code_min]


def levels_shift(grid) -> int:
    """log2(S / B) of a levels encoding (0 otherwise): its table at F fractional bits is its
    codes' table at F + levels_shift, so a MAC layer lowers the same bits first either way."""
    if not stores_levels(grid):
        return 0
    return int(grid.B // grid.source.B).bit_length() - 1


def default_frac_bits(grid, fine=False, limit=TABLE_LIMIT) -> int:
    """As many fractional bits as int16 tables (or `limit`) allow; none for the identity
    (uniform) grid unless `fine` asks for them too."""
    if is_identity(grid) and not fine and not stores_levels(grid):
        return 0
    return int(np.floor(np.log2(limit / grid.B)))


def smallest_int_dtype(values: np.ndarray, signed_only=True) -> str:
    lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
    for name, (tmin, tmax) in (("int8", (-128, 127)), ("int16", (-32768, 32767))):
        if tmin <= lo and hi <= tmax:
            return name
    return "int32"


@dataclass
class MacFixedPoint:
    weights: np.ndarray       # decoded weights Dw, (Co, K)
    x_table: np.ndarray       # Dx in table order
    bias: np.ndarray          # beta_c, int
    acc_scale: np.ndarray     # real value of one accumulator unit, per channel (float64)
    acc_bound: int            # proven max |acc|
    w_frac_bits: int
    x_frac_bits: int


def range_bound(lo, hi, beta) -> float:
    """max |acc| for acc_c = beta_c + a sum of terms that ranges over [lo_c, hi_c], where every
    term's own range includes 0: then any partial sum, with or without beta (whichever order a
    kernel adds it in), stays inside too."""
    if np.size(lo) == 0:
        return 0.0
    return float(np.max([np.abs(beta + hi), np.abs(beta + lo), hi, -lo]))


def accumulator_bound(dw, dx, beta) -> float:
    """The largest |acc| any input codes can produce: each term Dw[c,k] * Dx[x_k] ranges over
    Dw[c,k] * [min Dx, max Dx]. An unsigned input (Dx >= 0) makes a weight's term one-signed,
    which is about half of |beta| + max|Dx| * sum|Dw|."""
    ends = (dw * float(dx.min()), dw * float(dx.max()))
    return range_bound(np.minimum(*ends).sum(axis=1), np.maximum(*ends).sum(axis=1), beta)


def mac_fixed_point(layer, w_codes, w_grid, w_scale, bias, x_grid, x_range,
                    fine_bias=False, w_limit=TABLE_LIMIT, x_limit=TABLE_LIMIT) -> MacFixedPoint:
    """Pick Fw/Fx as large as the tables' limits allow (|Dw| <= w_limit, |Dx| <= x_limit: see
    lower/decode_width.py), then lower them until |acc| provably fits.
    `fine_bias` (the last layer, whose accumulators are the output): uniform weights get
    fractional bits too, so the bias is not rounded to a whole unit of the integer products."""
    fw = default_frac_bits(w_grid, fine=fine_bias, limit=w_limit)
    fx = default_frac_bits(x_grid, limit=x_limit)
    w_codes = w_codes.reshape(w_codes.shape[0], -1)
    # a channel with no weight is its bias: its unit is free, so the bias keeps 24 bits
    bias_only = ~np.any(w_codes != 0, axis=1) & (bias != 0)
    while True:
        w_table = decode_table(w_grid, fw)
        dw = w_table[w_codes + w_grid.B]
        dx = decode_table(x_grid, fx)
        unit = w_scale * x_range / (table_scale(w_grid, fw) * table_scale(x_grid, fx))
        unit = np.where(bias_only, np.abs(bias) / (1 << CONSTANT_BITS), unit)
        beta = round_half_away(bias / unit)
        worst = accumulator_bound(dw, dx, beta)
        if worst <= ACC_LIMIT:
            return MacFixedPoint(dw.astype(np.int64), dx, beta.astype(np.int64), unit,
                                 int(worst), fw, fx)
        if fw == 0 and fx == 0:
            raise MCUGenError(
                f"layer '{layer}': its accumulator can reach {worst:.3g}, beyond int32 even "
                f"without fractional bits (bias too large for its weights?); retrain or "
                f"re-export the layer with a smaller bias")
        if fw >= fx + levels_shift(x_grid) or fx == 0:
            fw -= 1
        else:
            fx -= 1


def common_point_table(grid, value_range: float, unit: float) -> np.ndarray:
    """Codes of one input -> integers in a shared unit (Add, Concat through a common point)."""
    values = grid.dequantize(grid.codes(), value_range)
    return round_half_away(values / unit).astype(np.int64)


def pack_codes(codes: np.ndarray, bits: int, offset: int) -> tuple[np.ndarray, int]:
    """(rows, K) signed codes -> bytes holding code + offset in `bits` bits each, LSB first;
    every row starts on a byte and one zero byte ends the array, so a reader may always load
    two bytes. Returns (packed uint8, bytes per row)."""
    rows, k = codes.shape
    row_bytes = (k * bits + 7) // 8
    values = (codes + offset).astype(np.uint64)
    bit = np.arange(k) * bits
    packed = np.zeros((rows, row_bytes + 1), dtype=np.uint64)
    for b in range(bits):                      # scatter one bit plane at a time
        pos = bit + b
        np.add.at(packed, (slice(None), pos // 8), ((values >> np.uint64(b)) & np.uint64(1)) << (pos % 8).astype(np.uint64))
    flat = packed[:, :row_bytes].astype(np.uint8).reshape(-1)
    return np.concatenate([flat, np.zeros(1, np.uint8)]), row_bytes


def unpack_codes(packed: np.ndarray, rows: int, k: int, bits: int, row_bytes: int) -> np.ndarray:
    """The inverse of pack_codes (without the offset): the values the C unpack loop reads."""
    bit = np.arange(k) * bits
    byte = (np.arange(rows)[:, None] * row_bytes + bit[None, :] // 8)
    pair = packed[byte].astype(np.int64) | (packed[byte + 1].astype(np.int64) << 8)
    return (pair >> (bit % 8)[None, :]) & ((1 << bits) - 1)
