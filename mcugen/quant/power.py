"""The quantizer math (DESIGN section 1), with no graph: power, uniform (a = 1) and log2 grids.

An Encoding maps reals to integer codes: unsigned codes 0..B, signed (sign-magnitude) codes
-B..B. `levels[k]` is the normalized magnitude code k stands for (levels[B] = 1), and
`boundaries[k-1]` the least normalized magnitude that encodes to >= k, so every scheme is one
rounding rule: code = #{k : |x|/R >= boundaries[k-1]}.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from mcugen.numerics import round_half_away

SCHEMES = ("power", "uniform", "log2")


def lane_limit(lanes: int, signed: bool) -> int:
    """The largest decoded magnitude a SIMD lane of `lanes` bits holds: int8 or uint8."""
    return (1 << (lanes - 1)) - 1 if signed else (1 << lanes) - 1


@dataclass(frozen=True)
class Grid:
    """A code grid without a range: bits, signedness, exponent and scheme. `lanes` (8, or 0 for
    none) makes the levels whole multiples of 1 / lane_scale: integers of at most `lanes` bits
    once decoded, so a SIMD core multiplies them in its narrow lanes and a FPGA in fabric
    (issue 25). The rounding of the levels is part of the grid: the quantizers measure and
    optimize the levels as they are, and the codes still round in the power domain."""
    bits: int
    signed: bool
    exponent: float = 1.0
    scheme: str = "power"       # "power" covers uniform (exponent 1); "log2" is the log grid
    lanes: int = field(default=0, kw_only=True)

    @property
    def B(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def lane_scale(self) -> int:
        """The decoded value of level 1 in the lanes: B times the largest power of two that
        keeps it within lane_limit (the 8-bit decode table's scale, lower/fixedpoint.py)."""
        return self.B << int(np.floor(np.log2(lane_limit(self.lanes, self.signed) / self.B)))

    @property
    def levels(self) -> np.ndarray:
        k = np.arange(self.B + 1, dtype=np.float64)
        if self.scheme == "log2":
            lv = np.exp2(k - self.B)
            lv[0] = 0.0
            return lv
        levels = (k / self.B) ** (1.0 / self.exponent)
        if self.lanes:
            return round_half_away(levels * self.lane_scale) / self.lane_scale
        return levels

    def fits_lanes(self, lanes: int) -> bool:
        """Whether this grid with `lanes` keeps every level distinct (and a power grid fits them
        at all): where it does not, rounding to the lanes merges codes."""
        if self.scheme != "power" or self.B > lane_limit(lanes, self.signed):
            return False
        return bool(np.all(np.diff(with_lanes(self, lanes).levels) > 0))

    def magnitude_codes(self, t):
        """Normalized magnitudes t >= 0 -> codes 0..B (float64 math, half away from zero)."""
        t = np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0)
        if self.scheme == "log2":
            lv = self.levels
            mids = np.empty(self.B)
            mids[0] = lv[1] / 2.0
            mids[1:] = np.sqrt(lv[1:-1] * lv[2:])         # rounding in the log domain
            return np.searchsorted(mids, t, side="right").astype(np.int64)
        return round_half_away(self.B * t ** self.exponent).astype(np.int64)

    def quantize(self, x, scale):
        """Reals -> codes, with `scale` the range R (broadcast against x)."""
        x = np.asarray(x, dtype=np.float64)
        t = np.abs(x) / scale
        q = self.magnitude_codes(t)
        if self.signed:
            return np.where(x < 0, -q, q)
        return np.where(x > 0, q, 0)

    def dequantize(self, q, scale):
        q = np.asarray(q, dtype=np.int64)
        return np.sign(q) * scale * self.levels[np.abs(q)]

    @property
    def code_min(self) -> int:
        return -self.B if self.signed else 0

    @property
    def table_offset(self) -> int:
        """Add to a code to index a table in code order (tables start at code_min)."""
        return -self.code_min

    def codes(self) -> np.ndarray:
        """Every code in table order: -B..B when signed, 0..B otherwise."""
        return np.arange(self.code_min, self.B + 1)


def with_lanes(grid, lanes: int):
    """The same grid (or Encoding) with its levels rounded to `lanes`-bit integers (0: free)."""
    return dataclasses.replace(grid, lanes=lanes)


