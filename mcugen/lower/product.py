"""The product-table realization of a MAC layer whose weights and inputs are both on small grids.

Two decode tables (fixedpoint.py) round each operand on its own, and the int32 bound forces
their fractional bits down together: each product then carries the rounding error of both
operands times the other one, which on 4-bit grids is about 1e-4 of a term. The power grid is
an automorphism of products, so the products themselves can be tabulated instead:
  P[qw, qx] = round(2^F * sign(qw) * sign(qx) * level_w(|qw|) * level_x(|qx|))
  acc_c = beta_c + sum_k P[w_c,k, x_k]      (real value acc_c * M_c * R / 2^F)
with one rounding per product and F as large as the proven bound allows (about 2^-30 of a term
on resnet8). The kernel adds a table entry instead of multiplying: the weights are stored as the
flat index of their table row plus the input code offset, the input codes are read as they are,
so acc += P[w + x]. A (weight code, input code) table has (2 Bw + 1) x (Bx + 1) entries (signed
inputs: 2 Bx + 1): 240 int32 for 4-bit weights and 4-bit ReLU inputs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcugen.errors import MCUGenError
from mcugen.lower.fixedpoint import ACC_LIMIT, CONSTANT_BITS, is_identity, range_bound
from mcugen.numerics import round_half_away

PRODUCT_TABLE_MAX = 256     # entries; 8-bit grids would need 64 K
FRAC_MAX = 30               # |P| <= 2^30: every entry is an int32


@dataclass
class MacProductTable:
    table: np.ndarray          # P flattened, row = weight code (-Bw..Bw), column = input code
    code_index: np.ndarray     # weight code (table order) -> the index stored for it
    w_index: np.ndarray        # (Co, K) stored weights: code_index of each weight code
    bias: np.ndarray           # beta_c
    acc_scale: np.ndarray      # real value of one accumulator unit, per channel
    acc_bound: int
    frac_bits: int


def product_table_fits(w_grid, x_grid) -> bool:
    """Both operands decode through a power (or log) table and the table stays small."""
    entries = len(w_grid.codes()) * len(x_grid.codes())
    return not is_identity(w_grid) and not is_identity(x_grid) and entries <= PRODUCT_TABLE_MAX


def _signed_levels(grid) -> np.ndarray:
    codes = grid.codes()
    return np.sign(codes) * grid.levels[np.abs(codes)]


def mac_product_table(layer, w_codes, w_grid, w_scale, bias, x_grid, x_range) -> MacProductTable:
    w_codes = w_codes.reshape(w_codes.shape[0], -1)
    exact = np.outer(_signed_levels(w_grid), _signed_levels(x_grid))
    n_x = exact.shape[1]
    code_index = np.arange(exact.shape[0]) * n_x + x_grid.table_offset
    rows = w_codes + w_grid.B                        # each weight's row of P
    # a channel with no weight is its bias: its unit is free, so the bias keeps 24 bits
    bias_only = ~np.any(w_codes != 0, axis=1) & (bias != 0)
    # the bound is about linear in 2^F: start one above the unrounded estimate, then lower
    spans = np.abs(exact).max(axis=1)[rows].sum(axis=1).max()
    frac = min(FRAC_MAX, int(np.floor(np.log2(ACC_LIMIT / max(spans, 1e-30)))) + 1)
    while frac >= 0:
        table = round_half_away(np.ldexp(exact, frac)).astype(np.int64)
        unit = w_scale * x_range / 2.0 ** frac
        unit = np.where(bias_only, np.abs(bias) / (1 << CONSTANT_BITS), unit)
        beta = round_half_away(bias / unit)
        worst = range_bound(table.min(axis=1)[rows].sum(axis=1),
                            table.max(axis=1)[rows].sum(axis=1), beta)
        if worst <= ACC_LIMIT:
            return MacProductTable(table.reshape(-1), code_index, code_index[rows],
                                   beta.astype(np.int64), unit, int(worst), frac)
        frac -= 1
    raise MCUGenError(f"layer '{layer}': its accumulator can reach {worst:.3g}, beyond int32 even "
                      f"without fractional bits (bias too large for its weights?)")
