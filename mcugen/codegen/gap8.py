"""The GAP8 target: PMSIS C for the 8-core cluster, each MAC/pool/add layer (and the Mul,
attention MatMul, softmax and LayerNorm steps) tiled L2 -> L1 with the cluster DMA (double
buffered), a GAP SDK Makefile, and `emu.mk`, which builds the same sources on the host (or for
rv32 under qemu) against the PMSIS emulation layer shipped in the project, so the GAP8 code
itself is compared bit for bit with the reference.

Every tile size, L1 offset and DMA size is computed here and handed to the templates; the
templates only lay the numbers out. The integer semantics of each step are the host kernels'.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import NamedTuple

import numpy as np

from mcugen.boards import get_board
from mcugen.codegen import host
from mcugen.codegen.add_plan import add_kernel_plan
from mcugen.codegen.gap8_l3 import BAND_KINDS, board_layout, l3_image
from mcugen.codegen.render import render_all
from mcugen.errors import MCUGenError
from mcugen.reference.interpreter import quantize_input, run_codes
from mcugen.ir.schedule import CTYPES, ITEMSIZE
from mcugen.codegen.kernel_plan import (SIMD_OC_BLOCK, register_blocking, simd_isa,
                                       simd_kernel_plan, simd_weight_layout, window)

FILES = {"model.c": "model.c.j2", "model.h": "model.h.j2", "main.c": "main.c.j2",
         "Makefile": "Makefile.j2", "emu.mk": "emu.mk.j2", "emu_main.c": "emu_main.c.j2",
         "pmsis_emu/pmsis.h": "pmsis_emu/pmsis.h.j2", "pmsis_emu/pmsis.c": "pmsis_emu/pmsis.c.j2",
         "pmsis_emu/bsp/fs.h": "pmsis_emu/bsp.h.j2", "pmsis_emu/bsp/flash/hyperflash.h": "pmsis_emu/bsp.h.j2",
         "pmsis_emu/bsp/ram/hyperram.h": "pmsis_emu/bsp.h.j2",
         "mcugen_isa.h": "mcugen_isa.h.j2",   # the ISA layer the kernels share (templates/common)
         "emu_main_rtl.c": "emu_main_rtl.c.j2"}   # the emulation build on the CV32E40P RTL

ALIGN = 4
BOARD_SAMPLES = 3                                # self-check inputs baked into the board main.c
ADD_SPLIT_ELEMENTS = 4096                        # an Add this large takes two tiles (_plan_add)
ONE_SLOT_ROLES = ("band", "cols", "hwc")        # filled and consumed within one tile: one slot
# per conv tile: decoded band rows the cores fill (channels x rows), the tile's band rows, the
# band row its first loaded input row goes to, (register block, output row) work items, the
# tile's first register block and its output channel plane
WORK_FIELDS = ("n_rows", "band_h", "top", "n_items", "rb0", "out_plane")


class Tile(NamedTuple):
    """One tile of a cluster step: output channels [c0, c0+nc) (or features, elements), output
    rows [y0, y0+ny), the input channels [ic0, ic0+nic) and rows [iy0, iy0+niy) it reads, and
    its channel block. The fields, in this order, are also the C struct's (model_tile_t)."""
    c0: int
    nc: int
    y0: int
    ny: int
    ic0: int
    nic: int
    iy0: int
    niy: int
    blk: int


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _sizes(count: int) -> list:
    """Candidate tile extents for `count` items: every distinct ceil(count / k), largest first."""
    return sorted({math.ceil(count / k) for k in range(1, count + 1)}, reverse=True)


def _region(name, ctype, role, src, per, itemsize):
    return {"name": name, "ctype": ctype, "role": role, "src": src, "per": int(per),
            "itemsize": int(itemsize), "offs": []}


class _Plan:
    """One step's L1 layout and tiles. Regions: static (loaded once per step), block (per
    output-channel block, two slots), tile (per tile, two slots), out (per tile, two slots),
    band (a conv tile's decoded input, filled and read by the cores within the tile: one slot),
    cols (the SIMD conv's per-core im2col columns, likewise one slot), hwc (the SIMD conv's
    decoded window in (row, column, channel) order, likewise one slot)."""

    def __init__(self, step, schedule, budget, consts, simd=None, cores=8, runs=1):
        self.step, self.schedule, self.budget, self.cores = step, schedule, budget, cores
        # the step's tasks per inference: a head loop's step (`step` then has one head's
        # parameters) is sent once per head
        self.runs = runs
        self.consts = consts          # the constants as the kernel reads them (SIMD weight layout)
        self.simd = simd or {}        # the step's SIMD kernel plan ({}: the band kernel)
        # template params beside the step's: a cluster kernel named apart from its kind's FC one
        self.kernel = {}
        self.regions, self.tiles, self.mode = [], [], "fc"
        self.l1_bytes = self.dma_bytes = 0

    # -- helpers -------------------------------------------------------------------------
    def buf(self, name):
        return self.schedule.buffers[name]

    def const_region(self, key, role, per):
        value = self.consts[key]
        return _region(key, CTYPES[str(value.dtype)], role, f"{self.step.name}_{key}", per,
                       value.itemsize)

    def encoder_regions(self, per_row):
        """The regions of the step's encoder constants: those indexed by row go with each
        block of rows (per_row: the kernel passes block-local rows), the others are static."""
        p = self.step.params
        if p.get("output_acc") or "encoder" not in p:
            return
        rows = p["enc_row_consts"]
        for key in p["enc_consts"]:
            if per_row and key in rows:
                self.regions.append(self.const_region(key, "block", rows[key]))
            else:
                self.regions.append(self.const_region(key, "static", 0))

    @staticmethod
    def one_slot(role, n_tiles, n_blocks) -> bool:
        """A region needs a second slot only where the next tile's copy overlaps the current one's
        use: not with one tile, not for what a tile fills and consumes itself (ONE_SLOT_ROLES),
        not for a channel block's constants when there is only one block (loaded once)."""
        return n_tiles == 1 or role in ONE_SLOT_ROLES or (role == "block" and n_blocks == 1)

    def slotted_bytes(self, slot_bytes, n_tiles, n_blocks):
        """L1 bytes of the per-block/per-tile regions, one or two slots each (one_slot)."""
        roles = {r["name"]: r["role"] for r in self.regions}
        return sum((1 if self.one_slot(roles[name], n_tiles, n_blocks) else 2) * _align(v)
                   for name, v in slot_bytes.items())

    def layout(self, static_counts, slot_bytes):
        """Offsets: static regions first, then slot 0 and slot 1 of every slotted region (one
        slot where one_slot says so: both offsets then name it)."""
        off = 0
        n_tiles, n_blocks = len(self.tiles), len({tile.blk for tile in self.tiles})
        for index, region in enumerate(self.regions):
            region["index"] = index
        for region in self.regions:
            if region["role"] == "static":
                region["offs"] = [off]
                region["count"] = static_counts[region["name"]]
                off += _align(region["count"] * region["itemsize"])
        for slot in range(2):
            for region in self.regions:
                if region["role"] != "static" and not (slot and self.one_slot(region["role"], n_tiles, n_blocks)):
                    region["offs"].append(off)
                    off += _align(slot_bytes[region["name"]])
        for region in self.regions:
            if len(region["offs"]) == 1:
                region["offs"].append(region["offs"][0])
        self.l1_bytes = off


