"""`pade` (piecewise-linear activations through the origin, within an error budget): the
accumulator requantized to a signed index v ~ 2^F * y / R (index.py, a second multiplier for
the slope below zero), clamped, then code = sign(v) * P(|v|) with P(v) ~ round(B * (v/2^F)^a)
computed in integer arithmetic:

  z = clz(v), x = (v << z) >> (32 - FRAC)      x = m * 2^FRAC, m = v / 2^(32-z) in [1/2, 1)
  t = x - 3/4 * 2^FRAC                         the approximant's variable, |t| <= 2^(FRAC-2)
  N, D = Horner(num, t), Horner(den, t)        N / D ~ m^a, both Q_FRAC, both > 0
  code = (N * W[z - z0] + (D << (K-1))) / (D << K)  W[j] = B * 2^(a (1 - j)) * 2^K: the one
                                                division rounds B * 2^(e a) * m^a to a code
With a = 1 (the uniform grid) P(v) = (v * B + 2^(F-1)) >> F, exact rational rounding.

F (index bits) and the approximant's order are the smallest that meet the budget, measured
exactly over every accumulator value (docs/encoders.md, section pade, says how the
coefficients are fitted). Every intermediate's range is checked from the actual constants.
"""
from __future__ import annotations

import functools

import numpy as np
from scipy.interpolate import pade as pade_approximant
from scipy.optimize import minimize
from scipy.special import binom

from mcugen.errors import MCUGenError
from mcugen.lower.encoders.base import Encoder, EncoderParts, base_params
from mcugen.lower.encoders.exact import Segments, compare, least_reaching
from mcugen.lower.encoders.index import (MULT_BITS, high_word_params, index_thresholds, multipliers,
                                         requantize)
from mcugen.numerics import activation_is_piecewise_linear, round_half_away

FRAC = 15                    # fixed-point bits of the mantissa m and of N, D
CENTER = 0.75                # t = m - 3/4: |t| <= 1/4 keeps the Horner products small
ORDERS = ((1, 1), (2, 1))    # [p/q]; a minimax [2/1] is already below the Q15 arithmetic noise
F_MAX = 30                   # |v| <= 2^F must fit an int32 and leave clz a set bit
INT32, UINT32 = 1 << 31, 1 << 32
NARROW_K = 6                 # a uint16 power table is worth K >= 6 (at most 1/128 of a code)

# RV32IMC instructions per element on the full path (an index that is neither 0 nor clamped;
# a zero index skips the approximant, about 20 fewer). Measured: the snippet rendered for every
# case of tests/test_encoder_pade.py, compiled by riscv64-unknown-elf-gcc -march=rv32imc
# -mabi=ilp32 -O2 (picolibc) into a loop over 20k unclamped accumulators per row, minstret read
# around the loop under qemu-system-riscv32, minus the loop's own 6 (two loads, a store, the
# count). Of the 66: the 64-bit index multiply-add and variable shift ~20, the clamps ~6,
# __builtin_clz (libgcc's __clzsi2 on RV32IMC, with the register saves the call forces) ~20,
# Horner [1/1] and the division ~15. A signed index adds its magnitude and the code's sign.
# Since the index takes the product's high word (one mulh, enc_high_word), bench/encoders.py
# section a measures 33 per element on resnet8's second conv (Relu, [1/1]) and 67.6 with
# LeakyRelu (two multipliers, a signed index): the figures below.
OPS_UNIFORM = 20
OPS_POWER = {(1, 1): 33, (2, 1): 35}
OPS_NEGATIVE = 2             # the second multiplier below zero
OPS_SIGN = 32                # a signed index


@functools.lru_cache(maxsize=None)
def fitted_rational(a: float, order: tuple) -> tuple:
    """(num, den) float coefficients in t = m - 3/4, lowest power first, den[0] = 1: the Pade
    approximant of m^a at 3/4, refined to the least maximum relative error on [1/2, 1]."""
    p, q = order
    taylor = [CENTER ** a * binom(a, k) / CENTER ** k for k in range(p + q + 1)]
    num, den = pade_approximant(taylor, q, p)
    start = np.concatenate([num.coeffs[::-1], den.coeffs[::-1][1:]]) / den.coeffs[-1]
    t = np.linspace(0.5, 1.0, 2049) - CENTER
    target = (t + CENTER) ** a

    def worst(z):
        ratio = np.polyval(z[:p + 1][::-1], t) / np.polyval(np.r_[1.0, z[p + 1:]][::-1], t)
        return float(np.abs(ratio / target - 1.0).max())
    best = minimize(worst, start, method="Nelder-Mead",
                    options={"xatol": 1e-13, "fatol": 1e-15, "maxiter": 40000, "maxfev": 40000})
    z = best.x if best.fun < worst(start) else start
    return tuple(z[:p + 1]), (1.0,) + tuple(z[p + 1:])


