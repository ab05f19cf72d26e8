"""The requantization every indexed encoder (lut, pade) starts with: the int32 accumulator
to a small integer index, per row r
  u = clamp((acc * mult_r + 2^(shift_r - 1)) >> shift_r, lo, hi)
in int64 (|acc| < 2^31 and mult_r < 2^31, so the product and the rounding term stay below
2^63; >> is the arithmetic shift C compilers use, a floor). mult_r / 2^shift_r approximates
the row's accumulator unit over the index step."""
from __future__ import annotations

import numpy as np

from mcugen.lower.encoders.exact import Segments, least_reaching

MULT_BITS = 31          # mult_r in [2^30, 2^31): 31 significant bits, an int32
MAX_SHIFT = 62


def multipliers(ratio, bits=MULT_BITS):
    """(mult, shift) per row with mult / 2^shift ~ ratio (ratio >= 0), mult < 2^bits."""
    ratio = np.asarray(ratio, dtype=np.float64)
    shift = np.full(ratio.shape, MAX_SHIFT, dtype=np.int64)
    positive = ratio > 0
    exp = np.floor(np.log2(np.where(positive, ratio, 1.0))).astype(np.int64)
    shift[positive] = np.clip(bits - 1 - exp[positive], 1, MAX_SHIFT)
    mult = np.rint(ratio * np.exp2(shift.astype(np.float64)))
    mult = np.clip(mult, 0, (1 << bits) - 1).astype(np.int64)
    return mult, shift


def requantize(acc, mult, shift):
    """The unclamped index, exactly as the C computes it."""
    acc = np.asarray(acc, dtype=np.int64)
    mult = np.asarray(mult, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    return (acc * mult + (np.int64(1) << (shift - 1))) >> shift


def index_segments(mult, shift, lo, hi, bound, value_of_index):
    """Segments of acc -> value_of_index(row, u) over [-bound, bound]: the index is monotone
    in acc, so each index value's first accumulator comes from bisection."""
    rows = mult.size
    low = np.full(rows, -bound, dtype=np.int64)
    high = np.full(rows, bound, dtype=np.int64)

    def index(acc):
        return requantize(acc, mult[:, None], shift[:, None])
    first = least_reaching(index, np.arange(lo + 1, hi + 1), low, high)
    starts, codes = [], []
    for r in range(rows):
        s = np.concatenate([[-bound], first[r][first[r] <= bound]])
        u = np.clip(requantize(s, mult[r], shift[r]), lo, hi)
        starts.append(s)
        codes.append(value_of_index(r, u))
    return Segments(starts, codes)


def high_word_params(shift, mult_bits):
    """The C's fast path: with the multiplier widened to 31 bits (W more bits, W more shift),
    floor((acc * m + 2^(s-1)) / 2^s) = (mulh(acc, m << W) + 2^(s+W-33)) >> (s+W-32) when
    33 <= s + W <= 63 (the rounding term a whole number of high words, the sum below 2^31)."""
    widen = 31 - mult_bits
    ok = bool(shift.min() + widen >= 33 and shift.max() + widen <= 63)
    return {"enc_high_word": int(ok), "enc_widen": widen, "enc_high_round": 33 - widen,
            "enc_high_post": 32 - widen, "enc_high_max": 63 - widen}
