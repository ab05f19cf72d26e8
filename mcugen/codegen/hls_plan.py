"""The hls target's plan of a Schedule: exact ap_int widths and how each MAC layer is built.

Everything the HLS templates print comes from here or from the Schedule:
- every buffer's value range, propagated step by step (codes of an encoding, accumulators up to
  the bound the lowering proved), gives its `ap_uint`/`ap_int` width;
- a MAC layer's weights as a ROM of b-bit codes plus a decode table (or the decoded values for
  a uniform 8-bit grid), its input decode table, bias and accumulator at their exact widths;
- how a product of two codes is realized: a product ROM indexed by both codes (no multiplier),
  a fabric multiply of narrow decoded operands, or a DSP multiply (the target keeps the ROM of
  the decoded operands, product_rom_plan, where the estimate finds it cheaper);
- the reuse factor: a layer of K products per output runs `lanes` multipliers for
  `chunks = ceil(K / lanes)` pipelined iterations per output.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from mcugen.lower.fixedpoint import smallest_int_dtype, unpack_codes
from mcugen.ops import step_op
from mcugen.ops._mac import PRODUCT_ENTRY_BYTES

MAX_UNROLL = 4096         # Vitis HLS gives up on loop nests that unroll beyond about this
FABRIC_MAX_BITS = 10      # Vivado maps a multiply whose operands are this narrow to LUTs
MAC_KINDS = ("conv2d", "dense")
PRODUCT_ROM_MAX = 1 << 16   # entries; larger ROMs never beat a multiply, so are not even built


def signed_bits(lo: int, hi: int) -> int:
    """Bits of the smallest two's complement type holding [lo, hi]."""
    need = max(int(hi).bit_length(), (-int(lo) - 1).bit_length() if lo < 0 else 0)
    return need + 1


def ap_type(lo: int, hi: int) -> str:
    """The narrowest ap_uint/ap_int holding every integer in [lo, hi]."""
    if lo >= 0:
        return f"ap_uint<{max(1, int(hi).bit_length())}>"
    return f"ap_int<{signed_bits(lo, hi)}>"


def type_bits(ap: str) -> int:
    return int(ap.split("<")[1].rstrip(">"))


def array_type(values: np.ndarray) -> str:
    values = np.asarray(values, dtype=np.int64)
    return ap_type(int(values.min(initial=0)), int(values.max(initial=0)))


def buffer_ranges(schedule) -> dict:
    """buffer name -> (lo, hi) of the integers it can hold, from what its producer computes."""
    ranges = {}
    code_min = -schedule.input["B"] if schedule.input["signed"] else 0
    ranges[schedule.input["buffer"]] = (code_min, schedule.input["B"])
    for step in schedule.steps:
        ranges[step.output] = step_output_range(step, [ranges[name] for name in step.inputs],
                                                schedule.buffers[step.output].dtype)
    for buf in schedule.buffers.values():        # a reshape's alias holds its root's values
        if buf.alias_of and buf.name not in ranges:
            ranges[buf.name] = ranges.get(buf.alias_of, dtype_range(buf.dtype))
    return ranges


def step_output_range(step, input_ranges, dtype) -> tuple:
    p = step.params
    if p.get("output_acc"):
        bound = int(step.info["acc_bound"])
        return (-bound, bound)
    if "levels_max" in p:                  # the values of the codes' levels (levels storage)
        return (p["levels_min"], p["levels_max"])
    if "encoder" in p and "code_max" in p:
        return (p["code_min"], p["code_max"])
    known = step_op(step.kind).step_value_range(step, list(input_ranges))
    return known or dtype_range(dtype)      # what the C targets assume: the whole type


def dtype_range(dtype: str) -> tuple:
    info = np.iinfo(dtype)
    return (int(info.min), int(info.max))


