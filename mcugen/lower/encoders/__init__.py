"""Encoders: from an integer accumulator to the next layer's code, integer-only.

The realizations (one module each, registered in ENCODERS) share the seam in base.py. A step
that encodes calls `encoder_step_parts` with its request; the reference runs `encode`.
`auto` (the default) takes, per step, among the realizations within the error budget, the one
with the least table bytes + encoded elements per inference x instructions per element
(an instruction per inference weighs as much as a byte of flash). On grids of fewer than 7
bits a one-code error is more than 1/64 of the range while the exact threshold table is at most
63 int32 per row: there `auto` keeps an exact encoder when the activation allows it, the first
of the target's `exact_encoders` that builds (bracket, then threshold, on processors: one
multiply and one compare where the threshold search takes a branch per bit; threshold alone on
an FPGA, where the search is a few comparators and bracket's multiply a DSP). Bracket is never
weighed by auto on finer grids: it is only taken there when asked for.
`auto-small` (what the lowering falls back to when the model does not fit the board) takes the
least table bytes, then the fewest instructions.
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np

from mcugen.errors import MCUGenError
from mcugen.lower.encoders.bracket import Bracket
from mcugen.lower.encoders.base import FLOAT_CACHE, BoundedCache, EncodeRequest, EncoderParts
from mcugen.lower.encoders.lut import Lut
from mcugen.lower.encoders.pade import MAGNITUDES, Pade, fitted_rational, fixed_coefficients, power_table
from mcugen.lower.encoders.threshold import Threshold
from mcugen.lower.fixedpoint import stores_levels

ENCODERS = {e.name: e for e in (Threshold(), Lut(), Pade(), Bracket())}
WEIGHED = ("threshold", "lut", "pade")     # what auto and auto-small choose among
EXACT_ENCODERS = ("threshold",)            # auto's choice on coarse grids, unless a target says
AUTO = ("auto", "auto-small")
CHOICES = AUTO + tuple(ENCODERS)
BYTES_PER_INSTRUCTION = 1.0      # auto's exchange rate between flash and run time
EXACT_BELOW_BITS = 7             # auto keeps exact encoders on coarser grids


def choice_key(elements: int, small=False):
    """(table bytes, instructions per element) -> what `choose` minimizes; it never decreases
    when either grows, so a lower bound of both bounds the key."""
    if small:
        return lambda table_bytes, ops: (table_bytes, ops)
    return lambda table_bytes, ops: (table_bytes + BYTES_PER_INSTRUCTION * elements * ops, table_bytes)


def choose(candidates: list, elements: int, small=False) -> EncoderParts:
    key = choice_key(elements, small)
    return min(candidates, key=lambda p: key(p.table_bytes, p.ops_per_element))


def encoder_step_parts(request: EncodeRequest, choice: str = "auto", where: str = "this layer",
                       exact_encoders=EXACT_ENCODERS):
    """(consts, params, info) of the step's encoder: `choice` is auto or an encoder's name;
    `exact_encoders`, auto's exact encoders on coarse grids by preference (module doc)."""
    if choice not in CHOICES:
        raise MCUGenError(f"unknown encoder '{choice}'; choose one of {', '.join(CHOICES)}")
    stored = request.encoding
    if stores_levels(stored):      # choose the code as ever, then write its level (store_levels)
        request = dataclasses.replace(request, encoding=stored.source)
    parts = None
    if choice == "auto" and request.encoding.bits < EXACT_BELOW_BITS:
        parts = first_built(request, exact_encoders)
    if parts is None:
        parts = chosen_parts(request, choice, where)
    info = parts.info
    if stores_levels(stored):
        store_levels(parts.consts, parts.params, stored)
        info.update(table_bytes=parts.table_bytes, act_storage="levels",
                    encoder_ops=parts.ops_per_element + parts.params["enc_levels"])
    return parts.consts, parts.params, info


def first_built(request, names):
    """The parts of the first of `names` that supports the activation and builds, or None."""
    for name in names:
        if ENCODERS[name].supports(request.activation):
            parts = cached_build(ENCODERS[name], request)
            if parts is not None:
                return parts
    return None