@dataclass(frozen=True)
class Encoding(Grid):
    """A grid with its per-tensor range R: how one activation tensor is stored."""
    range: float = 1.0

    def encode(self, x):
        return self.quantize(x, self.range)

    def decode(self, q):
        return self.dequantize(q, self.range)

    @property
    def ctype(self) -> str:
        if self.signed:
            return "int8" if self.bits <= 8 else "int16"
        return "uint8" if self.bits <= 8 else "uint16"


@dataclass(frozen=True)
class LevelsEncoding(Encoding):
    """Levels storage (DESIGN section 1, issue 25): a tensor on `source`, a power grid in 8-bit
    lanes, stored as its levels' whole values v = round(S level), S = source.lane_scale, not its
    codes: the uniform grid with B = S (the identity decode table), of which only the values
    v_k are written. Built by levels_encoding."""
    source: Encoding | None = None

    @property
    def B(self) -> int:
        return self.source.lane_scale

    def written(self) -> np.ndarray:
        """The stored value of each of the source's codes, in its table order."""
        codes = self.source.codes()
        return np.sign(codes) * round_half_away(self.B * self.source.levels[np.abs(codes)]).astype(np.int64)

    def quantize(self, x, scale):
        """The source's codes (its rounding in the power domain), stored as their values."""
        return self.written()[self.source.quantize(x, scale) + self.source.table_offset]


def levels_storable(enc) -> bool:
    """A power grid in 8-bit lanes of at most 6 bits: its levels are whole values of 8 bits."""
    return (isinstance(enc, Encoding) and not isinstance(enc, LevelsEncoding) and enc.lanes == 8
            and enc.scheme == "power" and enc.exponent != 1.0 and enc.bits <= 6)


def levels_encoding(enc: Encoding) -> LevelsEncoding:
    # bits stay the codes' (the grid's resolution, what reports show): one byte holds either
    return LevelsEncoding(enc.bits, enc.signed, 1.0, "power", range=enc.range, source=enc)


NEGLIGIBLE = 2.0 ** -16    # a channel's share below this is lost in any 8-bit grid anyway


def weight_scales(w: np.ndarray) -> np.ndarray:
    """Per-output-channel M_c = max|W_c|; an all-zero channel gets 1 (its codes are all 0)."""
    m = np.abs(w.reshape(w.shape[0], -1)).max(axis=1).astype(np.float64)
    return np.where(m > 0, m, 1.0)


def constant_channels(w: np.ndarray, bias: np.ndarray, x_range: float) -> np.ndarray:
    """Output channels whose weights do not matter: all below 2^-16 of the layer's largest
    weight (dead channels that BatchNorm folding leaves at 1e-30), or whose whole weighted sum
    over the input's range stays below 2^-16 of their bias. Their weights quantize to 0 and
    the channel is lowered as its bias, so its scale does not follow its weights to 1e-30."""
    mags = np.abs(w.reshape(w.shape[0], -1)).astype(np.float64)
    peak = mags.max(axis=1)
    negligible = peak <= peak.max() * NEGLIGIBLE
    swamped = x_range * mags.sum(axis=1) <= np.abs(bias) * NEGLIGIBLE
    return negligible | swamped


def quantize_weights(w: np.ndarray, grid: Grid, constant=None):
    """Per-channel signed quantization -> (codes, M_c, dequantized weights); the channels
    flagged in `constant` get all-zero codes."""
    m = weight_scales(w)
    shape = (-1,) + (1,) * (w.ndim - 1)
    codes = grid.quantize(w, m.reshape(shape))
    if constant is not None:
        codes[np.asarray(constant, dtype=bool)] = 0
        m = np.where(constant, 1.0, m)
    return codes, m, grid.dequantize(codes, m.reshape(shape))


def reconstruction_error(w: np.ndarray, grid: Grid) -> float:
    """||W - W^||_2 / ||W||_2 of rounding to the nearest code (0 for an all-zero tensor)."""
    return relative_error(w, quantize_weights(w, grid)[2])


def relative_error(w: np.ndarray, w_hat: np.ndarray) -> float:
    """||W - W^||_2 / ||W||_2 (0 for an all-zero tensor)."""
    norm = np.linalg.norm(w)
    return float(np.linalg.norm(w - w_hat) / norm) if norm > 0 else 0.0
