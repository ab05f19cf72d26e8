"""Resource and latency estimates of the generated HLS design, before synthesis.

A model, stated here and in docs/hls.md, not a synthesis result:
- multipliers: `lanes` per MAC layer. A product ROM needs none (its copies are memories, one
  per two lanes); operands of at most FABRIC_MAX_BITS bits become LUTs (about wbits x xbits
  each); wider ones take ceil(wbits / dsp_a) x ceil(xbits / dsp_b) DSP slices (the board's DSP
  port widths). Where a layer could read its products from a ROM of its decoded operands
  instead (hls_plan.product_rom_plan), the cheaper of the two wins: `cheaper` sums each
  resource as a share of the board's budget.
- memories: a ROM or buffer split into `banks` (cyclic partition: two reads per cycle per
  dual-port bank) takes, per bank, LUTs (64 x 1 bit per LUT6) when it holds at most
  LUTRAM_BITS bits, else the fewest BRAM_18K in any aspect ratio (16K x 1 ... 512 x 36).
  Activation buffers between layers are ping-pong (x2) under DATAFLOW. A memory written at
  run time that sits in LUTs is distributed RAM (`ram`): LUTRAM as well as LUT, 48 bits a
  LUT as RAM32M/RAM64M.
- logic: an adder tree of lanes - 1 adders of the accumulator's width, the accumulator, and
  the encoder (threshold: one comparator per search step; lut: an index multiply on DSPs;
  pade: the same plus one integer division; bracket, when asked for: a 16-bit multiply, a
  cell ROM and one comparator); registers about one per adder-tree bit.
- latency: the loop structure, with every pipelined loop at II = 1. A conv output pixel gathers
  its window (k cycles) and then each output channel takes `chunks` cycles plus the pipeline
  depth; other layers take one cycle per element read. Layers overlap under DATAFLOW, so a
  new input can start every `interval` (the slowest layer) cycles.
"""
from __future__ import annotations

import math

import numpy as np

from mcugen.codegen.hls_plan import type_bits
from mcugen.ops import step_op

LUTRAM_BITS = 1024
# lutram: the LUTs of `lut` used as memory (SLICEM distributed RAM and SRL shift registers), a
# budget of its own (a Zynq-7020 has 17,400 of its 53,200 LUTs in SLICEMs)
BUDGET_KEYS = ("dsp", "lut", "ff", "bram_18k", "lutram")
# true dual-port aspect ratios of an 18 Kb block (512 x 36 has one read port: not for a bank
# that serves two reads a cycle)
BRAM18_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18))
ENCODER_DSP = {"threshold": 0, "lut": 4, "pade": 6,   # a 32 x 32 multiply: about 4 DSP48E2
               "bracket": 1}                          # 16 x 15 bits: one
ENCODER_LUT = {"lut": 120, "pade": 1200,      # index arithmetic; pade adds a 32-bit divider,
               "bracket": 120}                # bracket a comparator after its table
ENCODER_DEPTH = {"threshold": 4, "lut": 5, "pade": 40, "bracket": 5}


def bram18(depth: int, width: int) -> int:
    return min(math.ceil(depth / d) * math.ceil(width / w) for d, w in BRAM18_SHAPES)


def banked(entries: int, banks: int) -> tuple:
    """(banks, entries a bank holds): at least one bank, at most one entry a bank."""
    banks = max(1, min(banks, entries))
    return banks, math.ceil(entries / banks)


def fits_luts(entries: int, width: int, banks: int = 1) -> bool:
    """Whether each bank is small enough for LUTs (LUTRAM_BITS), where a block would waste."""
    return banked(entries, banks)[1] * width <= LUTRAM_BITS


