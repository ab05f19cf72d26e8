"""The encoder seam (DESIGN section 3): one object per realization of `acc -> code`.

An Encoder is built from an EncodeRequest (the output encoding, the fused activation, the
per-row scale of the accumulator and its proven bound, the error budget) and yields the
step's constants and parameters (EncoderParts), and the reference function `run` in C
semantics. Its C is one snippet per target, templates/common/encoders/<name>.c.j2 (or
templates/<target>/encoders/<name>.c.j2), defining `<step>_encode(<consts>, row, acc)`.

Rows: a step's accumulator is split into rows that share a scale (an output channel of a
Conv/Gemm, a window size of an AveragePool, the one row of an Add). Constants listed in
params["enc_row_consts"] are indexed by row (their first axis); the others are shared.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from mcugen.lower.encoders.exact import (CodeError, Segments, compare, float_segments, float_thresholds,
                                         merge)
from mcugen.lower.fixedpoint import ACC_LIMIT

MAX_OFF_SHARE = 0.02      # approximate encoders: at most 2% of accumulator values off (by one)


@dataclass
class EncodeRequest:
    encoding: object               # the output's Encoding
    activation: object             # the fused activation spec (None: identity)
    scale: np.ndarray              # (rows,) real value of one accumulator unit, per row
    bound: int                     # |acc| <= bound, proven by the caller
    max_code_error: int = 1        # the budget for approximate realizations
    elements: int = 1              # values encoded per inference (auto weighs instructions by it)

    def __post_init__(self):
        self.scale = np.atleast_1d(np.asarray(self.scale, dtype=np.float64))
        if self.bound > ACC_LIMIT:   # callers prove their bound; an unproven one is a lowering bug
            raise AssertionError(f"accumulator bound {self.bound} exceeds int32")
        self._reference = None
        self._thresholds = None
        self._probe = None

    @property
    def rows(self) -> int:
        return self.scale.size

    def accepts(self, error: CodeError) -> bool:
        """Within budget: a worst error of at most max_code_error codes, and (for a budget of 1)
        at most MAX_OFF_SHARE of the accumulator values off at all. Without the second rule the
        smallest table within one code leaves up to half the values off by one on small layers."""
        return error.worst <= self.max_code_error and (error.worst == 0 or error.off_share <= MAX_OFF_SHARE)

    def probe(self):
        """(rows, their reference): a few rows to screen candidates with (probe_rows)."""
        if self._probe is None:
            rows = probe_rows(self.scale)
            self._probe = rows, self.reference().subset(rows)
        return self._probe

    def refused_by(self, realized: Segments) -> bool:
        """Whether a realization is outside budget already on the probe rows (`realized` holds
        theirs only): neither its worst error nor its count of values off can shrink when the
        other rows are measured too."""
        merged = merge(self.probe()[1], realized, self.bound)
        error = np.abs(merged.code_b - merged.code_a)
        off = int(merged.length[error > 0].sum())
        return int(error.max(initial=0)) > self.max_code_error or \
            off / (self.rows * (2 * self.bound + 1)) > MAX_OFF_SHARE

    def reference(self) -> Segments:
        """The float encoder as exact segments (computed once per request, and kept for
        requests of the same float encoder: FLOAT_CACHE)."""
        if self._reference is None:
            self._reference = FLOAT_CACHE.get(("segments",) + self.key()[:-1], lambda: float_segments(
                self.encoding, self.activation, self.scale, self.bound, self.thresholds))
        return self._reference

    def thresholds(self) -> np.ndarray:
        """exact.float_thresholds of this request (computed once, kept like reference)."""
        if self._thresholds is None:
            self._thresholds = FLOAT_CACHE.get(("thresholds",) + self.key()[:-1], lambda: read_only(
                float_thresholds(self.encoding, self.activation, self.scale, self.bound)))
        return self._thresholds

    def key(self) -> tuple:
        """What an encoder's build depends on (`elements` only weighs the choice between them);
        all but the last entry (the budget) is what the float encoder depends on."""
        return (self.encoding, frozen(self.activation), self.scale.shape, self.scale.tobytes(),
                self.bound, self.max_code_error)


@dataclass
class EncoderParts:
    """What an encoder adds to a step."""
    consts: dict
    params: dict
    error: CodeError
    ops_per_element: int               # estimated RV32 instructions per encoded element
    extra_info: dict = field(default_factory=dict)

    @property
    def table_bytes(self) -> int:
        return int(sum(v.nbytes for v in self.consts.values()))

    @property
    def info(self) -> dict:
        return {"encoder": self.params["encoder"], "table_bytes": self.table_bytes,
                "encoder_max_code_error": self.error.worst,
                "encoder_off_share": round(self.error.off_share, 6),
                "encoder_mean_code_error": round(self.error.mean, 6),
                "encoder_active_off_share": round(self.error.active_off_share, 6),
                "encoder_ops": self.ops_per_element, **self.extra_info}


class Encoder:
    name = ""
    realizes = "any activation"      # what supports() accepts, for error messages
    unbuilt = ""                     # why build() returns None, when not for the error budget

    def search_cost(self, request) -> float:
        """How costly build's search is, relative to the other encoders': auto builds the
        cheaper ones first, so that the costlier can stop early (build's `beaten`)."""
        return 0.0

    def supports(self, activation) -> bool:
        """Whether this realization can encode the activation at all."""
        return True

    def build(self, request: EncodeRequest, beaten=None) -> EncoderParts | None:
        """The step's parts, or None when the error budget cannot be met. `beaten(table_bytes,
        ops)`, when given, says whether parts with at least these bytes and instructions would
        lose auto's choice anyway: the build may then stop early and return None."""
        raise NotImplementedError

    def run(self, params, consts, acc, rows):
        """acc (int64, any shape), rows (int64, broadcast with acc) -> codes (int64)."""
        raise NotImplementedError

    def store_levels(self, consts, params, values) -> bool:
        """Make the built parts write the levels `values[code - code_min]` instead of codes;
        True when a wrapper does it (_encode.c.j2 reads enc_levels after the snippet's code),
        False when the snippet now writes them itself."""
        consts["enc_levels"] = values
        params["enc_consts"] = params["enc_consts"] + ["enc_levels"]
        return True

    def measure(self, request, params, consts) -> CodeError:
        """Exact error of a built realization against the float encoder."""
        return compare(request.reference(), self.segments(request, params, consts), request.bound)

    def segments(self, request, params, consts) -> Segments:
        raise NotImplementedError


class BoundedCache:
    """A least-recently-used dict of at most `limit` units of size (size_of(value) each): a
    model that does not fit its board is lowered again, with the same encoder requests."""

    def __init__(self, limit, size_of):
        self.limit, self.size_of, self.items, self.used = limit, size_of, OrderedDict(), 0

    def lookup(self, key):
        """(found, value)."""
        if key not in self.items:
            return False, None
        self.items.move_to_end(key)
        return True, self.items[key]

    def store(self, key, value):
        self.items[key] = value
        self.used += self.size_of(value)
        while self.used > self.limit and len(self.items) > 1:
            self.used -= self.size_of(self.items.popitem(last=False)[1])

    def get(self, key, make):
        found, value = self.lookup(key)
        if not found:
            value = make()
            self.store(key, value)
        return value

    def clear(self):
        self.items.clear()
        self.used = 0


def read_only(array):
    """A cached array, shared by every request that needs it: not to be written."""
    array.flags.writeable = False
    return array


def _float_bytes(value):
    return value.nbytes if isinstance(value, np.ndarray) else 24 * value.start.size


FLOAT_CACHE = BoundedCache(64 << 20, _float_bytes)     # float encoders' segments and thresholds


def probe_rows(scale):
    """A few rows to screen a candidate with before measuring every row: the smallest and
    largest scales (the finest and the coarsest accumulator grid) and two in between."""
    order = np.argsort(scale, kind="stable")
    picks = {int(order[0]), int(order[-1]), int(order[len(order) // 3]), int(order[2 * len(order) // 3])}
    return sorted(picks)


def frozen(value):
    """A hashable copy of an activation spec (its parameters may be lists or arrays)."""
    if isinstance(value, (list, tuple)):
        return tuple(frozen(v) for v in value)
    if isinstance(value, np.ndarray):
        return (value.dtype.str, value.shape, value.tobytes())
    return value


def base_params(name, request, consts, row_consts):
    """The parameters every encoder sets: its name, the code range and its C arguments."""
    return {"encoder": name, "code_min": request.encoding.code_min, "code_max": request.encoding.B,
            "enc_consts": list(consts), "enc_row_consts": {k: int(consts[k].size // request.rows)
                                                           for k in row_consts}}
