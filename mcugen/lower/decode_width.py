"""How wide a MAC layer's decoded operands are (`--decode-bits auto|8|16`).

A SIMD core multiplies 4 x 8-bit or 2 x 16-bit lanes per instruction, so the width of the
decode tables (Dw, Dx: DESIGN section 2) decides how fast a layer runs. 8-bit tables hold
fewer fractional bits: exact for uniform codes (the table is the identity), a small rounding
of the levels for 4-bit power codes, and a coarse one for 8-bit power codes.

- `wide` (what `auto` means on a board without SIMD): int16 tables, and a layer whose input
  table is the identity (8-bit uniform network input, Fx = 0) may widen its weight table to
  int32: that table is then the layer's only precision, int16 would cap Fw while the
  accumulator has bits to spare, and the first layer's rounding errors are the ones every later
  layer amplifies.
- `16`: both tables fit int16.
- `8`: the weight table fits int8 and the input table int8 (signed inputs) or uint8.
- `auto` on a SIMD board (or a FPGA's `narrow_decode` one): 8 where the 8-bit weight table adds at most EIGHT_BIT_BUDGET to the
  layer's weight reconstruction error and the 8-bit input table keeps every code within half
  the gap to its neighbours (codes stay distinct and ordered); 16 otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcugen.errors import MCUGenError
from mcugen.lower.fixedpoint import (TABLE_LIMIT, WIDE_TABLE_LIMIT, decode_table,
                                     default_frac_bits, is_identity, stores_levels,
                                     table_scale)

DECODE_BITS_CHOICES = ("auto", "8", "16")
EIGHT_BIT_BUDGET = 0.05       # +5% relative weight reconstruction error at most, for auto's 8


@dataclass
class DecodeWidth:
    bits: int             # 8, 16, or 0 for `wide`
    w_limit: int          # largest |Dw| the weight table may hold
    x_limit: int          # largest |Dx| the input table may hold
    cost8: float          # what an 8-bit weight table adds to the reconstruction error (relative)


def check_decode_bits(value) -> str:
    value = str(value)
    if value not in DECODE_BITS_CHOICES:
        raise MCUGenError(f"--decode-bits must be one of {', '.join(DECODE_BITS_CHOICES)}, "
                          f"not '{value}'")
    return value


def eight_bit_limits(x_grid) -> tuple[int, int]:
    """(weight limit, input limit) of 8-bit lanes: int8 weights; int8 or uint8 inputs."""
    return 127, (127 if x_grid.signed else 255)


def weight_cost8(qw) -> float:
    """The relative increase of the layer's weight reconstruction error when its decode table
    has 8 bits: the table's rounding of the levels, against the quantization's own error
    (the two are independent, so their squares add)."""
    grid = qw.grid
    if is_identity(grid):
        return 0.0
    frac = default_frac_bits(grid, limit=eight_bit_limits(grid)[0])
    if frac < 0:
        return float("inf")
    table = decode_table(grid, frac) / table_scale(grid, frac)
    codes = qw.codes.reshape(qw.codes.shape[0], -1)
    scale = np.asarray(qw.scale, dtype=np.float64).reshape(-1, 1)
    w8 = table[codes + grid.B] * scale
    w_hat = qw.w_hat.reshape(w8.shape)
    norm = float(np.linalg.norm(w_hat))
    if norm == 0.0:
        return 0.0
    added = float(np.linalg.norm(w8 - w_hat)) / norm
    base = max(float(qw.recon_error), 1e-12)
    return float(np.sqrt(base ** 2 + added ** 2) / base - 1.0)


def inputs_fit_eight_bits(x_grid) -> bool:
    """An 8-bit input table keeps every code within half the gap to its neighbours."""
    if is_identity(x_grid):
        return True
    frac = default_frac_bits(x_grid, limit=eight_bit_limits(x_grid)[1])
    if frac < 0:
        return False
    levels = x_grid.levels
    table = decode_table(x_grid, frac)[x_grid.table_offset:] / table_scale(x_grid, frac)
    gaps = np.diff(levels)
    half_gap = np.minimum(np.append(gaps, np.inf), np.insert(gaps, 0, np.inf)) / 2
    return bool(np.all(np.abs(table - levels) < half_gap))


def decode_width(mode: str, qw, x_grid) -> DecodeWidth:
    """The table limits of one MAC layer under `mode` (wide | auto | 8 | 16)."""
    cost8 = weight_cost8(qw)
    if mode == "auto":
        mode = "8" if cost8 <= EIGHT_BIT_BUDGET and inputs_fit_eight_bits(x_grid) else "16"
    if mode == "8":
        w_limit, x_limit = eight_bit_limits(x_grid)
        if qw.grid.B > w_limit or x_grid.B > x_limit:
            raise MCUGenError(f"--decode-bits 8 needs codes of at most 8 bits; this layer has "
                              f"{qw.grid.bits}-bit weights and {x_grid.bits}-bit inputs: use 16")
        return DecodeWidth(8, w_limit, x_limit, cost8)
    if mode == "16":
        return DecodeWidth(16, TABLE_LIMIT, TABLE_LIMIT, cost8)
    # stored levels widen nothing: their values, hence the layer's, stay those of their codes
    w_limit = WIDE_TABLE_LIMIT if is_identity(x_grid) and not stores_levels(x_grid) else TABLE_LIMIT
    return DecodeWidth(0, w_limit, TABLE_LIMIT, cost8)
