"""The requantization every indexed encoder (lut, pade) starts with: the int32 accumulator
to a small integer index, per row r
  u = clamp((acc * mult_r + 2^(shift_r - 1)) >> shift_r, lo, hi)
in int64 (|acc| < 2^31 and mult_r < 2^31, so the product and the rounding term stay below
2^63; >> is the arithmetic shift C compilers use, a floor). mult_r / 2^shift_r approximates
the row's accumulator unit over the index step."""
from __future__ import annotations

import numpy as np

from mcugen.lower.encoders.exact import Segments

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


def index_thresholds(mult, shift, targets, lo, hi, increasing=True):
    """(rows, T): what least_reaching(requantize(., mult_r, shift_r), targets, lo, hi,
    increasing) returns, in integer arithmetic instead of 32 bisection steps. The index
    floor((acc m + 2^(s-1)) / 2^s) reaches k iff acc m >= P = (2k - 1) 2^(s-1): from
    acc = ceil(P / m) on when m > 0. Falling (m < 0), it stays <= t iff acc m < P =
    (2t + 1) 2^(s-1): from acc = floor(P / m) + 1 on. With |acc| < 2^31 and |m| < 2^31,
    |acc m| < 2^62, so a target whose P passes 2^62 is met by every accumulator value or by
    none, and so is every target of m = 0 (the constant index 0, as s >= 1)."""
    mult = np.asarray(mult, dtype=np.int64).reshape(-1, 1)
    shift = np.asarray(shift, dtype=np.int64).reshape(-1, 1)
    assert np.all(mult >= 0) if increasing else np.all(mult <= 0), "the index must move one way"
    lo = np.asarray(lo, dtype=np.int64).reshape(-1, 1)
    hi = np.asarray(hi, dtype=np.int64).reshape(-1, 1)
    odd = 2 * np.asarray(targets, dtype=np.int64).reshape(1, -1) + (-1 if increasing else 1)
    fits = (np.abs(odd) < (np.int64(1) << (63 - shift))) & (mult != 0)   # |P| < 2^62
    product = np.where(fits, odd, 0) << (shift - 1)
    divisor = np.where(mult == 0, 1, mult)
    first = -(-product // divisor) if increasing else product // divisor + 1
    every = (odd < 0) if increasing else (odd > 0)
    return np.clip(np.where(fits, first, np.where(every, lo, hi + 1)), lo, hi + 1)


def index_segments(mult, shift, lo, hi, bound, value_of_index):
    """Segments of acc -> value_of_index(rows, u) over [-bound, bound] (rows and u flat, int64):
    the index is monotone in acc, so each index value's first accumulator is a threshold."""
    rows = mult.size
    first = index_thresholds(mult, shift, np.arange(lo + 1, hi + 1), np.full(rows, -bound),
                             np.full(rows, bound))
    starts = np.concatenate([np.full((rows, 1), -bound, dtype=np.int64), first], axis=1)
    inside = starts <= bound
    u = np.clip(requantize(starts, mult.reshape(-1, 1), shift.reshape(-1, 1)), lo, hi)
    row = np.broadcast_to(np.arange(rows, dtype=np.int64)[:, None], starts.shape)[inside]
    return Segments.flat(row, starts[inside], value_of_index(row, u[inside]), rows)


def high_word_params(shift, mult_bits):
    """The C's fast path: with the multiplier widened to 31 bits (W more bits, W more shift),
    floor((acc * m + 2^(s-1)) / 2^s) = (mulh(acc, m << W) + 2^(s+W-33)) >> (s+W-32) when
    33 <= s + W <= 63 (the rounding term a whole number of high words, the sum below 2^31)."""
    widen = 31 - mult_bits
    ok = bool(shift.min() + widen >= 33 and shift.max() + widen <= 63)
    return {"enc_high_word": int(ok), "enc_widen": widen, "enc_high_round": 33 - widen,
            "enc_high_post": 32 - widen, "enc_high_max": 63 - widen}