def horner(coefficients, t):
    """The fixed-point Horner evaluation the C performs, with every partial product (for the
    range proof): value, products."""
    h = np.full(np.shape(t), int(coefficients[-1]), dtype=np.int64)
    products = []
    for c in coefficients[-2::-1]:
        products.append(h * t)
        h = int(c) + (products[-1] >> FRAC)
    return h, products


def mantissa_t(mag):
    """(z, t) of magnitudes 1 <= mag < 2^31, as the C computes them."""
    n = np.frexp(mag.astype(np.float64))[1].astype(np.int64)       # bit length, exact
    z = 32 - n
    x = (mag << z) >> (32 - FRAC)
    return z, x - (int(CENTER * (1 << FRAC)))


@functools.lru_cache(maxsize=None)
def fixed_coefficients(a, order):
    """Q_FRAC integer coefficients (num, den) and the proof that the Horner evaluation stays
    in int32 with N, D > 0 for every mantissa: (num, den, n_max, d_max). Cached: every index
    width F of a search uses the same (read-only) coefficients."""
    num_f, den_f = fitted_rational(float(a), tuple(order))
    num = round_half_away(np.array(num_f) * (1 << FRAC)).astype(np.int64)
    den = round_half_away(np.array(den_f) * (1 << FRAC)).astype(np.int64)
    x = np.arange(1 << (FRAC - 1), 1 << FRAC, dtype=np.int64)
    t = x - int(CENTER * (1 << FRAC))
    n, n_products = horner(num, t)
    d, d_products = horner(den, t)
    for value in [n, d, *n_products, *d_products]:
        assert np.abs(value).max() < INT32, "pade: a Horner intermediate leaves int32"
    assert n.min() > 0 and d.min() > 0, "pade: the approximant's N or D is not positive"
    num.flags.writeable = den.flags.writeable = False
    return num, den, int(n.max()), int(d.max())


@functools.lru_cache(maxsize=1024)
def power_table(B, a, F, n_max, d_max):
    """(K, W) with W[j] = round(B * 2^(a (1 - j)) * 2^K), j = 0..F: the largest K <= 24 for
    which N * W + (D << (K-1)) and D << K stay in uint32, narrowed to the largest K whose W
    fits uint16 when that still leaves K >= NARROW_K (W's rounding then moves a code by at most
    2^-(K+1)); None when not even K = 1 fits. Cached (the same for every layer of a grid), so
    W is read-only."""
    fitting = []
    for k in range(24, 0, -1):
        w = round_half_away(B * np.exp2(a * (1.0 - np.arange(F + 1)) + k)).astype(np.int64)
        if n_max * int(w.max()) + (d_max << (k - 1)) < UINT32 and (d_max << k) < UINT32:
            fitting.append((k, w))
    if not fitting:
        return None
    narrow = [(k, w) for k, w in fitting if w.max() < (1 << 16) and k >= NARROW_K]
    k, w = narrow[0] if narrow else fitting[0]
    w = w.astype(np.uint16 if w.max() < (1 << 16) else np.int32)
    w.flags.writeable = False
    return k, w


def least_ops(orders, slopes):
    """The fewest instructions per element of any candidate of these orders (candidate's ops
    without the signed index, which depends on F)."""
    negative = not (np.all(slopes == 1) or np.all(slopes == 0))
    return min(OPS_UNIFORM if o == "uniform" else OPS_POWER[o] for o in orders) + OPS_NEGATIVE * negative


def negative_slopes(activation, rows):
    """Per row, the slope of the activation below zero (1: identity and Clip, 0: Relu)."""
    name = activation[0] if activation else None
    if name == "Relu":
        return np.zeros(rows)
    if name == "LeakyRelu":
        return np.full(rows, float(activation[1]))
    if name == "PRelu":
        slopes = np.asarray(activation[1], dtype=np.float64).reshape(-1)
        if slopes.size not in (1, rows):
            raise MCUGenError(f"PRelu with {slopes.size} slopes on a layer of {rows} output channels; "
                              f"give one slope or one per output channel")
        return np.broadcast_to(slopes, (rows,)).copy()
    return np.ones(rows)


