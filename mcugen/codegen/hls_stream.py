"""The `--io stream` design: every layer a process on hls::stream of pixels (one beat carries
every channel of one pixel, raster order), the top ports AXI-Stream of single codes in
channels-last order.

What a process is, per step of the Schedule:
- `conv` (conv2d, any groups: each output channel's products read its group's window): a
  line buffer of the last R = (k_h - 1) * dil_h + 1 input rows and a window register; after
  reading input pixel (iy, ix) it emits every output pixel whose last needed input pixel that
  is (`row_emit`, `col_emit`: how strides and padding fall, computed here), each output
  gathering its window (k_w cycles: the R rows are banks read in parallel) and accumulating
  `oiters x kchunks` pipelined iterations of `opar` output channels x `klanes` products (the
  product a multiply, fabric or DSP, or a product ROM, folded to one row per weight magnitude
  or not: `variants`, chosen across layers by `rebalance`);
- `dense`: collects its input vector, then the same MAC loop;
- `add`: both operands as streams, `cpar` channels a cycle;
- `pool` (max/average pools whose windows tile the input: stride = kernel, no padding): row
  accumulators updated as pixels arrive, `cpar` channels a cycle, each output emitted with its
  last input pixel;
- `window_pool` (any other max/average pool: overlapping windows, padding, dilation): the
  conv's line buffer and emission tables, each output reduced over its window in k_w cycles;
- `concat` (along channels): one beat of each input a cycle, side by side in the output beat;
- `fork`: a stream read by several layers is copied to one stream per reader (a stream has
  one reader under DATAFLOW);
- `whole`: any other step (one that needs its whole input: a transpose, a softmax over
  everything, a concat off the channels) buffers its whole input, runs the parallel design's
  loops and streams its output (correct for every kind; no overlap inside the step);
- `read_input` / `write_output`: the AXI-Stream ports, one code a cycle.

Each layer's parallelism is chosen so that its cycles per frame meet one target interval
(`interval_target`); the timing every process follows (`program` in hls_sim.py) is the one its
template realizes, and the same numbers give the estimate and the cycle simulation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from mcugen.codegen import hls_estimate as estimate
from mcugen.codegen import hls_sim
from mcugen.codegen.hls_plan import (MAC_KINDS, MAX_UNROLL, ap_type, buffer_ranges, mac_plan,
                                     fold_signs, narrowest, product_rom_plan, type_bits)

GATHER_FREE_DEPTH = 3          # MAC pipeline: read, multiply (or ROM), first adder level
ADD_DEPTH = 3                  # decode reads, add, encoder input register
FIFO_MIN = 2                   # Vitis's default stream depth
POOL_KINDS = ("maxpool", "avgpool")
WINDOWED = hls_sim.WINDOWED     # processes that emit by the emission tables


@dataclass
class Stream:
    """One FIFO between two processes: `beats` per frame of `channels` codes of `bits` each."""
    name: str
    root: str
    producer: str
    consumer: str
    channels: int
    beats: int
    bits: int
    depth: int = FIFO_MIN

    @property
    def beat_bits(self) -> int:
        return self.channels * self.bits

    @property
    def elements(self) -> int:
        """Codes per frame (a whole-tensor buffer's size)."""
        return self.channels * self.beats


@dataclass
class Process:
    """One DATAFLOW process: its kind, streams, the numbers its template and the simulation
    share (`t`), and its estimated resources."""
    name: str
    kind: str
    step: str | None
    ins: list
    outs: list
    t: dict = field(default_factory=dict)
    cost: dict = field(default_factory=dict)


def geometry(shape, is_input: bool) -> tuple:
    """(channels, height, width) of a buffer as a stream: a pixel per beat, channels packed. A
    vector is one beat of every element, except the network's input, one element a beat."""
    dims = [int(d) for d in shape]
    if len(dims) == 3:
        return tuple(dims)
    if len(dims) == 2:
        return (dims[0], 1, dims[1])
    size = int(np.prod(dims)) if dims else 1
    return (1, 1, size) if is_input else (size, 1, 1)


def root_geometry(schedule, roots, in_root) -> dict:
    """Each root buffer's stream geometry: the (C, H, W) its windowed readers (conv, pool) or
    its windowed producer index it by, when they agree (their C kernels read c * H * W + y * W
    + x, so any shape of that size is that layout: an NHWC input of one channel is one); else
    its one reshaped view's; else its own shape's."""
    wanted, views = {}, {}
    for step in schedule.steps:
        p = step.params
        if step.kind == "conv2d" or step.kind in POOL_KINDS:
            c = p.get("in_c", p.get("channels"))
            wanted.setdefault(roots[step.inputs[0]], set()).add((c, p["in_h"], p["in_w"]))
            wanted.setdefault(roots[step.output], set()).add((p.get("out_c", c), p["out_h"], p["out_w"]))
        for name in step.inputs:
            views.setdefault(roots[name], set()).add(tuple(schedule.buffers[name].shape))
    geo = {}
    for n, b in schedule.buffers.items():
        if b.alias_of:
            continue
        want, seen = wanted.get(n, set()), views.get(n, set())
        if len(want) == 1 and int(np.prod(next(iter(want)))) == b.size:
            geo[n] = next(iter(want))
            continue
        shape = next(iter(seen)) if len(seen) == 1 else b.shape
        geo[n] = geometry(shape, n == in_root and len(shape) < 3)
    return geo


def emit_tables(p) -> tuple | None:
    """(row_emit, col_emit) of a windowed step: how many output rows (columns) complete with
    each input row (column), i.e. whose last in-bounds tap is there; None when an output's
    window lies wholly in the padding (the whole-tensor process takes that step)."""
    dh, dw = p.get("dil_h", 1), p.get("dil_w", 1)
    last_r = [min(oy * p["stride_h"] - p["pad_top"] + (p["k_h"] - 1) * dh, p["in_h"] - 1)
              for oy in range(p["out_h"])]
    last_c = [min(ox * p["stride_w"] - p["pad_left"] + (p["k_w"] - 1) * dw, p["in_w"] - 1)
              for ox in range(p["out_w"])]
    if min(last_r) < 0 or min(last_c) < 0:
        return None
    rows = np.bincount(last_r, minlength=p["in_h"])
    cols = np.bincount(last_c, minlength=p["in_w"])
    return rows.astype(np.int64), cols.astype(np.int64)


def emissions(row_emit, col_emit, out_w) -> np.ndarray:
    """Outputs emitted after each input pixel (raster order). Rows completing together (the
    bottom padding) follow the first of them at the end of that input row."""
    n = np.zeros((len(row_emit), len(col_emit)), dtype=np.int64)
    for iy, rows in enumerate(row_emit):
        if rows:
            n[iy] = col_emit
            n[iy, -1] += (rows - 1) * out_w
    return n.reshape(-1)


def root_of(schedule, step) -> str:
    b = schedule.buffers[step.inputs[0]]
    return b.alias_of or b.name


def native_kind(step, schedule, geo) -> str:
    """The process kind that streams `step`, or "whole"."""
    p = step.params
    out = geo[schedule.buffers[step.output].alias_of or step.output]
    ins = [geo[schedule.buffers[name].alias_of or name] for name in step.inputs]
    if step.kind == "dense":
        return "dense"
    if step.kind == "conv2d" and ins[0] == (p["in_c"], p["in_h"], p["in_w"]) \
            and out == (p["out_c"], p["out_h"], p["out_w"]) and emit_tables(p) is not None:
        return "conv"
    if step.kind == "add" and all(g == out for g in ins) and len(step.inputs) == 2 and \
            all(schedule.buffers[n].size == p.get("size") for n in step.inputs):
        return "add"
    if step.kind in POOL_KINDS and ins[0] == (p["channels"], p["in_h"], p["in_w"]) \
            and out == (p["channels"], p["out_h"], p["out_w"]):
        if tiles(p):
            return "pool"
        if emit_tables(p) is not None:
            return "window_pool"
    if step.kind == "concat" and channel_concat(p, ins, out):
        return "concat"
    return "whole"


def tiles(p) -> bool:
    """A pool whose windows tile the input, each pixel in at most one window and none in the
    padding (stride = kernel, or a single window along that axis, as a global pool's)."""
    return all((p[f"stride_{a}"] == p[f"k_{a}"] or p[f"out_{a}"] == 1) and p.get(f"dil_{a}", 1) == 1
               for a in "hw") and not any(p[k] for k in ("pad_top", "pad_left", "pad_bottom", "pad_right"))


def channel_concat(p, ins, out) -> bool:
    """A concat along the channels of streams of the same pixels (a vector is one pixel): each
    input's part of an output beat is one whole input beat."""
    return p["outer"] == 1 and all(g[1:] == out[1:] for g in ins) and \
        sum(g[0] for g in ins) == out[0] and \
        all(chunk == int(np.prod(g)) for chunk, g in zip(p["chunks"], ins))


@dataclass
class StreamMac:
    """A MAC layer's stream realization: `opar` output channels x `klanes` products a cycle,
    `oiters x kchunks` cycles per output pixel; the weights as a grid [oiters * kchunks][opar *
    klanes] (row t holds what every lane reads at iteration t: one bank per lane)."""
    mac: object              # hls_plan.MacPlan (tables, types, multiply)
    opar: int
    klanes: int
    oiters: int
    kchunks: int
    w_grid: np.ndarray
    rom_impl: str = "bram"   # a product ROM's storage: bram or lutram (LUTs)
    w_impl: str = "lutram"   # the weight banks' storage
    plans: tuple = ()        # the layer's alternatives (multiplies, product ROMs): rebalance's

    @property
    def lanes(self) -> int:
        return self.opar * self.klanes

    @property
    def iters(self) -> int:
        return self.oiters * self.kchunks

    @property
    def count_bits(self) -> int:
        """Bits of a count of 0..klanes lanes (the negated products of a folded ROM)."""
        return self.klanes.bit_length()


def weight_grid(rom: np.ndarray, oc: int, k: int, opar: int, klanes: int) -> np.ndarray:
    """Row o_blk * kchunks + j, column q * klanes + u: the weight of output channel o_blk * opar +
    q, product j * klanes + u (0 past the ends: those lanes add nothing)."""
    oiters, kchunks = -(-oc // opar), -(-k // klanes)
    full = np.zeros((oiters * opar, kchunks * klanes), dtype=np.int64)
    full[:oc, :k] = np.asarray(rom, dtype=np.int64).reshape(oc, k)
    grid = full.reshape(oiters, opar, kchunks, klanes).transpose(0, 2, 1, 3)
    return narrowest(grid.reshape(oiters * kchunks, opar * klanes))


def mac_shape(k: int, oc: int, t_mac: int, lane_w: float, enc_w: float) -> tuple:
    """(opar, klanes) of least weighted cost with oiters * kchunks <= t_mac; all parallel when
    nothing meets it."""
    best = None
    for klanes in range(1, min(k, MAX_UNROLL) + 1):
        kchunks = -(-k // klanes)
        if klanes > 1 and -(-k // (klanes - 1)) == kchunks:
            continue                       # fewer lanes give the same chunk count
        oiters = t_mac // kchunks
        if oiters < 1:
            continue
        opar = -(-oc // min(oc, oiters))
        if opar * klanes > MAX_UNROLL:
            continue
        cost = (opar * klanes * lane_w + opar * enc_w, -oiters * kchunks)
        if best is None or cost < best[0]:
            best = (cost, opar, klanes)
    if best is None:
        klanes = min(k, MAX_UNROLL)
        return max(1, min(oc, MAX_UNROLL // klanes)), klanes
    return best[1], best[2]


def lane_weights(step, plan, board) -> tuple:
    """Rough LUT-equivalents of one lane and one encoder, to weigh lanes against encoders."""
    mult = estimate.multiplier_cost(plan, board)
    lane = mult.get("lut", 0) + mult.get("dsp", 0) * board["lut"] / board["dsp"] + plan.acc_bits
    if plan.multiply == "rom" and plan.product is not None:
        lane += math.ceil(plan.product.size / 64) * type_bits(plan.product_t) / 2
    if plan.negate_w is not None:
        lane += negate_luts(plan)
    enc = estimate.encoder_cost(step, plan.acc_bits)
    return lane, enc.get("lut", 0) + enc.get("dsp", 0) * board["lut"] / board["dsp"] + 1


def negate_luts(m) -> int:
    """LUTs a lane of a sign-folded product ROM adds: its code's sign bit (a 1-bit ROM), the
    product inverted where the bit is set (an XOR a bit at the product's width: counted,
    though Vivado may fold it into the adder's LUT) and its share of the count of set bits
    (about a LUT a lane); adding that count to the sum is an adder per output channel
    (`negate_sum_luts`)."""
    return estimate.memory(m.negate_w.size, 1)["lut"] + type_bits(m.prod_t) + 1


def negate_sum_luts(sm) -> int:
    return sm.opar * sm.mac.acc_bits if sm.mac.negate_w is not None else 0


def mac_depth(step, lanes: int) -> int:
    p = step.params
    return GATHER_FREE_DEPTH + math.ceil(math.log2(max(2, lanes))) + \
        estimate.ENCODER_DEPTH.get(p.get("encoder"), 0) * (not p.get("output_acc"))


def stream_mac(step, x_range, t_mac: int, board) -> StreamMac:
    """The MAC layer at the parallelism that meets `t_mac` cycles per output, with the
    cheaper of its multiply and a ROM of its decoded products."""
    base = mac_plan(step, 1 << 30, x_range)
    rom = base if base.product is not None else product_rom_plan(base, x_range)
    options = [base]
    if base.multiply == "fabric":      # a part short of LUTs may have DSPs to spare
        options.append(replace(base, multiply="dsp"))
    if rom is not None:       # a folded ROM has half the rows but negates products: either may win
        options += [rom, fold_signs(rom, x_range)]
    options = list({id(plan): plan for plan in options}.values())
    p = step.params
    oc = p.get("out_features") or p["out_c"]
    best = None
    for plan in options:
        opar, klanes = mac_shape(plan.k, oc, t_mac, *lane_weights(step, plan, board))
        for impl in (("bram", "lutram") if plan.product is not None else ("bram",)):
            sm = build_mac(plan, oc, opar, klanes, impl)
            share = estimate.device_share(mac_resources(step, sm, board), board)
            if best is None or share < best[0]:
                best = (share, sm)
    best[1].plans = tuple(options)
    return best[1]


def variants(sm: StreamMac, oc: int) -> list:
    """The layer at the same lanes (so the same timing) each other way: a fabric or DSP
    multiply, a product ROM folded or not, in LUTs or BRAM."""
    key = lambda m, impl: (m.multiply, m.negate_w is None, impl if m.product is not None else "")
    out = []
    for plan in sm.plans:
        for impl in (("bram", "lutram") if plan.product is not None else ("bram",)):
            if key(plan, impl) != key(sm.mac, sm.rom_impl):
                out.append(replace(build_mac(plan, oc, sm.opar, sm.klanes, impl), plans=sm.plans))
    return out


def build_mac(plan, oc, opar, klanes, impl) -> StreamMac:
    lanes = opar * klanes
    mac = replace(plan, lanes=lanes, chunks=-(-plan.k // klanes), ragged=int(plan.k % klanes != 0),
                  rom_copies=-(-lanes // 2))
    grid = weight_grid(plan.weight_rom, oc, plan.k, opar, klanes)
    return StreamMac(mac, opar, klanes, -(-oc // opar), -(-plan.k // klanes), grid, impl)


def store(entries: int, width: int, banks: int, fpga, writable: bool = False) -> dict:
    """An array in `banks` banks as LUTs or BRAM_18K, whichever is the smaller share of the
    board (Vitis's default threshold would put a shallow, wide line buffer into a dozen 18 Kb
    blocks); the plan records the choice (`impl`), the template binds it. In LUTs a ROM is
    logic, 64 x 1 bit a LUT6; a `writable` array (a line buffer) is distributed RAM, LUTRAM
    too, at estimate.ram_luts."""
    lut = estimate.lut_memory(entries, width, banks, writable)
    if estimate.fits_luts(entries, width, banks):
        return {**lut, "impl": "lutram"}
    bram = estimate.block_memory(entries, width, banks)
    if estimate.device_share(lut, fpga) <= estimate.device_share(bram, fpga):
        return {**lut, "impl": "lutram"}
    return {**bram, "impl": "bram"}


def _put(cost: dict, memory: dict) -> dict:
    return estimate._add(cost, {k: v for k, v in memory.items() if k != "impl"})


def mac_resources(step, sm: StreamMac, board) -> dict:
    """DSP, LUT, FF, BRAM_18K of a stream MAC layer (conv or dense): multipliers, tables (one
    copy per two lanes), weight banks, window register and its read multiplexers, encoders."""
    m, p = sm.mac, step.params
    lanes = sm.lanes
    cost = {"dsp": 0, "lut": 0, "ff": 0, "bram_18k": 0}
    for key, value in estimate.multiplier_cost(m, board).items():
        cost[key] += lanes * value
    cost["mac_dsp"] = cost["dsp"]
    sm.w_impl = store(sm.w_grid.size, type_bits(m.weight_t), lanes, board)["impl"]
    _put(cost, store(sm.w_grid.size, type_bits(m.weight_t), lanes, board))
    if m.decode_w is not None:
        bits = estimate.varying_bits(m.decode_w, type_bits(m.decode_w_t))
        estimate._add(cost, {"lut": lanes * estimate.memory(m.decode_w.size, bits)["lut"]})
    if m.negate_w is not None:
        estimate._add(cost, {"lut": lanes * negate_luts(m) + negate_sum_luts(sm)})
    if m.product is not None:
        one = estimate.memory(m.product.size, type_bits(m.product_t))
        if sm.rom_impl == "lutram" or one["bram_18k"] == 0:
            estimate._add(cost, {"lut": lanes * math.ceil(m.product.size / 64) * type_bits(m.product_t)})
        else:
            estimate._add(cost, {"bram_18k": m.rom_copies * one["bram_18k"]})
    wb = type_bits(m.window_t)
    window = m.k * (p["group"] if step.kind == "conv2d" else 1)
    cost["ff"] += window * wb
    cost["lut"] += wb * sum(math.ceil(n / 4) for n in window_mux_inputs(step, sm) if n > 1)
    estimate._add(cost, estimate.memory(int(step.consts["bias"].size), type_bits(m.bias_t)))
    cost["lut"] += lanes * m.acc_bits
    cost["ff"] += lanes * (m.acc_bits + sum(m.operand_bits))
    enc = estimate.encoder_cost(step, m.acc_bits)
    for key, value in enc.items():
        cost[key] = cost.get(key, 0) + value * sm.opar
    return cost


def window_mux_inputs(step, sm: StreamMac) -> list:
    """Per reader of the window register, how many of its words the reader selects between
    over the MAC loop (a multiplexer of that many inputs, 4 a LUT6, per bit). Ungrouped, lanes
    with the same product index read the same word, one per chunk; grouped (depthwise too),
    lane (q, u) reads the window of each group its output channels ob * opar + q fall in."""
    p = step.params
    if step.kind != "conv2d" or p["group"] == 1:
        return [sm.kchunks] * sm.klanes
    oc, per = p["out_c"], p["out_c_per_group"]
    groups = [len({(ob * sm.opar + q) // per for ob in range(sm.oiters) if ob * sm.opar + q < oc})
              for q in range(sm.opar)]
    return [n * sm.kchunks for n in groups for _ in range(sm.klanes)]


# ---- the design: processes, streams, parallelism, costs ----------------------------------------
def stream_name(root: str, step: str, index: int, many: bool) -> str:
    return f"{root}_to_{step}_{index}" if many else f"{root}_s"


def stream_design(schedule, board, interval: int) -> dict:
    """Every process and stream at one target interval (cycles per frame)."""
    fpga = board["fpga"]
    ranges = buffer_ranges(schedule)
    types = {n: ap_type(*ranges[n]) for n in schedule.buffers}
    roots = {b.name: (b.alias_of or b.name) for b in schedule.buffers.values()}
    in_root = roots[schedule.input["buffer"]]
    geo = root_geometry(schedule, roots, in_root)
    readers = {}
    for step in schedule.steps:
        for i, name in enumerate(step.inputs):
            readers.setdefault(roots[name], []).append((step.name, i))
    out_root = roots[schedule.output["buffer"]]
    readers.setdefault(out_root, []).append(("write_output", 0))
    d = {"interval_target": interval, "types": types, "roots": roots, "geometry": geo,
         "ranges": ranges, "processes": [], "streams": {}, "kinds": {}, "smacs": {}, "macs": {},
         "input_root": in_root, "output_root": out_root, "fpga": fpga, "line_impl": {},
         # pixels (beats) a frame at the ports, for the testbench's channel-planar buffers
         "input_pixels": geo[in_root][1] * geo[in_root][2],
         "output_pixels": geo[out_root][1] * geo[out_root][2]}

    def stream_for(root, consumer, index):
        many = len(readers[root]) > 1
        return stream_name(root, consumer, index, many)

    def emit(proc, out_root_=None):
        d["processes"].append(proc)
        d["kinds"][proc.name] = proc.kind
        if out_root_ is None:
            return
        c, h, w = geo[out_root_]
        many = readers[out_root_]
        names = [stream_name(out_root_, s, i, len(many) > 1) for s, i in many]
        src = f"{out_root_}_s" if len(many) > 1 else names[0]
        proc.outs = [src]
        add_stream(d, src, out_root_, proc.name, c, h * w)
        if len(many) > 1:
            fork = Process(f"fanout_{out_root_}", "fork", None, [src], names, {"beats": h * w})
            d["streams"][src].consumer = fork.name
            for n, (s, i) in zip(names, many):
                add_stream(d, n, out_root_, fork.name, c, h * w)
            emit(fork)

    c, h, w = geo[in_root]
    emit(Process("read_input", "read_input", None, [], [], {"channels": c, "beats": h * w}), in_root)
    for step in schedule.steps:
        ins = [stream_for(roots[n], step.name, i) for i, n in enumerate(step.inputs)]
        proc = Process(f"{step.name}_proc", native_kind(step, schedule, geo), step.name, ins, [])
        for s in ins:
            d["streams"][s].consumer = proc.name
        plan_process(d, proc, step, schedule, board)
        emit(proc, roots[step.output])
        proc.t["busy"] = busy_cycles(proc, d)
    oc, oh, ow = geo[out_root]
    sink = Process("write_output", "write_output", None, [stream_for(out_root, "write_output", 0)],
                   [], {"channels": oc, "beats": oh * ow})
    d["streams"][sink.ins[0]].consumer = sink.name
    emit(sink)
    for s in d["streams"].values():
        s.bits = type_bits(types[s.root])
    for proc in d["processes"]:
        if not proc.cost:
            proc.cost = small_cost(proc, d)
    rebalance(d, schedule)
    return d


def add_stream(d, name, root, producer, channels, beats):
    d["streams"][name] = Stream(name, root, producer, "", channels, beats, 0)


def small_cost(proc, d) -> dict:
    """Ports and forks: a register per beat, a few LUTs of control."""
    bits = sum(d["streams"][s].beat_bits for s in proc.ins + proc.outs) or 8
    return {"dsp": 0, "lut": 16 + len(proc.outs) * 4, "ff": bits, "bram_18k": 0}


def plan_process(d, proc, step, schedule, board):
    """Parallelism, timing (`t`) and cost of the process of one step at d's target interval."""
    fpga, p, target = board["fpga"], step.params, d["interval_target"]
    x_range = d["ranges"][step.inputs[0]]
    if proc.kind == "conv":
        rows, cols = emit_tables(p)
        in_px, out_px = p["in_h"] * p["in_w"], p["out_h"] * p["out_w"]
        sm = sized_mac(step, x_range, fpga, lambda depth: (target - in_px) // out_px - p["k_w"] - depth)
        per_out = p["k_w"] + sm.iters + mac_depth(step, sm.lanes)
        proc.t = {"emit": emissions(rows, cols, p["out_w"]), "row_emit": rows, "col_emit": cols,
                  "per_in": 1, "per_out": per_out, "rows": window_rows(p),
                  "depth": mac_depth(step, sm.lanes)}
        d["smacs"][step.name] = sm
        proc.cost = mac_process_cost(d, proc, step)
    elif proc.kind == "dense":
        in_beats = d["streams"][proc.ins[0]].beats
        sm = sized_mac(step, x_range, fpga, lambda depth: target - in_beats - depth)
        proc.t = {"in_beats": in_beats, "compute": sm.iters + mac_depth(step, sm.lanes),
                  "depth": mac_depth(step, sm.lanes)}
        d["smacs"][step.name] = sm
        proc.cost = mac_process_cost(d, proc, step)
    elif proc.kind == "add":
        plan_add(proc, step, d, target)
    elif proc.kind == "pool":
        plan_pool(proc, step, d, target)
    elif proc.kind == "window_pool":
        plan_window_pool(proc, step, d, target)
    elif proc.kind == "concat":
        plan_concat(proc, step, d)
    else:
        plan_whole(proc, step, schedule, d, fpga)


def sized_mac(step, x_range, fpga, budget) -> StreamMac:
    """The stream MAC whose iterations fit `budget(pipeline depth)` cycles per output. The depth
    grows with the lanes' adder tree, unknown until the lanes are chosen: start from 16 lanes'
    depth and re-plan with the chosen lanes' while that is deeper, so a wide layer does not
    overshoot the target by its extra tree levels (a shallower tree only leaves slack)."""
    lanes = 16
    for _ in range(4):
        sm = stream_mac(step, x_range, max(1, budget(mac_depth(step, lanes))), fpga)
        if mac_depth(step, sm.lanes) <= mac_depth(step, lanes):
            return sm
        lanes = sm.lanes
    return sm


def mac_process_cost(d, proc, step) -> dict:
    sm = d["smacs"][step.name]
    cost = mac_resources(step, sm, d["fpga"])
    if proc.kind == "conv":
        return conv_extras(cost, step.params, d, step)
    return estimate._add(cost, estimate.ram(sm.mac.k, type_bits(sm.mac.window_t), sm.klanes))


def rebalance(d, schedule):
    """Each MAC layer chose the smaller share of the board on its own, which can leave one
    resource full and others idle: move product ROMs between LUTs and BRAM, folded or not (a
    folded ROM saves LUTs, but in BRAM it takes the same blocks and still negates), fabric
    multiplies to idle DSPs. Take the variant that lowers the fullest resource's share most,
    while one does."""
    fpga, steps = d["fpga"], {s.name: s for s in schedule.steps}
    procs = [p for p in d["processes"] if p.step in d["smacs"] and len(d["smacs"][p.step].plans) > 1]
    peak = lambda tot: max(tot[k] / fpga[k] for k in budgets(fpga))
    while True:
        totals, best = resource_totals(d), None
        for proc in procs:
            step, current = steps[proc.step], d["smacs"][proc.step]
            for sm in variants(current, step.params.get("out_features") or step.params["out_c"]):
                d["smacs"][proc.step] = sm
                new = mac_process_cost(d, proc, step)
                trial = {k: totals[k] - proc.cost.get(k, 0) + new.get(k, 0) for k in RESOURCE_KEYS}
                if peak(trial) < peak(totals) - 1e-9 and (best is None or peak(trial) < best[0]):
                    best = (peak(trial), proc, sm, new)
            d["smacs"][proc.step] = current
            mac_process_cost(d, proc, step)       # its storage choices back as they were
        if best is None:
            return
        _, proc, d["smacs"][proc.step], proc.cost = best
        mac_process_cost(d, proc, steps[proc.step])


def conv_extras(cost, p, d, step) -> dict:
    """The line buffer: R rows, each a bank of in_w words of every channel's code."""
    bits = type_bits(d["types"][d["roots"][step.inputs[0]]])
    rows = window_rows(p)
    line = store(p["in_w"] * rows, p["in_c"] * bits, rows, d["fpga"], writable=True)
    d["line_impl"][step.name] = line["impl"]
    return _put(cost, line)


def channel_par(channels: int, iters: int) -> tuple:
    """(cpar, citers): the fewest channels a cycle that take at most `iters` cycles."""
    cpar = -(-channels // max(1, min(channels, iters)))
    return cpar, -(-channels // cpar)


def plan_add(proc, step, d, target):
    s = d["streams"][proc.ins[0]]
    cpar, citers = channel_par(s.channels, (target - ADD_DEPTH) // s.beats)
    depth = ADD_DEPTH + estimate.ENCODER_DEPTH.get(step.params["encoder"], 0)
    proc.t = {"pixels": s.beats, "cpar": cpar, "citers": citers, "depth": depth,
              "channels": s.channels, "iterations": s.beats * citers}
    cost = {"dsp": 0, "lut": 32, "ff": 64, "bram_18k": 0}
    for key, value in estimate.encoder_cost(step, 32).items():
        cost[key] = cost.get(key, 0) + value * cpar
    for key in ("table_a", "table_b"):
        table = step.consts[key]
        for _ in range(-(-cpar // 2)):
            estimate._add(cost, estimate.memory(table.size, table.itemsize * 8))
    proc.cost = cost


def plan_pool(proc, step, d, target):
    """Row accumulators (max: codes; average: decoded sums at the proven bound's width) of out_w
    x channels, `cpar` channels updated a cycle, so `citers` cycles an input pixel; each output
    emitted with its last input pixel, `cpar` channels (encoded) a cycle. The fewest channels a
    cycle that meet the target: a pool sees few pixels, so it rarely needs them all at once."""
    p = step.params
    in_px, out_px, c = p["in_h"] * p["in_w"], p["out_h"] * p["out_w"], p["channels"]
    rows, cols = emit_tables(p)
    avg = step.kind == "avgpool"
    depth = 2 + estimate.ENCODER_DEPTH.get(p.get("encoder"), 0) if avg else 0
    cpar, citers = channel_par(c, (target - len(rows) - out_px * depth) // (in_px + out_px))
    proc.t = {"emit": emissions(rows, cols, p["out_w"]), "row_emit": rows, "col_emit": cols,
              "per_in": citers, "per_out": citers + depth,
              "cpar": cpar, "citers": citers, "channels": c, "depth": depth, "acc_t": pool_acc(step, d),
              "rows_read": p["out_h"] * p["k_h"]}       # input rows the windows cover
    proc.cost = pool_cost(step, proc.t)


def pool_acc(step, d) -> str:
    """A pool's running value: an average's sum of decoded inputs within the bound the lowering
    proved, a maximum's codes (and the code_min it starts from)."""
    if step.kind == "avgpool":
        return ap_type(-step.info["acc_bound"], step.info["acc_bound"])
    lo, hi = d["ranges"][step.inputs[0]]
    return ap_type(min(lo, step.params["code_min"]), hi)


def pool_cost(step, t) -> dict:
    """`cpar` adders (average) or compare-and-selects (max) of the running value's width, the
    row accumulators (out_w x citers words of cpar values), for an average the decode table (a
    copy per two channels a cycle) and `cpar` encoders."""
    p, cpar = step.params, t["cpar"]
    bits = type_bits(t["acc_t"])
    avg = step.kind == "avgpool"
    cost = {"dsp": 0, "lut": 32 + cpar * (bits if avg else 2 * bits), "ff": 64, "bram_18k": 0}
    estimate._add(cost, estimate.ram(p["out_w"] * t["citers"], cpar * bits, 1))
    if avg:
        for key, value in estimate.encoder_cost(step, bits).items():
            cost[key] = cost.get(key, 0) + value * cpar
        dx = step.consts["dx"]
        for _ in range(-(-cpar // 2)):
            estimate._add(cost, estimate.memory(dx.size, dx.itemsize * 8))
    return cost


def plan_window_pool(proc, step, d, target):
    """A pool whose windows overlap or reach into the padding: the conv's line buffer of R rows,
    each output reduced over its window in k_w cycles (the rows' taps in parallel, every
    channel), then for an average `cpar` channels encoded a cycle."""
    p = step.params
    in_px, out_px, c = p["in_h"] * p["in_w"], p["out_h"] * p["out_w"], p["channels"]
    rows, cols = emit_tables(p)
    avg = step.kind == "avgpool"
    depth = 2 + (estimate.ENCODER_DEPTH.get(p.get("encoder"), 0) if avg else 0)
    budget = (target - in_px) // out_px - p["k_w"] - depth
    cpar, citers = channel_par(c, budget) if avg else (c, 1)
    proc.t = {"emit": emissions(rows, cols, p["out_w"]), "row_emit": rows, "col_emit": cols,
              "per_in": 1, "per_out": p["k_w"] + (citers + depth if avg else 1), "rows": window_rows(p),
              "cpar": cpar, "citers": citers, "channels": c, "depth": depth, "acc_t": pool_acc(step, d)}
    proc.cost = window_pool_cost(step, d, proc.t)


def window_rows(p) -> int:
    """Input rows a window spans: the line buffer's."""
    return (p["k_h"] - 1) * p.get("dil_h", 1) + 1


def window_pool_cost(step, d, t) -> dict:
    """The line buffer; per channel k_h taps a cycle, each a compare and select (max) or an
    adder and a decode table read (average, a dual-port table copy per two reads); encoders."""
    p, c = step.params, t["channels"]
    bits = type_bits(d["types"][d["roots"][step.inputs[0]]])
    acc_bits = type_bits(t["acc_t"])
    taps = c * p["k_h"]
    per_tap = acc_bits if step.kind == "avgpool" else 2 * acc_bits
    cost = {"dsp": 0, "lut": 32 + taps * per_tap, "ff": 64 + c * acc_bits, "bram_18k": 0}
    line = store(p["in_w"] * t["rows"], c * bits, t["rows"], d["fpga"], writable=True)
    d["line_impl"][step.name] = line["impl"]
    _put(cost, line)
    if step.kind == "avgpool":
        for key, value in estimate.encoder_cost(step, acc_bits).items():
            cost[key] = cost.get(key, 0) + value * t["cpar"]
        dx = step.consts["dx"]
        for _ in range(-(-taps // 2)):
            estimate._add(cost, estimate.memory(dx.size, dx.itemsize * 8))
    return cost


def plan_concat(proc, step, d):
    """One beat of every input a cycle, written side by side into one output beat; an input on
    another grid recoded through its table (a dual-port copy per two channels)."""
    p = step.params
    chans = [d["streams"][s].channels for s in proc.ins]
    recoded = any(p["recode"])
    proc.t = {"pixels": d["streams"][proc.ins[0]].beats, "channels": chans,
              "offsets": [int(x) for x in np.cumsum([0] + chans[:-1])], "depth": 1 + recoded}
    cost = {"dsp": 0, "lut": 16, "ff": sum(chans) * 8, "bram_18k": 0}
    for i, c in enumerate(chans):
        if p["recode"][i]:
            table = step.consts[f"lut_{i}"]
            for _ in range(-(-c // 2)):
                estimate._add(cost, estimate.memory(table.size, table.itemsize * 8))
    proc.cost = cost


def plan_whole(proc, step, schedule, d, fpga):
    """The parallel design's loops on whole arrays (in and out arrays inside the process)."""
    if step.kind in MAC_KINDS:
        plan = mac_plan(step, 16, d["ranges"][step.inputs[0]])
        plan = estimate.cheaper(step, plan, product_rom_plan(plan, d["ranges"][step.inputs[0]]), fpga)
        d["macs"][step.name] = plan
        cost = estimate.mac_cost(step, plan, fpga)
    else:
        cost = estimate.stream_cost(step, schedule)
    compute = int(cost.pop("cycles"))
    for name in list(step.inputs) + [step.output]:
        root = d["roots"][name]
        estimate._add(cost, estimate.ram(schedule.buffers[root].size, type_bits(d["types"][root])))
    proc.t = {"compute": compute}
    proc.cost = cost


def busy_cycles(proc, d) -> int:
    """Cycles per frame the process itself needs (its interval alone)."""
    t = proc.t
    if proc.kind in WINDOWED:
        return int(len(t["emit"]) * t["per_in"] + int(t["emit"].sum()) * t["per_out"])
    if proc.kind == "concat":
        return t["pixels"]
    if proc.kind == "dense":
        return t["in_beats"] + t["compute"]
    if proc.kind == "add":
        return t["iterations"] + t["depth"]
    if proc.kind == "whole":
        beats = sum(d["streams"][s].beats for s in proc.ins)
        return beats + t["compute"] + d["streams"][proc.outs[0]].beats
    return sum(d["streams"][s].beats for s in proc.ins[:1] or proc.outs[:1]) * t.get("channels", 1)


# ---- the whole plan: target interval, fit, FIFO depths, estimate and simulation --------------
FIT_SHARE = 0.8          # --fit leaves a fifth of every resource for routing and control
FIT_STEP = 1.15
RESOURCE_KEYS = ("dsp", "bram_18k", "lut", "ff", "lutram")


def fifo_cost(s: Stream, fpga) -> dict:
    """A FIFO of at most 32 beats is shift registers (SRL32: 32 x 1 bit per LUT, in SLICEMs: LUTRAM),
    a deeper one BRAM_18K when that is the smaller share."""
    luts = math.ceil(s.depth / 32) * s.beat_bits
    srl = {"lut": luts, "lutram": luts, "bram_18k": 0}
    if s.depth <= 32:
        return srl
    return min(srl, {"lut": 0, "lutram": 0, "bram_18k": estimate.bram18(s.depth, s.beat_bits)},
               key=lambda c: estimate.device_share(c, fpga))


def resource_totals(d) -> dict:
    out = {k: 0 for k in RESOURCE_KEYS}
    for part in [p.cost for p in d["processes"]] + [fifo_cost(s, d["fpga"]) for s in d["streams"].values()]:
        for k in RESOURCE_KEYS:
            out[k] += int(part.get(k, 0))
    return out


def fits(totals, fpga, share=FIT_SHARE) -> bool:
    return all(totals[k] <= share * fpga[k] for k in budgets(fpga))


def budgets(fpga) -> tuple:
    """The resources this part states a budget for (a board file may not give LUTRAM)."""
    return tuple(k for k in RESOURCE_KEYS if fpga.get(k))


def fastest_interval(schedule) -> int:
    """No design is faster than its input port: one code a cycle."""
    return int(np.prod(schedule.input["shape"]))


def reuse_interval(schedule, reuse: int) -> int:
    """The busiest MAC layer's cycles when each multiplier does `reuse` products per output:
    the default target (the parallel design's --reuse, in the stream design's terms)."""
    worst = fastest_interval(schedule)
    for step in schedule.steps:
        p = step.params
        if step.kind == "conv2d":
            worst = max(worst, p["out_h"] * p["out_w"] * p["out_c"] * min(reuse, p["weights_per_channel"]))
        elif step.kind == "dense":
            worst = max(worst, p["out_features"] * min(reuse, p["in_features"]))
    return worst


def search_fit(schedule, board, start: int) -> dict:
    """The smallest interval from `start` up (steps of 15 %, then halving the gap to 0.1 %) whose
    design fits FIT_SHARE of the board; the slowest tried when none does."""
    fpga = board["fpga"]
    lo, interval = None, max(1, start)
    design = stream_design(schedule, board, interval)
    while not fits(resource_totals(design), fpga):
        lo, last = interval, design
        interval = int(interval * FIT_STEP) + 1
        design = stream_design(schedule, board, interval)
        if sum(p.t.get("busy", 0) for p in design["processes"]) == \
                sum(p.t.get("busy", 0) for p in last["processes"]) and interval > 64 * start:
            return design           # serial everywhere and still too big
    hi = interval
    while lo is not None and hi - lo > max(32, hi // 1000):
        mid = (lo + hi) // 2
        trial = stream_design(schedule, board, mid)
        if fits(resource_totals(trial), fpga):
            hi, design = mid, trial
        else:
            lo = mid
    return design


def plan_stream(schedule, board, interval: int, fit: bool) -> dict:
    """The stream design at `interval` (or, with `fit`, the smallest from there that fits), its
    FIFO depths from the simulation, the estimate and the simulated interval and latency."""
    for _ in range(8):          # the FIFOs' depths come after the fit: re-fit when they tip it
        design = search_fit(schedule, board, interval) if fit else stream_design(schedule, board, interval)
        for name, depth in hls_sim.fifo_depths(design).items():
            design["streams"][name].depth = depth
        if not fit or fits(resource_totals(design), board["fpga"]):
            break
        interval = int(design["interval_target"] * 1.03) + 1
    return finish(design, board)


def finish(design, board) -> dict:
    totals = resource_totals(design)
    est = hls_sim.fluid(design)
    sim = hls_sim.simulate(design)
    clock = board["fpga"]["clock_mhz"]
    totals.update(latency_cycles=int(est["latency"]), interval_cycles=int(est["interval"]),
                  latency_us=round(est["latency"] / clock, 2),
                  sim_latency_cycles=int(sim.latency), sim_interval_cycles=int(sim.interval),
                  sim_deadlock=bool(sim.deadlock),
                  mac_dsp=sum(int(p.cost.get("mac_dsp", 0)) for p in design["processes"]))
    design["totals"] = totals
    design["simulation"] = sim
    return design


def layer_rows(design) -> dict:
    """step -> the report's columns: multiply, lanes, MAC iterations per output (`reuse`), II
    (cycles between two output beats in steady state), resources, cycles per frame."""
    rows = {}
    for proc in design["processes"]:
        if proc.step is None:
            continue
        sm = design["smacs"].get(proc.step)
        t = proc.t
        row = {"ii": t.get("per_out") or t.get("citers") or t.get("compute") or 1}
        if sm is not None:
            row.update(lanes=sm.lanes, reuse=sm.iters, multiply=sm.mac.multiply,
                       acc_bits=sm.mac.acc_bits, weight_bits=type_bits(sm.mac.weight_t))
        row.update({k: int(proc.cost.get(k, 0)) for k in ("dsp", "mac_dsp", "lut", "lutram", "ff", "bram_18k")})
        row["cycles"] = int(t.get("busy", 0))
        row["process"] = proc.kind
        rows[proc.step] = row
    return rows


def fifo_rows(design) -> list:
    out = []
    for s in design["streams"].values():
        cost = fifo_cost(s, design["fpga"])
        out.append({"name": s.name, "beats": s.beats, "beat_bits": s.beat_bits, "depth": s.depth,
                    "impl": "bram" if cost["bram_18k"] else "srl", "bram_18k": int(cost["bram_18k"]),
                    "lut": int(cost["lut"]), "lutram": int(cost["lutram"])})
    return out