@dataclass
class MacPlan:
    """One conv2d/dense layer as the HLS kernel builds it."""
    k: int                  # products per output (input channels of a group x taps)
    lanes: int              # multipliers (or product ROM reads) working in parallel
    chunks: int             # pipelined iterations per output: ceil(k / lanes)
    ragged: int             # 1 when k is not a multiple of lanes (the last chunk is partial)
    multiply: str           # "rom" (product ROM), "fabric" or "dsp"
    weight_rom: np.ndarray  # per output channel, k entries: codes or decoded weights
    weight_t: str
    decode_w: np.ndarray | None   # code -> decoded weight (or product ROM row), None: identity
    decode_w_t: str
    decode_x: np.ndarray | None   # input code -> decoded value (or product ROM column)
    x_offset: int
    window_t: str           # decoded input values (or product ROM column indexes), decode_x's type
    product: np.ndarray | None
    product_t: str
    prod_t: str             # one lane's product (a ROM entry, or decoded weight x input)
    bias_t: str
    acc_t: str
    acc_bits: int
    rom_copies: int = 1     # product ROM copies: every lane reads it, two lanes per dual-port copy
    negate_w: np.ndarray | None = None   # weight code -> 1 where its ROM row is stored negated

    @property
    def operand_bits(self) -> tuple:
        """(weight, input) widths entering a multiplier."""
        return type_bits(self.decode_w_t), type_bits(self.window_t)

    def as_dict(self) -> dict:
        return dict(vars(self))


def narrowest(values):
    """The array in the narrowest C integer type (the csim copy of a ROM: constants.h.j2)."""
    return None if values is None else values.astype(smallest_int_dtype(values))