def index_bounds(request, F, slopes):
    """[lo, hi] for the clamped index: Clip's bounds, |v| <= 2^F, no negatives where the
    activation or the encoding has none. lo <= hi (a Clip with min > max is the constant max)."""
    full = 1 << F
    lo, hi = -full, full
    act = request.activation
    if act and act[0] == "Clip":
        steps = np.array([act[1], act[2]], dtype=np.float64) * full / request.encoding.range
        lo_c, hi_c = round_half_away(np.clip(steps, -2.0 * full, 2.0 * full)).astype(np.int64)
        lo, hi = max(lo, int(lo_c)), min(hi, int(hi_c))
    if np.all(slopes == 0):
        lo = max(lo, 0)
    lo = min(lo, hi)
    if not request.encoding.signed:
        lo, hi = max(lo, 0), max(hi, 0)
    return lo, hi


class Pade(Encoder):
    name = "pade"
    realizes = "it computes piecewise-linear activations: identity, Relu, Clip, LeakyRelu, PRelu"

    def search_cost(self, request):
        """About 15 index widths, each measured on every row (plus a one-time fit)."""
        return 1.0

    def supports(self, activation) -> bool:
        return activation_is_piecewise_linear(activation)

    def build(self, request, beaten=None):
        enc = request.encoding
        if enc.scheme == "log2":
            return None
        slopes = negative_slopes(request.activation, request.rows)
        orders = ["uniform"] if enc.exponent == 1.0 else list(ORDERS)
        if beaten is not None and beaten(5 * request.rows, least_ops(orders, slopes)):
            return None          # an int32 multiplier and a shift per row: cannot win at any F
        for order in orders:
            f_max = self.largest_f(enc, order)
            finest = self.candidate(request, slopes, order, f_max, screen=True) if f_max >= 1 else None
            if not self.meets(request, finest):
                continue                                # hopeless even at the finest index
            for F in range(1, f_max + 1):
                parts = self.candidate(request, slopes, order, F, screen=True)
                if self.meets(request, parts):
                    return parts
        return None

    @staticmethod
    def meets(request, parts):
        return parts is not None and request.accepts(parts.error)

    @staticmethod
    def largest_f(enc, order):
        """The widest index: |v| <= 2^F, and v * B + 2^(F-1) in int32 for the uniform form."""
        if order != "uniform":
            return F_MAX
        return max([f for f in range(1, F_MAX + 1) if (enc.B << f) + (1 << (f - 1)) < INT32], default=0)

    def candidate(self, request, slopes, order, F, screen=False):
        """The parts for one index width and order, measured; None if a range check fails or,
        with `screen`, when a few rows alone already break the budget (the search's refusals,
        at a few rows' cost: EncodeRequest.refused_by)."""
        made = self.constants(request, slopes, order, F)
        if made is None:
            return None
        consts, params, magnitude_starts = made
        if screen and request.rows > 4:
            probe = request.probe()[0]
            rows_only = {k: v[probe] if k in params["enc_row_consts"] else v for k, v in consts.items()}
            if request.refused_by(self.index_segments(params, rows_only, magnitude_starts,
                                                      len(probe), request.bound)):
                return None
        negative, lo = params["enc_neg"], params["enc_lo"]
        ops = (OPS_UNIFORM if order == "uniform" else OPS_POWER[order]) \
            + OPS_NEGATIVE * negative + OPS_SIGN * (lo < 0)
        name = "uniform" if order == "uniform" else f"[{order[0]}/{order[1]}]"
        info = {"encoder_bits": F, "encoder_order": name}
        realized = self.index_segments(params, consts, magnitude_starts, request.rows, request.bound)
        return EncoderParts(consts, params, compare(request.reference(), realized, request.bound),
                            ops, info)

    def constants(self, request, slopes, order, F):
        """(consts, params, magnitude starts) for one index width and order; None if a range
        check fails."""
        enc = request.encoding
        ratio = request.scale * float(1 << F) / enc.range
        mult, shift = multipliers(ratio)
        consts = {"enc_mult": mult.astype(np.int32), "enc_shift": shift.astype(np.uint8)}
        lo, hi = index_bounds(request, F, slopes)
        negative = not (np.all(slopes == 1) or np.all(slopes == 0))
        if negative:
            mult_n, shift_n = multipliers(np.abs(slopes) * ratio)
            consts["enc_mult_neg"] = (np.sign(slopes).astype(np.int64) * mult_n).astype(np.int32)
            consts["enc_shift_neg"] = shift_n.astype(np.uint8)
        shifts = np.concatenate([shift] + ([shift_n] if negative else []))
        params = {"enc_lo": lo, "enc_hi": hi, "enc_F": F, "enc_B": enc.B, "enc_neg": int(negative),
                  "enc_half": 1 << (F - 1), "enc_uniform": int(order == "uniform"),
                  "enc_signed_index": int(lo < 0), **high_word_params(shifts, MULT_BITS)}
        if order != "uniform" and not self.add_power(params, consts, enc, order, F):
            return None
        row_consts = [k for k in ("enc_mult", "enc_shift", "enc_mult_neg", "enc_shift_neg")
                      if k in consts]
        params.update(base_params(self.name, request, consts, row_consts))
        starts, codes = magnitude_segments(params, consts)
        if codes.max() > enc.B:
            return None                              # the approximant overshoots the last code
        return consts, params, starts

    @staticmethod
    def add_power(params, consts, enc, order, F):
        """The approximant's constants and the power table; False if they cannot fit uint32."""
        num, den, n_max, d_max = fixed_coefficients(enc.exponent, order)
        table = power_table(enc.B, enc.exponent, F, n_max, d_max)
        if table is None:
            return False
        k, consts["enc_pow"] = table[0], table[1].copy()
        consts["enc_num"], consts["enc_den"] = num.astype(np.int32), den.astype(np.int32)
        params.update(enc_frac=FRAC, enc_x_shift=32 - FRAC, enc_center=int(CENTER * (1 << FRAC)),
                      enc_z0=31 - F, enc_k=k, enc_k1=k - 1, enc_num_top=len(num) - 1,
                      enc_num_steps=list(range(len(num) - 2, -1, -1)), enc_den_top=len(den) - 1,
                      enc_den_steps=list(range(len(den) - 2, -1, -1)))
        return True

    def run(self, params, consts, acc, rows):
        acc, rows = np.broadcast_arrays(np.asarray(acc, dtype=np.int64), np.asarray(rows, dtype=np.int64))
        v = np.clip(signed_index(params, consts, acc, rows), params["enc_lo"], params["enc_hi"])
        code = magnitude_code(params, consts, np.abs(v))
        return np.where(v < 0, -code, code)

    def segments(self, request, params, consts):
        return self.index_segments(params, consts, magnitude_segments(params, consts)[0],
                                   request.rows, request.bound)

    def index_segments(self, params, consts, magnitude_starts, rows, bound):
        """The segments of `rows` rows (those of the per-row constants), given where P
        changes (magnitude_segments' starts)."""
        changes = index_changes(params, magnitude_starts)
        row, start = side_starts(params, consts, changes, np.zeros(rows, np.int64),
                                 np.full(rows, bound), "")
        if bound > 0:
            below = side_starts(params, consts, changes, np.full(rows, -bound), np.full(rows, -1),
                                "_neg" if params["enc_neg"] else "")
            row, start = np.concatenate([below[0], row]), np.concatenate([below[1], start])
            order = np.lexsort((start, row))
            row, start = row[order], start[order]
        return Segments.flat(row, start, self.run(params, consts, start, row), rows)