def lut_memory(entries: int, width: int, banks: int = 1, writable: bool = False) -> dict:
    """An array of `entries` x `width` bits in `banks` banks held in LUTs: a ROM is logic
    (constant LUT contents, any slice: 64 x 1 bit a LUT6); a memory written at run time (a
    buffer) is distributed RAM (ram_luts), so its LUTs are also LUTRAM."""
    banks, depth = banked(entries, banks)
    if writable:
        luts = banks * ram_luts(depth, width)
        return {"bram_18k": 0, "lut": luts, "lutram": luts}
    return {"bram_18k": 0, "lut": banks * math.ceil(depth / 64) * width}


def block_memory(entries: int, width: int, banks: int = 1) -> dict:
    """The same array in BRAM_18K blocks."""
    banks, depth = banked(entries, banks)
    return {"bram_18k": banks * bram18(depth, width), "lut": 0}


def memory(entries: int, width: int, banks: int = 1) -> dict:
    """BRAM_18K and LUTs of a ROM of `entries` x `width` bits in `banks` banks: LUTs up to
    LUTRAM_BITS a bank."""
    if fits_luts(entries, width, banks):
        return lut_memory(entries, width, banks)
    return block_memory(entries, width, banks)


def ram(entries: int, width: int, banks: int = 1) -> dict:
    """A memory written at run time (a buffer, not a ROM), LUTs (distributed RAM) up to
    LUTRAM_BITS a bank."""
    if fits_luts(entries, width, banks):
        return lut_memory(entries, width, banks, writable=True)
    return {**block_memory(entries, width, banks), "lutram": 0}


def ram_luts(depth: int, width: int) -> int:
    """LUTs of a distributed RAM written on one port and read on another (simple dual port): a
    SLICEM's four LUTs as RAM32M (32 x 6 bits) or RAM64M (64 x 3 bits), one of them holding the
    write port's address, so 48 bits a LUT rather than a ROM's 64."""
    if depth <= 32:
        return 4 * math.ceil(width / 6)
    return math.ceil(depth / 64) * 4 * math.ceil(width / 3)


def varying_bits(values: np.ndarray, width: int) -> int:
    """Bits of a `width`-bit table that differ between its entries: a small table read as logic
    (partitioned into registers or LUTs) needs no LUT for an output bit that is constant (row
    starts that are multiples of 16 leave their low 4 bits 0)."""
    codes = np.asarray(values, dtype=np.int64) & ((1 << width) - 1)
    if codes.size == 0:
        return 0
    return int(np.bitwise_or.reduce(codes ^ codes[0])).bit_count()


def _add(total: dict, part: dict) -> dict:
    for key, value in part.items():
        total[key] = total.get(key, 0) + value
    return total


def encoder_cost(step, acc_bits: int) -> dict:
    p = step.params
    name = p.get("encoder")
    if p.get("output_acc") or name is None:
        return {}
    if name == "threshold":
        steps = len(p.get("enc_steps", [])) + 1
        cost = {"lut": steps * acc_bits}
    else:
        cost = {"lut": ENCODER_LUT.get(name, 120), "dsp": ENCODER_DSP.get(name, 2)}
    for key in p.get("enc_consts", []):
        table = step.consts[key]
        _add(cost, memory(table.size, table.itemsize * 8))
    return cost


def multiplier_cost(plan, board) -> dict:
    """DSP or LUT of one lane's multiplier (none for a product ROM: its copies are memories)."""
    wb, xb = plan.operand_bits
    if plan.multiply == "dsp":
        # the wider operand on the wider port; an unsigned one needs a sign bit there
        wide, narrow = sorted((wb + _unsigned(plan.decode_w_t), xb + _unsigned(plan.window_t)),
                              reverse=True)
        return {"dsp": math.ceil(wide / board["dsp_a_bits"]) * math.ceil(narrow / board["dsp_b_bits"])}
    return {"lut": wb * xb} if plan.multiply == "fabric" else {}


def device_share(cost: dict, board) -> float:
    """A cost in one currency: each resource as a share of the board's budget, summed (on a part
    with 220 DSPs and 53,200 LUTs, one DSP weighs as much as 242 LUTs)."""
    return sum(cost.get(key, 0) / board[key] for key in BUDGET_KEYS if board.get(key))