def _band_geometry(step):
    p = step.params
    if step.kind == "conv2d":
        return dict(C=p["out_c"], OH=p["out_h"], sh=p["stride_h"], pt=p["pad_top"],
                    ext=(p["k_h"] - 1) * p["dil_h"] + 1, in_h=p["in_h"], in_w=p["in_w"],
                    ocpg=p["out_c_per_group"], icpg=p["in_c_per_group"])
    return dict(C=p["channels"], OH=p["out_h"], sh=p["stride_h"], pt=p["pad_top"],
                ext=(p["k_h"] - 1) * p["dil_h"] + 1, in_h=p["in_h"], in_w=p["in_w"], ocpg=1, icpg=1)


def _channel_span(g, c0, c1):
    return (c0 // g["ocpg"]) * g["icpg"], ((c1 - 1) // g["ocpg"] + 1) * g["icpg"]


def _row_span(g, y0, y1):
    lo = max(0, y0 * g["sh"] - g["pt"])
    hi = min(g["in_h"], (y1 - 1) * g["sh"] - g["pt"] + g["ext"])
    lo = min(lo, g["in_h"] - 1)                    # a band wholly in the padding: load one row
    return lo, max(hi, lo + 1)


def _band_rows(g, oht):
    """Rows of the zero-padded decoded band that oht output rows read."""
    return (oht - 1) * g["sh"] + g["ext"]


def _conv_band(step):
    """The conv kernel's decoded band: full output rows, so band_w columns from input column
    -pad_left; `left` zero columns, then `cols` decoded ones, then zeros from `right` on."""
    p = step.params
    band_w = window(p["out_w"], p["stride_w"], p["k_w"], p["dil_w"])
    left = min(p["pad_left"], band_w)
    cols = max(0, min(p["in_w"], band_w - left))
    return {"band_w": band_w, "left": left, "cols": cols, "right": left + cols,
            "ctype": CTYPES[p["band_dtype"]], "itemsize": ITEMSIZE[p["band_dtype"]]}


def _register_blocks(g, c0, c1, ic0, oc_block):
    """A channel block's register blocks, (first output channel, first input channel, width),
    tile-local: full oc_block-wide blocks inside each group, then 1-wide ones."""
    blocks = []
    for group in range(c0 // g["ocpg"], (c1 - 1) // g["ocpg"] + 1):
        lo, hi = max(c0, group * g["ocpg"]), min(c1, (group + 1) * g["ocpg"])
        icl0 = group * g["icpg"] - ic0
        full = lo + (hi - lo) // oc_block * oc_block if oc_block > 1 else lo
        blocks += [(oc - c0, icl0, oc_block) for oc in range(lo, full, oc_block)]
        blocks += [(oc - c0, icl0, 1) for oc in range(full, hi)]
    return blocks


def _conv_kernel(plan, g, band, oht):
    """What the band region of a conv step carries for its two forks: the decode
    geometry, the register blocking (mcugen/ops/_mac.py), the register blocks of every channel
    block and each tile's work counts (WORK_FIELDS)."""
    p = plan.step.params
    band_c = _band_rows(g, oht) * band["band_w"]
    kernel = dict(band, **register_blocking(p, band["band_w"], band_c, g["icpg"], p["out_w"]))
    rblocks, span = [], {}
    for tile in plan.tiles:
        if tile.blk not in span:
            first = len(rblocks)
            rblocks += _register_blocks(g, tile.c0, tile.c0 + tile.nc, tile.ic0, kernel["oc_block"])
            span[tile.blk] = (first, len(rblocks))
    work = []
    for tile in plan.tiles:
        rows, (first, last) = _band_rows(g, tile.ny), span[tile.blk]
        work.append((tile.nic * rows, rows, tile.iy0 - (tile.y0 * g["sh"] - g["pt"]),
                     (last - first) * tile.ny, first, tile.ny * p["out_w"]))
    widths = {n for _, _, n in rblocks}
    return dict(kernel=kernel, rblocks=rblocks, work=work, work_fields=WORK_FIELDS,
                wide=kernel["oc_block"] if kernel["oc_block"] > 1 and kernel["oc_block"] in widths else 0,
                narrow=int(1 in widths))


def _search_band(plan, g, static_bytes, per, band, block_sizes=None, fixed=None):
    """The fewest (channel block x output row band) tiles whose buffers fit L1, or None:
    (tiles, channel blocks, row bands, slot bytes, rows per band). `block_sizes`: the channel
    block sizes allowed (default any); `fixed`: regions of a fixed size per tile."""
    src, dst = plan.buf(plan.step.inputs[0]), plan.buf(plan.step.output)
    isz, osz, out_w = ITEMSIZE[src.dtype], ITEMSIZE[dst.dtype], plan.step.params["out_w"]
    best = None
    for oct_ in block_sizes or _sizes(g["C"]):
        blocks = [(c, min(c + oct_, g["C"])) for c in range(0, g["C"], oct_)]
        nic = max(b - a for a, b in (_channel_span(g, c0, c1) for c0, c1 in blocks))
        for oht in _sizes(g["OH"]):
            n_tiles = len(blocks) * math.ceil(g["OH"] / oht)
            if best is not None and n_tiles >= best[0]:
                continue
            bands = [(y, min(y + oht, g["OH"])) for y in range(0, g["OH"], oht)]
            niy = max(b - a for a, b in (_row_span(g, y0, y1) for y0, y1 in bands))
            slot = {"in": nic * niy * g["in_w"] * isz, "out": oct_ * oht * out_w * osz}
            slot.update({k: oct_ * v for k, v in per.items()})
            if band is not None and "row_bytes" in band:      # the SIMD conv's hwc window
                slot["hwc"] = _band_rows(g, oht) * band["row_bytes"]
            elif band is not None:
                slot["band"] = nic * _band_rows(g, oht) * band["band_w"] * band["itemsize"]
            slot.update(fixed or {})
            if static_bytes + plan.slotted_bytes(slot, n_tiles, len(blocks)) <= plan.budget:
                best = (n_tiles, blocks, bands, slot, oht)
    return best


def _plan_band(plan):
    """Conv and pool steps. A conv step on a SIMD board takes the SIMD kernel when its tiles
    fit (_plan_simd_conv); otherwise it decodes its input into a zero-padded band in L1 for
    the register-blocked kernel, and when that band does not fit even beside the smallest
    tiles, it computes straight from the codes (the bounds-checked kernel, no band region)."""
    step = plan.step
    g = _band_geometry(step)
    plan.mode = "band"
    if plan.simd and _plan_simd_conv(plan, g):
        return
    plan.simd, plan.consts, plan.regions = {}, kernel_consts(step, {}), []
    if step.kind == "conv2d":
        _conv_const_regions(plan, step.params["weights_per_channel"])
    elif step.kind == "avgpool":
        for key in ("dx", "row_h", "row_w"):
            plan.regions.append(plan.const_region(key, "static", 0))
        plan.encoder_regions(per_row=False)
    _io_regions(plan)
    static, static_bytes, per = _sizes_of(plan)
    best = band = None
    if step.kind == "conv2d":
        band = _conv_band(step)
        band_region = _region("band", band["ctype"], "band", None, 0, band["itemsize"])
        plan.regions.insert(-1, band_region)               # "out" stays last
        best = _search_band(plan, g, static_bytes, per, band)
        if best is None:
            plan.regions.remove(band_region)
            band = None
    best = best or _search_band(plan, g, static_bytes, per, None)
    if best is None:
        raise MCUGenError(_no_fit(plan, "one channel and one output row"))
    _band_tiles(plan, g, best)
    if band is not None:
        band_region.update(_conv_kernel(plan, g, band, best[4]))
    _band_layout(plan, g, static, per, best[3])


def _plan_simd_conv(plan, g) -> bool:
    """The SIMD conv kernel's tiles, if any fit L1: weights in the SIMD layout (rows of padded_k
    lanes, blocks of 4 rows interleaved) per channel block, blocks cut where the layout's
    4-row blocks start, and one column buffer per core (two pixels' decoded inputs: `cols`)
    that each core fills and consumes within a tile."""
    simd, ctype = plan.simd, CTYPES[plan.simd["column_type"]]
    _conv_const_regions(plan, simd["padded_k"])
    _io_regions(plan)
    fixed, window_rows = {}, None
    if simd.get("hwc"):
        window_rows = {"row_bytes": simd["band_w"] * simd["cp"] * ITEMSIZE[simd["column_type"]]}
        plan.regions.insert(-1, _region("hwc", ctype, "hwc", None, 0, ITEMSIZE[simd["column_type"]]))
    else:
        fixed["cols"] = plan.cores * simd["stack_bytes"]
        plan.regions.insert(-1, _region("cols", ctype, "cols", None, 0, ITEMSIZE[simd["column_type"]]))
    static, static_bytes, per = _sizes_of(plan)
    best = _search_band(plan, g, static_bytes, per, window_rows, _simd_block_sizes(g), fixed)
    if best is None:
        return False
    _band_tiles(plan, g, best)
    _band_layout(plan, g, static, per, best[3])
    return True


def _simd_block_sizes(g) -> list:
    """Channel block sizes (largest first) whose blocks start where the SIMD weight layout's
    4-row blocks do: multiples of 4 (or all channels) in an ungrouped conv; whole groups, or
    multiples of 4 dividing a group of a multiple of 4 channels, in a grouped one."""
    C, ocpg = g["C"], g["ocpg"]
    if ocpg == C:
        sizes = set(range(SIMD_OC_BLOCK, C + 1, SIMD_OC_BLOCK)) | {C}
    else:
        sizes = set(range(ocpg, C + 1, ocpg))
        if ocpg % SIMD_OC_BLOCK == 0:
            sizes |= {n for n in range(SIMD_OC_BLOCK, ocpg, SIMD_OC_BLOCK) if ocpg % n == 0}
    return sorted(sizes, reverse=True)


def _conv_const_regions(plan, weights_per_channel):
    p = plan.step.params
    if not p["identity_dx"]:
        plan.regions.append(plan.const_region("dx", "static", 0))
    plan.regions.append(plan.const_region("weights", "block", weights_per_channel))
    plan.regions.append(plan.const_region("bias", "block", 1))
    plan.encoder_regions(per_row=True)


def _io_regions(plan):
    """A band step's input tile and output tile (the output region stays last)."""
    step = plan.step
    src, dst = plan.buf(step.inputs[0]), plan.buf(step.output)
    plan.regions.append(_region("in", CTYPES[src.dtype], "tile", step.inputs[0], 0, ITEMSIZE[src.dtype]))
    plan.regions.append(_region("out", CTYPES[dst.dtype], "out", step.output, 0, ITEMSIZE[dst.dtype]))


def _sizes_of(plan):
    """Element counts of the static regions, their L1 bytes, and bytes per output channel of
    the per-block regions."""
    static = {r["name"]: int(plan.consts[r["name"]].size) for r in plan.regions if r["role"] == "static"}
    static_bytes = sum(_align(static[r["name"]] * r["itemsize"]) for r in plan.regions
                       if r["role"] == "static")
    per = {r["name"]: r["per"] * r["itemsize"] for r in plan.regions if r["role"] == "block"}
    return static, static_bytes, per


def _band_tiles(plan, g, best):
    _, blocks, bands, _, _ = best
    for b, (c0, c1) in enumerate(blocks):
        ic0, ic1 = _channel_span(g, c0, c1)
        for y0, y1 in bands:
            iy0, iy1 = _row_span(g, y0, y1)
            plan.tiles.append(Tile(c0, c1 - c0, y0, y1 - y0, ic0, ic1 - ic0, iy0, iy1 - iy0, b))


def _band_layout(plan, g, static, per, slot):
    """L1 offsets, and the bytes the DMA moves per inference."""
    step = plan.step
    isz = ITEMSIZE[plan.buf(step.inputs[0]).dtype]
    osz = ITEMSIZE[plan.buf(step.output).dtype]
    plan.layout(static, slot)
    plan.dma_bytes = sum(static[r["name"]] * r["itemsize"] for r in plan.regions if r["role"] == "static")
    for tile in plan.tiles:
        plan.dma_bytes += (tile.nic * tile.niy * g["in_w"] * isz
                           + tile.nc * tile.ny * step.params["out_w"] * osz)
        if tile.y0 == 0:
            plan.dma_bytes += sum(tile.nc * v for v in per.values())


def _plan_dense(plan):
    step, p = plan.step, plan.step.params
    src, dst = plan.buf(step.inputs[0]), plan.buf(step.output)
    plan.mode = "dense"
    plan.regions.append(_region("x", CTYPES[src.dtype], "static", step.inputs[0], 0, ITEMSIZE[src.dtype]))
    static = {"x": p["in_features"]}
    if not p["identity_dx"]:
        plan.regions.append(plan.const_region("dx", "static", 0))
    plan.regions.append(plan.const_region("weights", "block", p["in_features"]))
    plan.regions.append(plan.const_region("bias", "block", 1))
    plan.encoder_regions(per_row=True)
    plan.regions.append(_region("out", CTYPES[dst.dtype], "out", step.output, 1, ITEMSIZE[dst.dtype]))
    static.update({r["name"]: int(plan.consts[r["name"]].size) for r in plan.regions
                   if r["role"] == "static" and r["name"] in step.consts})
    per = {r["name"]: r["per"] * r["itemsize"] for r in plan.regions if r["role"] in ("block", "out")}
    _plan_linear(plan, static, per, p["out_features"], "one output feature")


def _plan_add(plan):
    """An add step tiled in chunks of consecutive elements; its constants loaded once: the
    step's decode tables and encoder's, or those of the plan's lookup (add_plan.py: a table of
    every pair's code, or the requantization folded into the decode tables). Weights streamed
    from L3 keep the step's own constants (the L3 image holds the Schedule's)."""
    step, p = plan.step, plan.step.params
    a, b, dst = (plan.buf(n) for n in (step.inputs[0], step.inputs[1], step.output))
    plan.mode = "chunk"
    lookup = {} if plan.schedule.meta.get("weights_in") == "l3" else add_kernel_plan(step, (a.dtype, b.dtype, dst.dtype))
    if lookup:
        plan.consts = lookup.pop("consts")
        plan.kernel = lookup
        for key in plan.consts:
            plan.regions.append(plan.const_region(key, "static", 0))
    else:
        for key in ("table_a", "table_b"):
            plan.regions.append(plan.const_region(key, "static", 0))
        plan.encoder_regions(per_row=False)
    plan.regions.append(_region("in", CTYPES[a.dtype], "tile", step.inputs[0], 1, ITEMSIZE[a.dtype]))
    plan.regions.append(_region("in_b", CTYPES[b.dtype], "tile", step.inputs[1], 1, ITEMSIZE[b.dtype]))
    plan.regions.append(_region("out", CTYPES[dst.dtype], "out", step.output, 1, ITEMSIZE[dst.dtype]))
    static = {r["name"]: int(plan.consts[r["name"]].size) for r in plan.regions if r["role"] == "static"}
    per = {r["name"]: r["itemsize"] for r in plan.regions if r["role"] != "static"}
    # two tiles at least for a large Add: with one, the input's DMA, the cores and the
    # output's DMA run one after the other; with two, half of the transfers overlap the cores
    # (the same L1: two slots of half a tile). Measured on resnet8 W8A8 (RTL + the model): its
    # Adds of 16 k / 8 k / 4 k elements 29.6 / 16.3 / 9.7 k -> 27.2 / 15.4 / 9.5 k cycles; with 4
    # or 8 tiles the controller's work per tile (~600 cycles) takes back what the overlap gains
    split = 2 if p["size"] >= ADD_SPLIT_ELEMENTS else 1
    _plan_linear(plan, static, per, p["size"], "one element", min_tiles=split)


def _plan_mul(plan):
    """A mul step tiled in chunks of consecutive output elements, as add. An operand of the
    output's size (numpy broadcasting: then its shape, walked in the output's order) is tiled
    along; a broadcast one (an SE gate: C values) is loaded whole into L1 once, and the kernel
    indexes it through the loop strides. A step with two broadcast operands, or whose
    broadcast operand leaves no room in L1, stays on the FC, where it ran before."""
    step, p = plan.step, plan.step.params
    n, dst = int(np.prod(p["dims"])), plan.buf(step.output)
    operands = [(plan.buf(src), name, strides) for src, name, strides
                in zip(step.inputs, ("in", "in_b"), (p["a_strides"], p["b_strides"]))]
    broadcast = [(buf, name, strides) for buf, name, strides in operands if buf.size < n]
    if len(broadcast) > 1:
        return
    for key in ("table_a", "table_b"):
        plan.regions.append(plan.const_region(key, "static", 0))
    plan.encoder_regions(per_row=False)
    static = {r["name"]: int(plan.consts[r["name"]].size) for r in plan.regions}
    for buf, name, strides in operands:
        region = _region(name, CTYPES[buf.dtype], "tile", buf.name, 1, ITEMSIZE[buf.dtype])
        if buf.size < n:
            region.update(role="static", gather=_gather(p["dims"], strides))
            static[name] = buf.size
        plan.regions.append(region)
    plan.regions.append(_region("out", CTYPES[dst.dtype], "out", step.output, 1, ITEMSIZE[dst.dtype]))
    per = {r["name"]: r["itemsize"] for r in plan.regions if r["role"] != "static"}
    plan.mode = "chunk"
    try:
        _plan_linear(plan, static, per, n, "one element")
    except MCUGenError:
        plan.regions, plan.mode = [], "fc"
        return
    # templates/gap8/ops/mul.c.j2 would shadow the FC's templates/common/ops/mul.c.j2
    plan.kernel = {"kernel": "mul_cluster"}


def _plan_matmul(plan):
    """A matmul step tiled in bands of consecutive output rows (head, row) of m values each,
    driven as a one-plane band (the 2-D DMA moves contiguous rows: in_w = k, out_w = m): B
    (every head's, the shared one, or in a head loop one head's) is loaded whole into L1 once,
    and a tile loads the A rows its output rows read (_matmul_tiles). A step whose B leaves no
    room in L1 for tiles of one output row stays on the FC, where it ran before."""
    step, p = plan.step, plan.step.params
    a, b, dst = (plan.buf(n) for n in (step.inputs[0], step.inputs[1], step.output))
    for key in ("table_a", "table_b"):
        plan.regions.append(plan.const_region(key, "static", 0))
    plan.encoder_regions(per_row=False)
    static = {r["name"]: int(plan.consts[r["name"]].size) for r in plan.regions}
    # B's elements, from the parameters: a head loop's task holds one head's B
    static["in_b"] = p["k"] * p["m"] * (p["heads"] if p["b_head"] else 1)
    plan.regions.append(_region("in_b", CTYPES[b.dtype], "static", b.name, 1, ITEMSIZE[b.dtype]))
    static_bytes = sum(_align(static[r["name"]] * r["itemsize"]) for r in plan.regions)
    plan.regions.append(_region("in", CTYPES[a.dtype], "tile", a.name, 1, ITEMSIZE[a.dtype]))
    plan.regions.append(_region("out", CTYPES[dst.dtype], "out", step.output, 1, ITEMSIZE[dst.dtype]))
    row_bytes = {"in": p["k"] * ITEMSIZE[a.dtype], "out": p["m"] * ITEMSIZE[dst.dtype]}
    best = _search_matmul(plan, static_bytes, row_bytes)
    if best is None:
        plan.regions = []
        return
    plan.mode, (plan.tiles, slot) = "band", best
    plan.layout(static, slot)
    plan.dma_bytes = sum(static[r["name"]] * r["itemsize"] for r in plan.regions if r["role"] == "static")
    plan.dma_bytes += sum(t.niy * row_bytes["in"] + t.ny * row_bytes["out"] for t in plan.tiles)
    # templates/gap8/ops/matmul.c.j2 would shadow the FC's templates/common/ops/matmul.c.j2;
    # a_wrap: how far the kernel's A index steps back at a head's end (a shared A restarts)
    plan.kernel = {"kernel": "matmul_cluster", "in_w": p["k"],
                   "in_plane": (p["heads"] if p["a_head"] else 1) * p["n"] * p["k"],
                   "out_w": p["m"], "out_plane": p["heads"] * p["n"] * p["m"],
                   "a_wrap": 0 if p["a_head"] else p["n"] * p["k"]}


def _search_matmul(plan, static_bytes, row_bytes):
    """The largest tiles of output rows whose A rows and output, doubled when there is more
    than one tile, fit L1 beside the static regions: (tiles, slot bytes), or None."""
    p = plan.step.params
    rows = p["heads"] * p["n"]
    for size in _sizes(rows):
        tiles = _matmul_tiles(p, rows, size)
        slot = {"in": max(t.niy for t in tiles) * row_bytes["in"], "out": size * row_bytes["out"]}
        if static_bytes + (2 if len(tiles) > 1 else 1) * sum(_align(v) for v in slot.values()) <= plan.budget:
            return tiles, slot
    return None


def _matmul_tiles(p, rows, size) -> list:
    """Tiles of `size` output rows [y0, y0+ny) of the one plane, with the A rows [iy0, iy0+niy)
    they read: the same rows when A has every head's; with one A shared by every head (a_head
    0) the rows of the head-local span, or the whole A when the tile crosses a head's end."""
    tiles = []
    for y0 in range(0, rows, size):
        ny = min(size, rows - y0)
        if p["a_head"]:
            iy0, niy = y0, ny
        elif y0 % p["n"] + ny <= p["n"]:
            iy0, niy = y0 % p["n"], ny
        else:
            iy0, niy = 0, p["n"]
        tiles.append(Tile(0, 1, y0, ny, 0, 1, iy0, niy, 0))
    return tiles


def _gather(dims, strides) -> dict:
    """What the mul kernel needs to index a broadcast operand from an output element o: the
    loop dims, the operand's strides, each loop's place value in o (its coordinate is
    o / place % dim) and the index step when loop k+1 wraps and loop k advances (carry[k])."""
    places = [int(np.prod(dims[k + 1:])) for k in range(len(dims))]
    carry = [strides[k] - dims[k + 1] * strides[k + 1] for k in range(len(dims) - 1)]
    return {"dims": list(dims), "strides": list(strides), "places": places, "carry": carry}


def _plan_linear(plan, static, per, n, smallest, unit=1, min_tiles=1):
    """Tiles of consecutive units (output features, elements; `unit` > 1: whole groups of that
    many elements, e.g. rows): the largest tile whose buffers, doubled when there is more than
    one tile, fit L1 beside the static regions, and at least `min_tiles` tiles (as many as
    there are units, at most). A tile's c0 and nc count elements."""
    static_bytes = sum(_align(static[r["name"]] * r["itemsize"]) for r in plan.regions if r["role"] == "static")
    groups = n // unit
    for size in [s for s in _sizes(groups) if -(-groups // s) >= min(min_tiles, groups)]:
        slot = {k: size * unit * v for k, v in per.items()}
        if static_bytes + (2 if size < groups else 1) * sum(_align(v) for v in slot.values()) <= plan.budget:
            break
    else:
        raise MCUGenError(_no_fit(plan, smallest))
    plan.tiles = [Tile(g * unit, min(size, groups - g) * unit, 0, 0, 0, 0, 0, 0, t)
                  for t, g in enumerate(range(0, groups, size))]
    plan.layout(static, slot)
    plan.dma_bytes = sum(static[r["name"]] * r["itemsize"] for r in plan.regions if r["role"] == "static")
    plan.dma_bytes += sum(per.values()) * n


ROW_KINDS = ("softmax", "layernorm")     # steps of independent rows (_plan_rows)


def _plan_rows(plan):
    """A softmax or layernorm step: independent rows, tiled in whole units of consecutive rows
    (a layernorm's row of n values; a softmax's block of n x inner values, whose `inner` rows
    interleave: one row when inner is 1) that the cores split; the step's tables and its
    encoder's (a layernorm's, per position of the row) are loaded whole into L1 once. A step
    of one unit stays on the FC, where it ran before (on the cluster one core would run it, at
    a lower clock than the FC's, after a task and the DMA), and so does one whose tables leave
    no room in L1 for one unit."""
    step, p = plan.step, plan.step.params
    src, dst = plan.buf(step.inputs[0]), plan.buf(step.output)
    unit, units = p["n"] * p.get("inner", 1), p["outer"]
    if units < 2 or p.get("masked"):     # a mask row follows the row's index: the FC's kernel
        return
    for key in step.consts:      # the step's tables and its encoder's, each loaded whole
        plan.regions.append(plan.const_region(key, "static", 0))
    static = {r["name"]: int(plan.consts[r["name"]].size) for r in plan.regions}
    plan.regions.append(_region("in", CTYPES[src.dtype], "tile", src.name, 1, ITEMSIZE[src.dtype]))
    plan.regions.append(_region("out", CTYPES[dst.dtype], "out", step.output, 1, ITEMSIZE[dst.dtype]))
    per = {r["name"]: r["itemsize"] for r in plan.regions if r["role"] != "static"}
    plan.mode = "chunk"
    try:
        _plan_linear(plan, static, per, units * unit, "one row", unit)
    except MCUGenError:
        plan.regions, plan.tiles, plan.mode = [], [], "fc"
        return
    # templates/gap8/ops/<kind>.c.j2 would shadow the FC's templates/common/ops/<kind>.c.j2,
    # which the cluster kernel renders for one unit (as `<step>_unit`, its constants in L1
    # through macros of that prefix: the encoder's too)
    plan.kernel = {"kernel": f"{step.kind}_cluster", "unit": unit, "enc_ref": f"{step.name}_unit_"}


def _no_fit(plan, smallest):
    return (f"layer '{plan.step.layer}' ({plan.step.kind}) does not fit the GAP8 L1 budget of "
            f"{plan.budget:,} B even with tiles of {smallest} (double buffered): use a board with "
            f"more L1 or a smaller layer")


def plan_tiles(schedule, board) -> dict:
    """Step name -> its _Plan (tiles, L1 regions and offsets, DMA bytes) for the board: the one
    plan of a build (Gap8Target.plan), which the fit check, the render and the report read.
    Raises MCUGenError naming the first layer that fits no tiling."""
    budget = _l1_budget(board)
    looped = head_runs(schedule)
    plans = {}
    for step in schedule.steps:
        params, runs = looped.get(step.name, ({}, 1))
        if params:
            step = replace(step, params={**step.params, **params})    # as one head's task runs it
        simd = simd_plan(step, schedule, board)
        plan = _Plan(step, schedule, budget, kernel_consts(step, simd), simd, int(board.get("cores", 8)),
                     runs)
        if step.kind in BAND_KINDS:
            _plan_band(plan)
        elif step.kind == "dense":
            _plan_dense(plan)
        elif step.kind == "add":
            _plan_add(plan)
        elif step.kind == "mul":
            _plan_mul(plan)
        elif step.kind == "matmul":
            _plan_matmul(plan)
        elif step.kind in ROW_KINDS:
            _plan_rows(plan)
        plans[step.name] = plan
    return plans


def head_runs(schedule) -> dict:
    """step name -> (its parameters for one head, the heads) for the steps the schedule's head
    loops run head by head (lower/head_loops.py): model_run calls or sends each once per head."""
    return {name: (params, loop["heads"]) for loop in schedule.head_loops
            for name, params in loop["per_head"].items()}


# The runtimes' cluster stacks when a task leaves their sizes at 0 (PulpOS and FreeRTOS alike)
DEFAULT_STACK, DEFAULT_SLAVE_STACK = 0x800, 0x400


def l1_layout(board) -> dict:
    """The cluster's L1 as the plan sees it (boards/gap8.toml says where each number comes from):
    the heap the runtime allocates from (the link script's L1 less what precedes the heap), less
    a stated reserve for the runtime's own L1 data, holds the cluster stacks the project asks for
    and the layers' buffer (one pi_l1_malloc); `budget` is what the tiles may use."""
    l1, cores = board["memory"]["l1"], int(board.get("cores", 8))
    heap = int(l1.get("heap", l1["bytes"]))
    reserve = int(l1.get("runtime_reserve", 0))
    stack = int(l1.get("stack_bytes", DEFAULT_STACK))
    slave = int(l1.get("slave_stack_bytes", DEFAULT_SLAVE_STACK))
    stacks = _align8(stack + slave * (cores - 1))
    # pi_l1_malloc hands out 8-byte multiples: plan within the largest one that fits
    return {"heap": heap, "runtime_reserve": reserve, "stack": stack, "slave_stack": slave,
            "stacks": stacks, "emu_bytes": heap - reserve, "budget": (heap - reserve - stacks) // 8 * 8}


def _align8(n: int) -> int:
    return (n + 7) // 8 * 8


def _l1_budget(board) -> int:
    return l1_layout(board)["budget"]


def simd_plan(step, schedule, board) -> dict:
    """The SIMD kernel of a conv step on a board with a SIMD ISA ({} otherwise; the tile plan
    may still fall back to the band kernel when its tiles do not fit L1). Weights streamed from
    L3 keep the band kernel: the L3 image and its staging hold the Schedule's own layout."""
    isa = simd_isa(board.get("simd"))          # refuses an ISA the kernels are not planned for
    if step.kind != "conv2d" or isa is None or schedule.meta.get("weights_in") == "l3":
        return {}
    limit = _l1_budget(board) // int(board.get("cores", 8))
    plan = simd_kernel_plan(step, isa.name, limit)
    return _hwc_plan(step, plan) or plan


def _hwc_plan(step, plan) -> dict:
    """The SIMD conv without im2col ({} where it does not apply): per tile the cores decode the
    input once into a zero-padded window in (row, column, channel) order (`hwc`, channels
    padded to `cp` so that a window row of k_w pixels is whole words), in which one output
    pixel's inputs are k_h runs of row_lanes lanes, row_pitch lanes apart, and the next pixel's
    px_lanes further on; the kernel (templates/gap8/ops/conv2d_hwc.c.j2) takes blocks of 4
    output channels x 4 pixels of a row straight from it, against weights in the same
    (ky, kx, channel) order. Ungrouped, undilated convs only: there a window row's channels
    are contiguous. `asm_ok`: the CORE-V block's offsets fit its loads' and adds' immediates."""
    p = step.params
    if not plan or p.get("group", 1) != 1 or p["dil_h"] != 1 or p["dil_w"] != 1:
        return {}
    if p["stride_h"] > p["k_h"] or p["stride_w"] > p["k_w"]:
        # the window would decode input pixels no output reads (a 1x1 stride-2 conv: 4 per
        # one used); the im2col kernel gathers only those read. Measured on resnet8 W8A8 (RTL,
        # with the branching encoder clamp of then): its 1x1 stride-2 layers at 2.9 / 4.9
        # MAC/cycle there, 2.6 / 4.3 in a window of only the pixels read, 2.1 / 3.6 in the
        # full window
        return {}
    lane = ITEMSIZE[plan["column_type"]]
    cp = p["in_c"]
    while cp * p["k_w"] * lane % 4:
        cp += 1
    row_lanes = p["k_w"] * cp
    padded_k = p["k_h"] * row_lanes
    weights = step.consts["weights"]
    # the window's columns: `left` of padding, the input's, then padding from `right` on
    band_w = window(p["out_w"], p["stride_w"], p["k_w"], 1)
    left = min(p["pad_left"], band_w)
    px_lanes, row_pitch = p["stride_w"] * cp, band_w * cp
    # the assembly block's load offsets (the last word of pixels 1..3 of a row) and its step to
    # the next window row, in bytes: both must fit a 12-bit immediate
    px_word_offsets = [j * px_lanes * lane - 4 for j in (1, 2, 3)]
    row_step_bytes = (row_pitch - row_lanes) * lane
    asm_ok = px_word_offsets[-1] < 2048 and row_step_bytes < 2048
    return dict(plan, kernel="conv2d_hwc", hwc=1, cp=cp, row_lanes=row_lanes,
                row_words=row_lanes * lane // 4, padded_k=padded_k, k_words=padded_k * lane // 4,
                lane_bytes=lane, lanes_per_word=4 // lane, px_lanes=px_lanes, row_pitch=row_pitch,
                px_word_offsets=px_word_offsets, row_step_bytes=row_step_bytes,
                pixel_quads=-(-p["out_w"] // 4), asm_ok=int(asm_ok),
                band_w=band_w, band_left=left, band_right=left + max(0, min(p["in_w"], band_w - left)),
                layout_extra_bytes=step.consts["bias"].size * padded_k * lane - weights.nbytes)


def kernel_consts(step, simd) -> dict:
    """The step's constants as its kernel reads them: the SIMD kernel's weights in its layout
    (the hwc kernel's rows first reordered to (ky, kx, channel), channels padded with zeros)."""
    consts = dict(step.consts)
    if not simd:
        return consts
    rows, weights = step.consts["bias"].size, step.consts["weights"]
    if simd.get("hwc"):
        p = step.params
        w = np.asarray(weights).reshape(rows, p["in_c"], p["k_h"], p["k_w"]).transpose(0, 2, 3, 1)
        weights = np.pad(w, ((0, 0), (0, 0), (0, 0), (0, simd["cp"] - p["in_c"]))).reshape(rows, -1)
    consts["weights"] = simd_weight_layout(weights, rows, simd)
    return consts


def tile_plan(schedule, board: dict, plans: dict | None = None) -> list:
    """Per step: tiles, L1 bytes used (both buffers) and DMA bytes moved per inference, from
    `plans` (plan_tiles'; planned here when not given). Steps that are not tiled (concat,
    transpose, recode) run on the fabric controller from L2. A head loop's step: the tiles and
    L1 of one head's task, the DMA bytes of all heads', and as many cluster tasks (`tasks`) as
    heads."""
    plans = plans or plan_tiles(schedule, board)
    return [{"step": s.name, "layer": s.layer, "kind": s.kind, "tiles": len(plan.tiles),
             "l1_bytes": plan.l1_bytes, "dma_bytes": plan.dma_bytes * plan.runs, "tasks": plan.runs,
             "on": "cluster" if plan.tiles else "fc",
             "kernel": plan.simd.get("simd") or ("h" if _sdot_ok(s, schedule) else "plain")}
            for s, plan in zip(schedule.steps, plans.values())]


def _board_samples(schedule):
    """A few inputs (the range's ends and its middle) and the reference's outputs for them: the
    board's main.c checks itself against these."""
    lo, hi = schedule.meta.get("input_range", (0.0, 1.0))
    shape = tuple(schedule.input["shape"][1:])
    x = np.stack([np.full(shape, v, dtype=np.float32) for v in np.linspace(lo, hi, BOARD_SAMPLES)])
    codes = quantize_input(schedule, x)
    outputs = run_codes(schedule, codes)
    return codes.reshape(len(x), -1), np.asarray(outputs, dtype=np.int64).reshape(len(x), -1)


def template_context(schedule, model_file: str, board: dict, plans: dict) -> dict:
    """The host target's context (the same model.c numbers) plus the tile plans."""
    codes, expected = _board_samples(schedule)
    l1 = l1_layout(board)
    # a head loop's step renders for one head, as its tiles were planned (plan_tiles)
    one_head = {name: params for name, (params, _) in head_runs(schedule).items()}
    kernels = {name: {**one_head.get(name, {}), **p.simd, **p.kernel} for name, p in plans.items()}
    context = host.template_context(schedule, model_file, kernels)
    # the constants as the cluster kernels read them (the hwc kernel's weight order is its own,
    # an Add's lookup has its own tables)
    context["consts"].update({name: p.consts for name, p in plans.items() if p.simd or p.kernel.get("add_kernel")})
    layout = board_layout(schedule, board) if schedule.meta.get("weights_in") == "l3" else None
    schedule_consts = {s.name: s.consts for s in schedule.steps}
    context.update({
        "io_fields": {s.name: _io_fields(s, schedule) for s in schedule.steps},
        "plans": {name: {"mode": p.mode, "regions": _l2_sources(p), "tiles": p.tiles,
                         "n_tiles": len(p.tiles), "l1_bytes": p.l1_bytes, "dma_bytes": p.dma_bytes,
                         "out_index": len(p.regions) - 1, "drain_from": max(0, len(p.tiles) - 2)}
                  for name, p in plans.items()},
        "uses_2d": any(p.mode == "band" for p in plans.values()),
        "uses_1d": any(r["role"] in ("static", "block") or p.mode != "band"
                       for p in plans.values() if p.tiles for r in p.regions),
        "uses_tiles": any(p.tiles for p in plans.values()),
        "tile_fields": Tile._fields,
        "sdot": {s.name: _sdot_ok(s, schedule) for s in schedule.steps},
        "l1_alloc_bytes": max([ALIGN] + [p.l1_bytes for p in plans.values()]),
        "l1_emu_bytes": l1["emu_bytes"],
        "l1": l1,
        "l3_emu_bytes": int(board["memory"].get("l3", {}).get("bytes", 0)),
        "cores": int(board.get("cores", 8)),
        "board": board,
        "samples": codes.tolist(),
        "expected": expected.tolist(),
        "l3": layout,
        "l3_staging_union": host.union_lengths(layout["staging_words"]) if layout else {},
        "l3_views": {name: {key: host.union_view("model_staging", str(schedule_consts[name][key].dtype), off)
                            for key, off in record["arrays"].items()}
                     for name, record in (layout["steps"].items() if layout else [])},
    })
    return context


def _io_names(step) -> list:
    """The members of <step>_io_t, the cluster task's argument: a pointer to each of the step's
    operands in L2, inputs then output, in the order of model_run's arguments (step_calls: in a
    head loop, offset to the task's head)."""
    return [f"in{i}" for i in range(len(step.inputs))] + ["out"]


def _io_fields(step, schedule) -> list:
    """<step>_io_t's members: name, C type, and whether the step only reads it."""
    operands = step.inputs + [step.output]
    return [{"name": name, "ctype": CTYPES[schedule.buffers[buffer].dtype], "const": k < len(step.inputs)}
            for k, (name, buffer) in enumerate(zip(_io_names(step), operands))]


def _l2_sources(plan) -> list:
    """The plan's regions, a buffer's read or written through the task's argument (`io` in
    driver.c.j2), a constant's from its own array."""
    fields = {}
    for field, name in zip(_io_names(plan.step), plan.step.inputs + [plan.step.output]):
        fields.setdefault(name, f"io->{field}")
    return [dict(r, src=fields.get(r["src"], r["src"])) for r in plan.regions]


def _sdot_ok(step, schedule):
    """Dense steps whose operands are 16-bit safe take the 2 x 16-bit SIMD dot product."""
    if step.kind != "dense" or step.consts["weights"].dtype != np.int16:
        return False
    if step.params["identity_dx"]:
        return ITEMSIZE[schedule.buffers[step.inputs[0]].dtype] == 1
    return step.consts["dx"].dtype in (np.int8, np.uint8, np.int16)


def render(schedule, model_file: str, board: dict | None = None, plan: dict | None = None) -> dict:
    """file name -> text for a GAP8 project (board: the gap8 board file unless given), plus
    the L3 weights file when they are streamed from HyperRAM. The cluster's tiles are planned
    from the build's plan (Gap8Target.plan: each step's `tiles`), or planned here from the
    board when no plan is given."""
    if any(step.params.get("product") for step in schedule.steps):
        raise MCUGenError("this schedule uses product tables, which the GAP8 kernels do not read "
                          "yet; rebuild the model with `mcugen build --target gap8`")
    board = board or get_board("gap8")
    if plan and all("tiles" in p for p in plan.values()):
        plans = {name: p["tiles"] for name, p in plan.items()}
    else:
        plans = plan_tiles(schedule, board)
    context = template_context(schedule, model_file, board, plans)
    context["rtl"] = host.rtl_make_flags()
    files = {**render_all("gap8", FILES, context), **host.rtl_program_files()}
    if context["l3"]:
        files[context["l3"]["file"]] = l3_image(schedule)
    return files