def signed_index(params, consts, acc, rows):
    """The unclamped index, with the negative side's own multiplier where there is one."""
    mult = consts["enc_mult"].astype(np.int64)[rows]
    shift = consts["enc_shift"].astype(np.int64)[rows]
    if params["enc_neg"]:
        below = acc < 0
        mult = np.where(below, consts["enc_mult_neg"].astype(np.int64)[rows], mult)
        shift = np.where(below, consts["enc_shift_neg"].astype(np.int64)[rows], shift)
    return requantize(acc, mult, shift)


def magnitude_code(params, consts, mag):
    """P(mag) for 0 <= mag <= 2^F, as the C computes it (every operand below is positive, so
    the C's truncating division is numpy's floor division here)."""
    mag = np.asarray(mag, dtype=np.int64)
    if params["enc_uniform"]:
        return (mag * params["enc_B"] + params["enc_half"]) >> params["enc_F"]
    safe = np.maximum(mag, 1)
    z, t = mantissa_t(safe)
    n, _ = horner(consts["enc_num"].astype(np.int64), t)
    d, _ = horner(consts["enc_den"].astype(np.int64), t)
    w = consts["enc_pow"].astype(np.int64)[z - params["enc_z0"]]
    code = (n * w + (d << params["enc_k1"])) // (d << params["enc_k"])
    return np.where(mag > 0, code, 0)