def cheaper(step, plan, alternative, board):
    """`plan` or `alternative` (None: there is none), whichever costs the smaller share of the
    board; a tie keeps `plan` (the multiply: no ROM copies to place)."""
    if alternative is None:
        return plan
    shares = [device_share(mac_cost(step, p, board), board) for p in (plan, alternative)]
    return alternative if shares[1] < shares[0] else plan


def mac_cost(step, plan, board) -> dict:
    """DSP, LUT, FF, BRAM_18K and cycles of one conv2d/dense layer."""
    wb, xb = plan.operand_bits
    # weights and window: `lanes` cyclic banks (the pragmas' factor); tables read by every lane:
    # one copy per two lanes
    lanes, read_banks = plan.lanes, math.ceil(plan.lanes / 2)
    cost = {"dsp": 0, "lut": 0, "ff": 0, "bram_18k": 0}
    for key, value in multiplier_cost(plan, board).items():
        cost[key] += lanes * value
    cost["mac_dsp"] = cost["dsp"]                # the multipliers' own (encoders add theirs)
    _add(cost, memory(plan.weight_rom.size, _bits(plan.weight_t), lanes))
    for table, kind in ((plan.decode_w, plan.decode_w_t), (plan.product, plan.product_t)):
        if table is not None:        # read by every lane: one copy per two lanes
            for _ in range(read_banks):
                _add(cost, memory(table.size, _bits(kind)))
    if plan.decode_x is not None:
        _add(cost, memory(plan.decode_x.size, _bits(plan.window_t)))
    _add(cost, memory(plan.k, _bits(plan.window_t), lanes))
    _add(cost, memory(step.consts["bias"].size, _bits(plan.bias_t)))
    cost["lut"] += lanes * plan.acc_bits          # adder tree and accumulator
    cost["ff"] += lanes * (plan.acc_bits + wb + xb)
    _add(cost, encoder_cost(step, plan.acc_bits))
    cost["cycles"] = mac_cycles(step, plan)
    return cost


def mac_cycles(step, plan) -> int:
    p = step.params
    depth = 3 + math.ceil(math.log2(max(2, plan.lanes))) + \
        ENCODER_DEPTH.get(p.get("encoder"), 0) * (not p.get("output_acc"))
    per_output = plan.chunks + depth
    if step.kind == "dense":
        return plan.k + p["out_features"] * per_output
    pixels = p["group"] * p["out_h"] * p["out_w"]
    return pixels * (plan.k + p["out_c_per_group"] * per_output)


def stream_cost(step, schedule, acc_bits: int = 32) -> dict:
    """A layer without multiplies: one element read per cycle, its encoder, its tables."""
    reads = step_op(step.kind).elements_read(step, schedule)
    cost = {"dsp": 0, "lut": 64, "ff": 64, "bram_18k": 0, "cycles": reads + 8}
    _add(cost, encoder_cost(step, acc_bits))
    for key, table in step.consts.items():
        if key not in step.params.get("enc_consts", []):
            _add(cost, memory(table.size, table.itemsize * 8))
    return cost


def buffer_cost(size: int, bits: int, banks: int, copies: int = 1) -> dict:
    """An activation buffer between two layers: ping-pong under DATAFLOW; a buffer with
    several readers adds one copy per reader and the pass that fills them."""
    one = ram(size, bits, banks)
    cost = {k: 2 * v * (copies + (copies > 1)) for k, v in one.items()}
    cost["cycles"] = size if copies > 1 else 0
    return cost


def _unsigned(ap: str) -> int:
    return int(ap.startswith("ap_uint"))


def _bits(ap: str) -> int:
    return type_bits(ap) if ap else 0


def totals(layers: list) -> dict:
    out = {k: int(np.sum([layer.get(k, 0) for layer in layers])) for k in BUDGET_KEYS}
    cycles = [layer.get("cycles", 0) for layer in layers]
    out["latency_cycles"] = int(sum(cycles))
    out["interval_cycles"] = int(max(cycles, default=0))
    return out
