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

from dataclasses import dataclass, field

import numpy as np

from mcugen.lower.encoders.exact import CodeError, Segments, compare, float_segments
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

    @property
    def rows(self) -> int:
        return self.scale.size

    def accepts(self, error: CodeError) -> bool:
        """Within budget: a worst error of at most max_code_error codes, and (for a budget of 1)
        at most MAX_OFF_SHARE of the accumulator values off at all. Without the second rule the
        smallest table within one code leaves up to half the values off by one on small layers."""
        return error.worst <= self.max_code_error and (error.worst == 0 or error.off_share <= MAX_OFF_SHARE)

    def reference(self) -> Segments:
        """The float encoder as exact segments (computed once per request)."""
        if self._reference is None:
            self._reference = float_segments(self.encoding, self.activation, self.scale, self.bound)
        return self._reference


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

    def supports(self, activation) -> bool:
        """Whether this realization can encode the activation at all."""
        return True

    def build(self, request: EncodeRequest) -> EncoderParts | None:
        """The step's parts, or None when the error budget cannot be met."""
        raise NotImplementedError

    def run(self, params, consts, acc, rows):
        """acc (int64, any shape), rows (int64, broadcast with acc) -> codes (int64)."""
        raise NotImplementedError

    def measure(self, request, params, consts) -> CodeError:
        """Exact error of a built realization against the float encoder."""
        return compare(request.reference(), self.segments(request, params, consts), request.bound)

    def segments(self, request, params, consts) -> Segments:
        raise NotImplementedError


def base_params(name, request, consts, row_consts):
    """The parameters every encoder sets: its name, the code range and its C arguments."""
    return {"encoder": name, "code_min": request.encoding.code_min, "code_max": request.encoding.B,
            "enc_consts": list(consts), "enc_row_consts": {k: int(consts[k].size // request.rows)
                                                           for k in row_consts}}