def chosen_parts(request, choice, where):
    """The parts `choice` (auto, auto-small or an encoder's name) takes on its own terms."""
    names = list(WEIGHED) if choice in AUTO else [choice]
    act = request.activation[0] if request.activation else "identity"
    supported = [ENCODERS[n] for n in names if ENCODERS[n].supports(request.activation)]
    if not supported:
        raise MCUGenError(f"{where}: the {choice} encoder cannot realize activation {act} "
                          f"({ENCODERS[choice].realizes}); use --encoder lut or auto")
    built = build_all(request, supported, choice == "auto-small" if choice in AUTO else None)
    if not built and choice not in AUTO and ENCODERS[choice].unbuilt:
        raise MCUGenError(f"{where}: {ENCODERS[choice].unbuilt}")
    if not built:
        raise MCUGenError(f"{where}: no {'' if choice in AUTO else choice + ' '}encoder realizes "
                          f"activation {act} within a code error of {request.max_code_error}; "
                          f"allow --max-code-error 1 or use --encoder threshold for a monotone one")
    return choose(built, request.elements, small=choice == "auto-small")


def store_levels(consts, params, stored):
    """An encoder of `stored.source`'s codes made to write their values (DESIGN section 1,
    levels storage), the encoder's own way (Encoder.store_levels): enc_levels 1 when a wrapper
    reads enc_levels[code - code_min] after the snippet's code. levels_min/max: what the
    output can hold."""
    values = stored.written().astype(stored.ctype)
    wrapper = ENCODERS[params["encoder"]].store_levels(consts, params, values)
    params.update(enc_levels=int(wrapper), levels_min=int(values.min()), levels_max=int(values.max()))


def build_all(request, encoders, small=None) -> list:
    """The parts of every encoder within budget, in registry order (choose's tie-break). For
    auto (`small` False) and auto-small (True), the encoders whose search is cheap are built
    first, and the others get a bar, the best key so far: they may stop as soon as they
    cannot beat it (Encoder.build's `beaten`)."""
    key = None if small is None else choice_key(request.elements, small)
    parts = {}
    for encoder in sorted(encoders, key=lambda e: e.search_cost(request)):
        bar = None
        if key is not None and parts:
            bar = (small, request.elements, min(key(p.table_bytes, p.ops_per_element)
                                                for p in parts.values()))
        built = cached_build(encoder, request, bar)
        if built is not None:
            parts[encoder.name] = built
    return [parts[e.name] for e in encoders if e.name in parts]


def beaten_by(bar):
    """Encoder.build's `beaten` for a bar (small, elements, best key): bytes and instructions
    lose when their key is strictly greater (`choose` keeps the first of equal keys)."""
    small, elements, best = bar
    key = choice_key(elements, small)
    return lambda table_bytes, ops: key(table_bytes, ops) > best


# Built parts by (encoder, request): a model that does not fit its board is lowered again with
# the same requests. A search a bar stopped is kept under that bar only. Bounded by tables.
PARTS_CACHE = BoundedCache(64 << 20, lambda parts: parts.table_bytes if parts is not None else 0)


def cached_build(encoder, request, bar=None):
    """encoder.build(request, beaten_by(bar)), as a fresh copy (callers extend its consts and
    params)."""
    full = (encoder.name, request.key())
    found, parts = PARTS_CACHE.lookup(full)
    if not found and bar is not None:
        found, parts = PARTS_CACHE.lookup(full + (bar,))
    if not found:
        parts = encoder.build(request, beaten_by(bar) if bar is not None else None)
        PARTS_CACHE.store(full if parts is not None or bar is None else full + (bar,), parts)
    return _copy(parts)


def clear_cache():
    """Forget built encoders (bench/compile_time.py times every build from scratch)."""
    PARTS_CACHE.clear()
    FLOAT_CACHE.clear()
    fitted_rational.cache_clear()
    fixed_coefficients.cache_clear()
    power_table.cache_clear()
    MAGNITUDES.clear()


def _copy(parts):
    if parts is None:
        return None
    return EncoderParts({k: v.copy() for k, v in parts.consts.items()}, copy.deepcopy(parts.params),
                        parts.error, parts.ops_per_element, dict(parts.extra_info))


def encode(step, acc, rows):
    """The reference of a step's encoder: int64 accumulators -> codes (or the values of their
    levels: store_levels)."""
    codes = ENCODERS[step.params["encoder"]].run(step.params, step.consts, acc, rows)
    if step.params.get("enc_levels"):
        return step.consts["enc_levels"].astype(np.int64)[codes - step.params["code_min"]]
    return codes