def magnitude_segments(params, consts):
    """P over every magnitude 0..2^F as (starts, codes), read-only: the same for every layer
    of a grid and index width, so kept (MAGNITUDES) by what P depends on."""
    key = tuple(params.get(k) for k in ("enc_F", "enc_B", "enc_uniform", "enc_half", "enc_z0", "enc_k",
                                        "enc_k1")) + \
        tuple(consts[k].tobytes() if k in consts else None for k in ("enc_num", "enc_den", "enc_pow"))
    if key not in MAGNITUDES:
        if len(MAGNITUDES) >= 1024:
            MAGNITUDES.clear()
        starts, codes = all_magnitudes(params, consts)
        starts.flags.writeable = codes.flags.writeable = False
        MAGNITUDES[key] = starts, codes
    return MAGNITUDES[key]


MAGNITUDES = {}


def all_magnitudes(params, consts):
    """magnitude_segments, computed. The power form depends on mag only through its bit length
    and its top FRAC bits, so each bit length is at most 2^(FRAC-1) blocks; the uniform form is
    non-decreasing, so bisection finds its steps."""
    F = params["enc_F"]
    top = 1 << F
    if params["enc_uniform"]:
        def code(m):
            return magnitude_code(params, consts, m)
        first = least_reaching(code, np.arange(1, params["enc_B"] + 1), np.zeros(1, np.int64),
                               np.full(1, top, np.int64))[0]
        starts = np.unique(np.concatenate([[0], first[first <= top]]))
    else:
        blocks = [np.arange(0, min(1 << FRAC, top + 1), dtype=np.int64)]
        x = np.arange(1 << (FRAC - 1), 1 << FRAC, dtype=np.int64)
        for n in range(FRAC + 1, F + 2):
            blocks.append(x << (n - FRAC))
        starts = np.concatenate(blocks)
        starts = starts[starts <= top]
    codes = magnitude_code(params, consts, starts)
    keep = np.r_[True, codes[1:] != codes[:-1]]
    return starts[keep], codes[keep]


def index_changes(params, magnitude_starts):
    """The clamped index values c in (lo, hi] where sign(c) * P(|c|) differs from its value at
    c - 1, given the magnitudes where P changes (magnitude_segments' starts)."""
    lo, hi = params["enc_lo"], params["enc_hi"]
    mags = magnitude_starts[1:]                               # P(c) != P(c - 1)
    up = mags[(mags > max(lo, 0)) & (mags <= hi)]
    down = 1 - mags                                           # -P(-v) changes at v = 1 - c
    down = down[(down > lo) & (down <= min(hi, 0))]
    return np.unique(np.concatenate([down, up]))


def side_starts(params, consts, changes, lo, hi, key):
    """The segment starts over accumulators [lo_r, hi_r] on one side of zero (`key` names that
    side's multiplier), flat (row, start) sorted by row then start: the index is monotone
    there, non-decreasing or, below zero with a negative slope, non-increasing, so the first
    accumulator past each change of the clamped index is a threshold of the index."""
    mult = consts["enc_mult" + key].astype(np.int64)
    shift = consts["enc_shift" + key].astype(np.int64)
    first = np.zeros((mult.size, changes.size), dtype=np.int64)
    for increasing in (True, False):
        rows = np.flatnonzero((mult >= 0) == increasing)
        if rows.size and changes.size:
            targets = changes if increasing else changes - 1
            first[rows] = index_thresholds(mult[rows], shift[rows], targets, lo[rows], hi[rows],
                                           increasing)
    starts = np.concatenate([lo[:, None], first], axis=1)
    inside = starts <= hi[:, None]
    inside[:, 0] = True
    row = np.broadcast_to(np.arange(mult.size, dtype=np.int64)[:, None], starts.shape)[inside]
    starts = starts[inside]
    order = np.lexsort((starts, row))     # a falling index finds its thresholds in reverse
    return row[order], starts[order]
