"""Grids whose decoded values fit a SIMD core's 8-bit lanes (or a FPGA's fabric multipliers):
the quantizer's side of issue 25 (DESIGN section 1, "lanes").

A core with 4 x 8-bit dot products (CV32E40P, GAP8) multiplies decoded operands twice as fast
when both fit int8/uint8 as when one needs 16-bit lanes; a FPGA maps operands of 8 bits or less
to LUTs instead of DSP slices. With `lanes` 8:
- weights of at most LANE_WEIGHT_BITS bits on a power grid get levels rounded to 8-bit integers
  (Grid.lanes): 4-bit weights then always decode to int8, and the exponent search, PowerQuant's
  rounding and NUPES's GPTQ all see the levels as they are; wider weights (5 to 8 bits, such as
  the first and last layers' 8 bits) take the uniform grid, whose levels are int8 themselves,
  unless it costs more than a bit of their error (narrow_weights);
- each activation tensor takes a grid by `--act-grid`: `power` keeps the scheme's power grid
  (its levels rounded to the lanes where they stay distinct, A4-A6); `uniform` takes a = 1
  (the identity table: 8-bit lanes at any width); `auto` measures the encoded values' error
  of the best grid and of the best one in 8-bit lanes on the calibration samples, and takes the
  latter when its error is at most NARROW_TOLERANCE times the former (a power grid in 16-bit
  lanes at A8 against a uniform one in 8-bit lanes, where the lanes halve the MAC layer's
  time). Without lanes (boards without SIMD), `auto` is `power`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from mcugen.quant.power import Encoding, levels_encoding, levels_storable, with_lanes

LANE_WEIGHT_BITS = 4        # W5-W6 levels near zero merge in int8 below an exponent of ~0.7
ACT_GRIDS = ("auto", "power", "uniform")
ACT_STORAGES = ("auto", "levels", "codes")
LANE_CHOICES = ("auto", "8", "16")
# auto: 8-bit lanes unless they cost more than one bit of resolution (4x the squared error of the
# best grid): at A8 the uniform grid is then at least as fine as a 7-bit power grid
NARROW_TOLERANCE = 4.0


def weight_lanes(bits: int, scheme: str, lanes: int) -> int:
    """The lanes a weight grid's levels are rounded to (0: none)."""
    return lanes if lanes and scheme == "power" and bits <= LANE_WEIGHT_BITS else 0


def narrow_weights(grid, lanes: int, error_of):
    """A weight grid that does not fit the lanes (8-bit weights on a power grid) against its
    uniform twin, whose 255 levels are int8 themselves: the twin unless its error
    (`error_of(grid)`, a relative norm) is more than a bit worse (NARROW_TOLERANCE in squares)."""
    if not lanes or grid.lanes or grid.exponent == 1.0 or grid.scheme != "power":
        return grid
    twin = uniform_twin(grid)
    return twin if error_of(twin) ** 2 <= NARROW_TOLERANCE * error_of(grid) ** 2 else grid


def lane_grid(enc: Encoding, lanes: int) -> Encoding:
    """The encoding with its levels in `lanes`-bit integers where they stay distinct; the
    uniform grid fits any lanes as it is (its decode table is the identity)."""
    if not lanes or enc.exponent == 1.0 or not enc.fits_lanes(lanes):
        return enc
    return with_lanes(enc, lanes)


def in_lanes(enc: Encoding, lanes: int) -> bool:
    """Whether the decoded values of `enc` fit `lanes`-bit lanes."""
    return (enc.exponent == 1.0 and enc.scheme == "power") or bool(enc.lanes and enc.lanes <= lanes)


@dataclass
class GridChoice:
    """What the quantizer chose for one activation tensor, and what the other choice measured."""
    encoding: Encoding
    error: float                  # mean (weighted) squared error of the encoded values
    alternative: str              # the grid not taken ("" when there was no choice)
    alternative_error: float | None

    def info(self) -> dict:
        return {"act_grid": "uniform" if self.encoding.exponent == 1.0 else "power",
                "act_lanes": 8 if in_lanes(self.encoding, 8) else 16,
                "act_error": self.error, "act_alternative": self.alternative,
                "act_alternative_error": self.alternative_error}


def encoded_error(enc: Encoding, values: np.ndarray, weight=1.0) -> float:
    return float(np.mean(weight * (enc.decode(enc.encode(values)) - values) ** 2))


def uniform_twin(enc):
    """The same grid (or Encoding: its range too) on the uniform grid, a = 1."""
    return dataclasses.replace(enc, exponent=1.0, scheme="power", lanes=0)


def choose_grid(candidates, lanes: int, act_grid: str, error_of, twins=None) -> GridChoice:
    """Among the scheme's `candidates` (encodings before lane rounding: exponents and clipped
    ranges), the one act_grid asks for, `error_of(enc)` measuring each. power (and auto without
    lanes): the candidates as they are; uniform: `twins` (default: the candidates' a = 1
    twins); auto: both, and the best in `lanes`-bit lanes when within NARROW_TOLERANCE of the
    best overall."""
    twins = list(dict.fromkeys(twins or (uniform_twin(enc) for enc in candidates)))
    if act_grid == "uniform":
        candidates = twins
    elif act_grid == "auto" and lanes:
        candidates = list(dict.fromkeys(list(candidates) + twins))
    candidates = [lane_grid(enc, lanes) for enc in candidates]
    scored = [(error_of(enc), enc) for enc in candidates]
    best = min(scored, key=lambda s: s[0])
    if act_grid != "auto" or not lanes:
        return GridChoice(best[1], best[0], "", None)
    narrow = [s for s in scored if in_lanes(s[1], lanes)]
    wide = [s for s in scored if not in_lanes(s[1], lanes)]
    if not narrow or not wide:
        return GridChoice(best[1], best[0], "", None)
    best_narrow, best_wide = min(narrow, key=lambda s: s[0]), min(wide, key=lambda s: s[0])
    if best_narrow[0] <= NARROW_TOLERANCE * best[0]:
        return GridChoice(best_narrow[1], best_narrow[0], describe(best_wide[1]), best_wide[0])
    return GridChoice(best_wide[1], best_wide[0], describe(best_narrow[1]), best_narrow[0])


def describe(enc: Encoding) -> str:
    if enc.exponent == 1.0:
        return "uniform (8-bit lanes)"
    return f"power a={enc.exponent:g} ({8 if enc.lanes else 16}-bit lanes)"


def stored_encodings(encodings: dict, network_input, storage: str) -> dict:
    """`storage` levels: every tensor on a power grid in 8-bit lanes of at most 6 bits stored as
    its levels' values (power.LevelsEncoding, DESIGN section 1); the tensors that share codes
    share the result. The network input's codes come from the host as they are."""
    if storage != "levels":
        return encodings
    host = encodings.get(network_input)
    return {t: levels_encoding(enc) if levels_storable(enc) and enc != host else enc
            for t, enc in encodings.items()}
