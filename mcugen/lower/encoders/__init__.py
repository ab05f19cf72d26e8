"""Encoders: from an integer accumulator to the next layer's code, integer-only.

The realizations (one module each, registered in ENCODERS) share the seam in base.py. A step
that encodes calls `encoder_step_parts` with its request; the reference runs `encode`.
`auto` (the default) takes, per step, among the realizations within the error budget, the one
with the least table bytes + encoded elements per inference x instructions per element
(an instruction per inference weighs as much as a byte of flash). On grids of fewer than 7
bits a one-code error is more than 1/64 of the range while the exact threshold table is at most
63 int32 per row: there `auto` keeps the threshold encoder when the activation allows it.
`auto-small` (what the lowering falls back to when the model does not fit the board) takes the
least table bytes, then the fewest instructions.
"""
from __future__ import annotations

from mcugen.errors import MCUGenError
from mcugen.lower.encoders.base import EncodeRequest, EncoderParts
from mcugen.lower.encoders.lut import Lut
from mcugen.lower.encoders.pade import Pade
from mcugen.lower.encoders.threshold import Threshold

ENCODERS = {e.name: e for e in (Threshold(), Lut(), Pade())}
AUTO = ("auto", "auto-small")
CHOICES = AUTO + tuple(ENCODERS)
BYTES_PER_INSTRUCTION = 1.0      # auto's exchange rate between flash and run time
EXACT_BELOW_BITS = 7             # auto keeps exact encoders on coarser grids


def choose(candidates: list, elements: int, small=False) -> EncoderParts:
    if small:
        return min(candidates, key=lambda p: (p.table_bytes, p.ops_per_element))
    return min(candidates, key=lambda p: (p.table_bytes + BYTES_PER_INSTRUCTION * elements
                                          * p.ops_per_element, p.table_bytes))


def encoder_step_parts(request: EncodeRequest, choice: str = "auto", where: str = "this layer"):
    """(consts, params, info) of the step's encoder: `choice` is auto or an encoder's name."""
    if choice not in CHOICES:
        raise MCUGenError(f"unknown encoder '{choice}'; choose one of {', '.join(CHOICES)}")
    names = list(ENCODERS) if choice in AUTO else [choice]
    if choice == "auto" and request.encoding.bits < EXACT_BELOW_BITS and \
            ENCODERS["threshold"].supports(request.activation):
        names = ["threshold"]
    act = request.activation[0] if request.activation else "identity"
    supported = [ENCODERS[n] for n in names if ENCODERS[n].supports(request.activation)]
    if not supported:
        raise MCUGenError(f"{where}: the {choice} encoder cannot realize activation {act} "
                          f"({ENCODERS[choice].realizes}); use --encoder lut or auto")
    built = [p for p in (e.build(request) for e in supported) if p is not None]
    if not built:
        raise MCUGenError(f"{where}: no {'' if choice in AUTO else choice + ' '}encoder realizes "
                          f"activation {act} within a code error of {request.max_code_error}; "
                          f"allow --max-code-error 1 or use --encoder threshold for a monotone one")
    parts = choose(built, request.elements, small=choice == "auto-small")
    return parts.consts, parts.params, parts.info


def encode(step, acc, rows):
    """The reference of a step's encoder: int64 accumulators -> codes."""
    return ENCODERS[step.params["encoder"]].run(step.params, step.consts, acc, rows)
