"""How the C kernels (host, RV32; GAP8 shares the register blocking) loop over a MAC step: tiles,
register blocks, unrolling and their stack buffers. A target's plan, derived from the Schedule
(which says only what is computed); the templates read it as part of the step's parameters."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcugen.errors import MCUGenError

# Stack bytes a kernel may use for its decoded-input buffer (the band of a conv tile, the
# input vector of a dense layer). The plan sizes tiles to stay within it.
KERNEL_STACK_LIMIT = 4096
OC_BLOCK = 4          # output channels per register block
PX_BLOCK = 4          # output pixels (along a row) per register block
DENSE_K_UNROLL = 4    # input features per iteration of a dense kernel's inner loop


def window(n: int, stride: int, k: int, dil: int) -> int:
    """Input rows (or columns) that n consecutive outputs of a k-tap, stride, dilation conv read."""
    return (n - 1) * stride + (k - 1) * dil + 1


def conv_blocking(params, elem_bytes, limit=None):
    """Loop structure of the conv2d kernel (templates/host/ops/conv2d.c.j2).

    Per group, the output plane is cut into tiles of tile_h rows x tile_w columns; each tile's
    input window (band_h x band_w per input channel, zero where it falls in the padding) is
    decoded once into a stack buffer and shared by every output channel of the group. Inside a
    tile, register blocks of oc_block output channels x px_block pixels of one row accumulate
    over all input channels and taps with no bounds checks; remainders use 1-wide blocks.
    When even a px_block-wide, one-row band of all input channels exceeds `limit`, the input
    channels are decoded in chunks of chunk_c inside each register block instead."""
    limit = KERNEL_STACK_LIMIT if limit is None else limit
    p = params
    cg, kh, kw = p["in_c_per_group"], p["k_h"], p["k_w"]
    sh, sw, dh, dw = p["stride_h"], p["stride_w"], p["dil_h"], p["dil_w"]
    oh, ow = p["out_h"], p["out_w"]
    band_h = lambda th: window(th, sh, kh, dh)
    band_w = lambda tw: window(tw, sw, kw, dw)
    nbytes = lambda c, th, tw: c * band_h(th) * band_w(tw) * elem_bytes
    px = min(PX_BLOCK, ow)
    # widest tile first (a full row when it fits), then as many rows as fit
    tw = ow
    if nbytes(cg, 1, tw) > limit:
        tw = max(px, (ow // px) * px)
        while tw > px and nbytes(cg, 1, tw) > limit:
            tw -= px
    th = 1
    while th < oh and nbytes(cg, th + 1, tw) <= limit:
        th += 1
    chunk_c = cg
    if nbytes(cg, 1, tw) > limit:
        tw, th = px, 1
        chunk_c = max(1, limit // (band_h(1) * band_w(px) * elem_bytes))
    bh, bw = band_h(th), band_w(tw)
    return {"tile_h": th, "tile_w": tw, "band_h": bh, "band_w": bw,
            "chunk_c": chunk_c, "n_chunks": -(-cg // chunk_c),
            **register_blocking(p, bw, bh * bw, chunk_c, tw),
            "band_elems": chunk_c * bh * bw, "stack_bytes": chunk_c * bh * bw * elem_bytes}


def register_blocking(params, band_w, band_c, chunk_c, tile_w):
    """The register blocks of a conv kernel over a decoded, zero-padded input band whose rows
    are band_w elements apart and whose channels band_c apart (no bounds checks): blocks of
    oc_block output channels (1 when a group has fewer) x px_block pixels of one row, over
    tiles tile_w pixels wide, with 1-wide remainders; the taps unrolled (tap = [weight index,
    band offset]) and input channels unrolled c_unroll at a time when a channel has few taps.
    Shared by the host kernel (conv_blocking) and the GAP8 cluster kernel (codegen/gap8.py)."""
    p = params
    kh, kw, dh, dw = p["k_h"], p["k_w"], p["dil_h"], p["dil_w"]
    ow, ocg = p["out_w"], p["out_c_per_group"]
    px = min(PX_BLOCK, ow)
    oc_block = OC_BLOCK if ocg >= OC_BLOCK else 1
    oc_main = ocg - ocg % OC_BLOCK if oc_block > 1 else 0     # channels in full blocks
    khw = kh * kw
    # unroll input channels so that one loop iteration carries at least ~8 taps
    c_unroll = max(1, min(chunk_c, 8 // khw)) if khw < 8 else 1
    taps = [[ky * kw + kx, ky * dh * band_w + kx * dw] for ky in range(kh) for kx in range(kw)]
    return {"band_c": band_c, "row_step": p["stride_h"] * band_w, "oc_block": oc_block,
            "product": p.get("product", 0),
            "oc_main": oc_main, "oc_rem": int(oc_main < ocg),
            "px_rem": int(px > 1 and (tile_w % px != 0 or ow % tile_w % px != 0)),
            "px_block": px, "c_unroll": c_unroll, "khw": khw,
            "taps": taps, "px_offsets": [j * p["stride_w"] for j in range(px)],
            "oc_offsets": [i * p["weights_per_channel"] for i in range(oc_block)]}


def dense_blocking(params, elem_bytes, limit=None):
    """Loop structure of the dense kernel: the input vector decoded once into a stack buffer
    (when it fits `limit`, else decoded per use), blocks of oc_block outputs, the inner loop
    unrolled by k_unroll with a remainder."""
    limit = KERNEL_STACK_LIMIT if limit is None else limit
    k, n = params["in_features"], params["out_features"]
    buffered = int(k * elem_bytes <= limit)
    oc_block = OC_BLOCK if n >= OC_BLOCK else 1
    oc_main = n - n % OC_BLOCK if oc_block > 1 else 0
    u = DENSE_K_UNROLL
    return {"x_buffered": buffered, "oc_block": oc_block, "oc_main": oc_main,
            "oc_rem": int(oc_main < n),
            "k_unroll": u, "k_main": k - k % u, "k_offsets": list(range(u)),
            "oc_offsets": [i * k for i in range(oc_block)],
            "stack_bytes": k * elem_bytes if buffered else 0}


def mac_kernel_plan(step, limit=None) -> dict:
    """The loop structure of one conv2d or dense step's C kernel ({} for other kinds), with
    the stack bytes its buffers take (the decoded band or input vector, and the unpacked
    weights of one register block when the weights are packed codes)."""
    blocking = {"conv2d": conv_blocking, "dense": dense_blocking}.get(step.kind)
    if blocking is None:
        return {}
    p = step.params
    plan = blocking(p, np.dtype(p["band_dtype"]).itemsize, limit)
    if p["w_codes"]:
        plan["wbuf_elems"] = len(plan["oc_offsets"]) * p["w_row"]
        plan["stack_bytes"] += step.consts["dw"].itemsize * plan["wbuf_elems"]
    return plan


# ---- SIMD kernels (boards with `simd`: dot products of 8- or 16-bit lanes) ------------------
@dataclass(frozen=True)
class SimdIsa:
    """A SIMD ISA the kernels are planned for: lanes per 32-bit word by lane width in bits, and
    its dot products ("signed": signed x signed lanes; "unsigned": unsigned x signed)."""
    name: str
    lanes: dict
    dot_products: tuple


# A board's `simd` names one of these. The kernels' ISA layer (templates/common's
# mcugen_isa.h) spells each in its own instructions: CORE-V's cv.sdotsp/cv.sdotusp, Xpulp's
# pv.sdotsp/pv.sdotusp through GCC's __builtin_pulp_*.
SIMD_ISAS = {isa.name: isa for isa in (
    SimdIsa("xcorev", {8: 4, 16: 2}, ("signed", "unsigned")),
    SimdIsa("xpulpv2", {8: 4, 16: 2}, ("signed", "unsigned")),
)}
# (stored weights, decoded inputs) -> the kernel's lanes: b signed 8-bit, ub unsigned 8-bit
# inputs x signed weights, h 16-bit (8-bit operands widened)
SIMD_KINDS = {("int8", "int8"): "b", ("int8", "uint8"): "ub",
              ("int8", "int16"): "h", ("int16", "int16"): "h",
              ("int16", "int8"): "h", ("int16", "uint8"): "h"}
KIND_LANES = {"b": (8, "signed"), "ub": (8, "unsigned"), "h": (16, "signed")}   # bits, dot product
SIMD_OC_BLOCK = 4     # output channels per register block (x SIMD_PX_BLOCK pixels: 8 accumulators)
SIMD_PX_BLOCK = 2


def simd_isa(name) -> SimdIsa | None:
    """The SIMD ISA a board names (None for none): a name the plans do not know is refused, so
    a typo in a board file cannot fall back to the plain kernels unnoticed."""
    if not name:
        return None
    if name not in SIMD_ISAS:
        raise MCUGenError(f"unknown SIMD ISA '{name}' (the board's simd); known: "
                          f"{', '.join(SIMD_ISAS)}")
    return SIMD_ISAS[name]


def simd_lanes(step, isa: SimdIsa):
    """('b' | 'ub' | 'h', lanes per 32-bit word) when the decoded weights and inputs fit lanes
    and a dot product of the ISA (weights stored decoded), else None."""
    p = step.params
    if step.kind not in ("conv2d", "dense") or p.get("product") or p.get("w_codes"):
        return None
    kind = SIMD_KINDS.get((str(step.consts["weights"].dtype), p["band_dtype"]))
    if kind is None:
        return None
    bits, dot_product = KIND_LANES[kind]
    if bits not in isa.lanes or dot_product not in isa.dot_products:
        return None
    return kind, isa.lanes[bits]


def simd_kernel_plan(step, isa_name, limit=None) -> dict:
    """The SIMD kernel of a conv2d or dense step ({} when its operands do not fit lanes or its
    columns would exceed the stack limit: the plain kernel then runs). Weights are stored in
    rows padded with zeros to whole words (`padded_k`), so every row starts on a word; the
    kernel gathers each output pixel's inputs into a zero-padded column of the same length
    (im2col) and takes blocks of 4 output channels x 2 pixels of dot products. `isa_name`: the
    board's SIMD ISA (SIMD_ISAS), None for none."""
    limit = KERNEL_STACK_LIMIT if limit is None else limit
    isa = simd_isa(isa_name)
    lanes = simd_lanes(step, isa) if isa else None
    p = step.params
    # a column gathered per output pixel pays off over a block of output channels; a depthwise
    # or narrow grouped conv (fewer per group) keeps the plain kernel, which shares one decoded
    # band across the taps (on the RTL: 3x fewer cycles for kws_dscnn's depthwise layers)
    if lanes is None or p.get("out_c_per_group", SIMD_OC_BLOCK) < SIMD_OC_BLOCK:
        return {}
    kind, per_word = lanes
    k = p["weights_per_channel"] if step.kind == "conv2d" else p["in_features"]
    padded_k = -(-k // per_word) * per_word
    elem = 4 // per_word                          # bytes per lane
    columns = SIMD_PX_BLOCK if step.kind == "conv2d" else 1
    if columns * padded_k * elem > limit:
        return {}
    bits, dot_product = KIND_LANES[kind]
    plan = {"kernel": step.kind + "_simd", "simd": kind, "padded_k": padded_k, "k": k,
            "k_words": padded_k // per_word, "lane_type": f"int{bits}",
            "column_type": ("uint" if dot_product == "unsigned" else "int") + str(bits),
            "column_elems": columns * padded_k, "column_words": columns * padded_k * elem // 4,
            "stack_bytes": columns * padded_k * elem}
    # what the padded rows (and 16-bit lanes for 8-bit weights) add to the weights' bytes
    weights = step.consts["weights"]
    plan["layout_extra_bytes"] = (weights.size // k * padded_k * np.dtype(plan["lane_type"]).itemsize
                                  - weights.nbytes)
    n_out = p["out_c_per_group"] if step.kind == "conv2d" else p["out_features"]
    plan["oc_main"] = n_out - n_out % SIMD_OC_BLOCK
    groups = p.get("group", 1)
    plan["row_blocks"] = [g * n_out + oc for g in range(groups)
                          for oc in range(0, plan["oc_main"], SIMD_OC_BLOCK)]
    if step.kind == "conv2d":
        plan["in_taps"] = [ky * p["dil_h"] * p["in_w"] + kx * p["dil_w"]
                           for ky in range(p["k_h"]) for kx in range(p["k_w"])]
        plan["tap_dy_dx"] = [[ky * p["dil_h"], kx * p["dil_w"]]
                             for ky in range(p["k_h"]) for kx in range(p["k_w"])]
        plan["span_h"] = window(1, 1, p["k_h"], p["dil_h"])
        plan["span_w"] = window(1, 1, p["k_w"], p["dil_w"])
        plan["khw"] = p["k_h"] * p["k_w"]
        plan["pixels"] = p["out_h"] * p["out_w"]
        plan["pixels_main"] = plan["pixels"] - plan["pixels"] % SIMD_PX_BLOCK
    return plan


def simd_weight_layout(weights: np.ndarray, rows: int, plan: dict) -> np.ndarray:
    """(rows, k) weights -> the SIMD kernel's layout (the same values, in the lanes' type): rows
    padded with zeros to padded_k lanes; within each block of SIMD_OC_BLOCK rows starting at
    plan["row_blocks"], the rows' words interleaved (word j of row i at word 4j + i), so one
    post-incremented pointer walks a block. Rows outside blocks stay as they are."""
    w = np.asarray(weights).reshape(rows, -1)
    padded = np.zeros((rows, plan["padded_k"]), dtype=plan["lane_type"])
    padded[:, :w.shape[1]] = w
    per_word = 4 // padded.itemsize               # lanes of the plan's lane type in a word
    words = plan["padded_k"] // per_word
    for first in plan["row_blocks"]:
        block = padded[first:first + SIMD_OC_BLOCK].reshape(SIMD_OC_BLOCK, words, per_word)
        padded[first:first + SIMD_OC_BLOCK] = block.transpose(1, 0, 2).reshape(SIMD_OC_BLOCK, -1)
    return padded


# ---- the SIMD MatMul of two activations (attention's Q K^T and A V) -------------------------
MATMUL_ROW_BLOCK = 2  # A rows per register block (x SIMD_OC_BLOCK columns of B: 8 accumulators)


def matmul_simd_plan(step, isa_name, limit=None) -> dict:
    """The SIMD kernel of a matmul step ({} for other kinds, a board without 2 x 16-bit signed
    dot products, or tables wider than int16: the plain kernel then runs).

    Per head, B is decoded once into a stack buffer transposed, one row of padded_k int16 lanes
    per column of B (zeros after k), in chunks of `chunk_cols` columns when the whole head's B
    exceeds `limit`; within a chunk, blocks of SIMD_OC_BLOCK columns are interleaved by word as
    the conv kernels' weight rows (simd_weight_layout), columns past the last block stay plain.
    Each pair of A rows is decoded into two columns of padded_k lanes and meets every block of
    4 B columns in one 4 x 2 block of dot products (isa_dot4x2_h), the remainders in 4 x 1
    blocks and single dot products. Sums are the plain kernel's exactly: int32, whose bound
    the lowering proved for every partial sum (ops/matmul.py), whatever the order.
    The plan's key is `matmul_simd` (the lanes, "h"), not `simd`: the C targets' `simd` marks
    a step whose constants hold SIMD-laid-out `weights` (codegen/host.py step_consts), which a
    matmul has none of. Every size the kernel's loops and buffers use is in the plan."""
    limit = KERNEL_STACK_LIMIT if limit is None else limit
    isa = simd_isa(isa_name)
    if (step.kind != "matmul" or isa is None or 16 not in isa.lanes
            or "signed" not in isa.dot_products):
        return {}
    if any(step.consts[t].dtype != np.int16 for t in ("table_a", "table_b")):
        return {}
    p = step.params
    k, m = p["k"], p["m"]
    per_word = isa.lanes[16]
    padded_k = -(-k // per_word) * per_word
    row_bytes = padded_k * 2
    a_bytes = MATMUL_ROW_BLOCK * row_bytes            # the decoded A rows of one block
    fits = (limit - a_bytes) // row_bytes              # B columns the rest of the limit holds
    if fits < 1:
        return {}
    cols = min(m, fits)
    if cols < m and cols >= SIMD_OC_BLOCK:
        cols -= cols % SIMD_OC_BLOCK                   # whole blocks in every chunk but the last
    lanes = (MATMUL_ROW_BLOCK + cols) * padded_k
    return {"matmul_simd": "h", "padded_k": padded_k, "k_words": padded_k // per_word,
            "chunk_cols": cols, "chunks": -(-m // cols),
            # a B shared by every head, decoded whole: once for all heads
            "b_once": int(p["b_head"] == 0 and cols == m),
            "stack_bytes": a_bytes + cols * row_bytes,
            # the scratch: two decoded A rows, then B's columns
            "scratch_lanes": lanes, "scratch_words": lanes // 2, "x1_at": padded_k,
            "columns_at": MATMUL_ROW_BLOCK * padded_k,
            "k_pairs": k // 2, "odd_k": k % 2, "odd_n": p["n"] % 2, "pair_stride": 2 * m,
            "head_size": p["n"] * m,
            # the 4 x 2 block's accumulators: column q of the block against rows i, i + 1
            "block_accs": [(q, 2 * q, 2 * q + 1) for q in range(SIMD_OC_BLOCK)]}


def c_kernel_plan(step, isa_name=None) -> dict:
    """A C target's plan of one step: the SIMD kernel where the board has a SIMD ISA (its name,
    SIMD_ISAS) and the step's operands fit its lanes (a conv, a dense layer or a MatMul of two
    activations), the plain kernel otherwise."""
    return (simd_kernel_plan(step, isa_name) or matmul_simd_plan(step, isa_name)
            or mac_kernel_plan(step))