def mac_plan(step, reuse: int, x_range: tuple) -> MacPlan:
    """`x_range`: the integers the layer's input buffer holds (its codes)."""
    p = step.params
    rows = int(step.consts["bias"].size)
    k = int(p.get("weights_per_channel", p.get("in_features")))
    lanes = max(1, min(k, MAX_UNROLL, -(-k // max(1, reuse))))
    chunks = -(-k // lanes)
    by_index = PRODUCT_ENTRY_BYTES if p.get("product") else 1   # byte offsets -> indexes
    if p.get("w_codes"):
        rom = unpack_codes(step.consts["weight_codes"], rows, p["w_row"], p["w_bits"], p["w_row_bytes"])
        decode_w = step.consts["dw"].astype(np.int64) // by_index
    else:
        rom, decode_w = step.consts["weights"].astype(np.int64).reshape(rows, -1) // by_index, None
    decode_x = None if p.get("identity_dx") else step.consts["dx"].astype(np.int64) // by_index
    w_values = decode_w if decode_w is not None else rom
    x_values = decode_x if decode_x is not None else np.array(x_range)    # identity: the codes
    product = step.consts["pt"].astype(np.int64) if p.get("product") else None
    operand_bits = (type_bits(array_type(w_values)), type_bits(array_type(x_values)))
    if product is not None:
        multiply = "rom"
    elif max(operand_bits) <= FABRIC_MAX_BITS:
        multiply = "fabric"
    else:
        multiply = "dsp"
    bound = int(step.info["acc_bound"])
    acc_bits = signed_bits(-bound, bound)
    return MacPlan(k=k, lanes=lanes, chunks=chunks, ragged=int(k % lanes != 0), multiply=multiply,
                   weight_rom=narrowest(rom.reshape(-1)), weight_t=array_type(rom),
                   decode_w=narrowest(decode_w), decode_w_t=array_type(w_values),
                   decode_x=narrowest(decode_x), x_offset=int(p.get("x_offset", 0)),
                   window_t=array_type(x_values),
                   product=narrowest(product), product_t=array_type(product) if product is not None else "",
                   prod_t=(array_type(product) if product is not None
                           else f"ap_int<{operand_bits[0] + operand_bits[1] + 1}>"),
                   bias_t=array_type(step.consts["bias"]),
                   acc_t=f"ap_int<{acc_bits}>", acc_bits=acc_bits, rom_copies=-(-lanes // 2))


def product_rom_plan(plan: MacPlan, x_range: tuple) -> MacPlan | None:
    """The layer with its products read from a ROM of every (weight code, input code) pair,
    P[i][j] = Dw[i] * Dx[j]: the very products the multiplier computes, so bit-exact by
    construction. A weight's ROM entry becomes its row start (plus the input table's offset) and
    the window holds the input codes, as in the lowering's product tables. None where the layer
    has no weight decode table (its codes are its values: 8-bit uniform grids, where the ROM
    would have 64 K entries), or where code 0 does not decode to 0 (the window's zero padding
    must read a zero product). An input without a table (uniform) has its codes as values."""
    if plan.multiply == "rom" or plan.decode_w is None:
        return None
    if plan.decode_x is None:
        lo, hi = x_range
        dx, offset = np.arange(lo, hi + 1, dtype=np.int64), -int(lo)
    else:
        dx, offset = plan.decode_x.astype(np.int64), plan.x_offset
    if not 0 <= offset < len(dx) or dx[offset] != 0 or len(plan.decode_w) * len(dx) > PRODUCT_ROM_MAX:
        return None
    table = np.outer(plan.decode_w.astype(np.int64), dx).reshape(-1)
    rows = np.arange(len(plan.decode_w), dtype=np.int64) * len(dx) + offset
    return replace(plan, multiply="rom", decode_w=narrowest(rows), decode_w_t=array_type(rows),
                   decode_x=None, x_offset=0, window_t=ap_type(*x_range),
                   product=narrowest(table), product_t=array_type(table), prod_t=array_type(table))


def fold_signs(plan: MacPlan, x_range: tuple) -> MacPlan:
    """The product ROM with each row stored once up to its sign: a weight grid symmetric about
    zero (sign-magnitude codes) has P[-w] = -P[w] entry for entry, so the ROM keeps one row per
    magnitude (about half the entries, non-negative where the inputs are, hence a bit narrower)
    and a code's `negate_w` bit subtracts its product instead of adding it: the same integers.
    Rows are compared over every index the window can hold (its values and the padding's 0);
    the plan comes back unchanged when nothing folds or a row would leave the table."""
    if plan.product is None or plan.negate_w is not None:
        return plan
    reach = window_values(plan, x_range)
    table, starts = plan.product.astype(np.int64), plan.decode_w.astype(np.int64)
    if starts.min() + reach[0] < 0 or starts.max() + reach[-1] >= table.size:
        return plan
    span = np.arange(reach[0], reach[-1] + 1)
    rows, keep, negate = {}, [], np.zeros(len(starts), dtype=np.int64)
    new_starts = np.zeros(len(starts), dtype=np.int64)
    for code, start in enumerate(starts):
        row = table[start + span]
        nonzero = row[np.flatnonzero(row)]
        negate[code] = int(nonzero.size > 0 and nonzero[0] < 0)
        key = tuple(-row if negate[code] else row)
        if key not in rows:
            rows[key] = len(keep)
            keep.append(np.array(key, dtype=np.int64))
        new_starts[code] = rows[key] * len(span) - reach[0]
    if len(keep) == len(starts) or not negate.any():
        return plan
    folded = np.concatenate(keep)
    signed = np.concatenate([folded, -folded])
    return replace(plan, decode_w=narrowest(new_starts), decode_w_t=array_type(new_starts),
                   product=narrowest(folded), product_t=array_type(folded),
                   prod_t=array_type(signed), negate_w=narrowest(negate))


def window_values(plan: MacPlan, x_range: tuple) -> np.ndarray:
    """The sorted distinct values a lane adds to its row start: the window's (decoded) inputs
    and the padding's 0."""
    values = plan.decode_x if plan.decode_x is not None else np.arange(x_range[0], x_range[1] + 1)
    return np.unique(np.append(np.asarray(values, dtype=np.int64), 0))


def readers(schedule) -> dict:
    """root buffer -> the arrays its readers take, in order: one per (step, input) that reads
    it, so a step reading one buffer twice (Add(x, x)) counts twice."""
    roots = {b.name: (b.alias_of or b.name) for b in schedule.buffers.values()}
    out = {}
    for step in schedule.steps:
        for i, name in enumerate(step.inputs):
            out.setdefault(roots[name], []).append(copy_name(roots[name], step.name, i))
    return out


def copy_name(root: str, step: str, index: int) -> str:
    """The copy of `root` that input `index` of `step` reads when the buffer has several readers."""
    return f"{root}_to_{step}_{index}"
