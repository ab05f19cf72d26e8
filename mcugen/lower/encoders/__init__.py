"""Encoders: from an integer accumulator to the next layer's code, integer-only.

The realizations (one module each, registered in ENCODERS) share the seam in base.py. A step
that encodes calls `encoder_step_parts` with its request; the reference runs `encode`.
`auto` (the default) takes, per step, the realization with the smallest constants among
those within the error budget; among those within max(256 B, 10 %) of the smallest, the one
with the fewest instructions per element.
"""
from __future__ import annotations

from mcugen.errors import MCUGenError
from mcugen.lower.encoders.base import EncodeRequest, EncoderParts
from mcugen.lower.encoders.lut import Lut
from mcugen.lower.encoders.pade import Pade
from mcugen.lower.encoders.threshold import Threshold

ENCODERS = {e.name: e for e in (Threshold(), Lut(), Pade())}
CHOICES = ("auto",) + tuple(ENCODERS)
NEAR_BYTES = 256          # constants this close count as equally small for auto
NEAR_SHARE = 0.10


def choose(candidates: list) -> EncoderParts:
    smallest = min(p.table_bytes for p in candidates)
    near = [p for p in candidates
            if p.table_bytes <= max(smallest + NEAR_BYTES, smallest * (1 + NEAR_SHARE))]
    return min(near, key=lambda p: (p.ops_per_element, p.table_bytes))


def encoder_step_parts(request: EncodeRequest, choice: str = "auto", where: str = "this layer"):
    """(consts, params, info) of the step's encoder: `choice` is auto or an encoder's name."""
    if choice != "auto" and choice not in ENCODERS:
        raise MCUGenError(f"unknown encoder '{choice}'; choose one of {', '.join(CHOICES)}")
    names = list(ENCODERS) if choice == "auto" else [choice]
    act = request.activation[0] if request.activation else "identity"
    supported = [ENCODERS[n] for n in names if ENCODERS[n].supports(request.activation)]
    if not supported:
        raise MCUGenError(f"{where}: the {choice} encoder cannot realize activation {act} "
                          f"({ENCODERS[choice].realizes}); use --encoder lut or auto")
    built = [p for p in (e.build(request) for e in supported) if p is not None]
    if not built:
        raise MCUGenError(f"{where}: no {'' if choice == 'auto' else choice + ' '}encoder realizes "
                          f"activation {act} within a code error of {request.max_code_error}; "
                          f"allow --max-code-error 1 or use --encoder threshold for a monotone one")
    parts = choose(built)
    return parts.consts, parts.params, parts.info


def encode(step, acc, rows):
    """The reference of a step's encoder: int64 accumulators -> codes."""
    return ENCODERS[step.params["encoder"]].run(step.params, step.consts, acc, rows)
