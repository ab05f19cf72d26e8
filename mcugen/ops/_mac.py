"""What Conv and Gemm share: weight/bias params and the lowering of a MAC layer."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcugen.lower.encoders import encode
from mcugen.lower.fixedpoint import (decode_table, is_identity, mac_fixed_point, pack_codes,
                                     smallest_int_dtype, unpack_codes)
from mcugen.lower.product import mac_product_table, product_table_fits


# Stack bytes a kernel may use for its decoded-input buffer (the band of a conv tile, the
# input vector of a dense layer). The lowering sizes tiles to stay within it.
KERNEL_STACK_LIMIT = 4096
OC_BLOCK = 4          # output channels per register block
PX_BLOCK = 4          # output pixels (along a row) per register block
DENSE_K_UNROLL = 4    # input features per iteration of a dense kernel's inner loop
PRODUCT_ENTRY_BYTES = 4   # an int32 product table entry: the kernels index it by byte offset


@dataclass
class MacRealization:
    """How a MAC layer forms its accumulator: what the kernel reads per weight, its extra tables
    (dx: the input decode table; pt: the product table), the accumulator's unit and bound."""
    weights: np.ndarray        # (Co, K) the stored value of every weight
    code_table: np.ndarray     # weight code (table order) -> its stored value (packed codes)
    bias: np.ndarray
    acc_scale: np.ndarray
    acc_bound: int
    tables: dict
    params: dict
    info: dict


def separable_realization(node, ctx, qw, x_enc) -> MacRealization:
    """Two decode tables: acc = beta + sum Dw * Dx (DESIGN section 2)."""
    # An identity input table (8-bit uniform input, Fx = 0) leaves the weight table as the
    # layer's only precision: int16 would cap Fw while the accumulator has bits to spare, and the
    # first layer's rounding errors are the ones every later layer amplifies.
    fp = mac_fixed_point(node.name, qw.codes, qw.grid, qw.scale, qw.bias,
                         x_enc, x_enc.range, fine_bias=ctx.output_is_accumulator(node),
                         wide_weights=is_identity(x_enc))
    identity_dx = int(is_identity(x_enc) and fp.x_frac_bits == 0)
    tables = {} if identity_dx else {"dx": fp.x_table.astype(smallest_int_dtype(fp.x_table))}
    return MacRealization(fp.weights, decode_table(qw.grid, fp.w_frac_bits), fp.bias,
                          fp.acc_scale, fp.acc_bound, tables,
                          {"identity_dx": identity_dx, "product": 0},
                          {"mac_tables": "separable", "w_frac_bits": fp.w_frac_bits,
                           "x_frac_bits": fp.x_frac_bits})


def product_realization(node, qw, x_enc) -> MacRealization:
    """One table of products: acc = beta + sum P[w + x] (mcugen/lower/product.py). The kernels
    add byte offsets (stored weight = 4 x its row start, decoded input = 4 x its code), which
    saves them the scaling of an index: one add and one load per product."""
    pt = mac_product_table(node.name, qw.codes, qw.grid, qw.scale, qw.bias,
                           x_enc, x_enc.range)
    step = PRODUCT_ENTRY_BYTES
    offsets = step * x_enc.codes()
    return MacRealization(step * pt.w_index, step * pt.code_index, pt.bias, pt.acc_scale,
                          pt.acc_bound, {"pt": pt.table.astype(np.int32),
                                         "dx": offsets.astype(smallest_int_dtype(offsets))},
                          {"identity_dx": 0, "product": 1},
                          {"mac_tables": "product", "product_frac_bits": pt.frac_bits})


def lower_mac(node, ctx, kind, params, macs, blocking=None):
    """Decode or product tables, beta, proven bound, and the encoder or an int32
    output. `blocking(params, elem_bytes)` adds the kernel's loop structure (tiles, blocks)."""
    qw = ctx.qweights(node)
    x_enc = ctx.encoding(node.inputs[0])
    if ctx.product_tables and product_table_fits(qw.grid, x_enc):
        rz = product_realization(node, qw, x_enc)
    else:
        rz = separable_realization(node, ctx, qw, x_enc)
    consts = {"weights": rz.weights.astype(smallest_int_dtype(rz.weights)),
              "bias": rz.bias.astype(np.int32), **rz.tables}
    params = dict(params, x_offset=x_enc.table_offset, **rz.params)
    # decoded inputs live in a buffer of this type (at least int16: the codes and tables fit)
    band_dtype = "int32" if "dx" in consts and consts["dx"].dtype == np.int32 else "int16"
    params["band_dtype"] = band_dtype
    if blocking is not None:
        params.update(blocking(params, np.dtype(band_dtype).itemsize))
    params["w_codes"] = 0
    if ctx.weight_storage == "codes" and not is_identity(qw.grid):
        _store_codes(consts, params, qw, rz)
    info = {"macs": int(macs), "wbits": qw.grid.bits, "abits": x_enc.bits,
            "exponent": qw.grid.exponent, "scheme": qw.grid.scheme,
            "recon_error": qw.recon_error, "constant_channels": qw.constant_channels,
            "output_error": qw.output_error, "output_error_before": qw.output_error_before,
            **rz.info, "acc_bound": rz.acc_bound,
            "weight_storage": "codes" if params["w_codes"] else "decoded",
            "weight_bytes": sum(int(consts[k].nbytes) for k in ("weights", "weight_codes", "dw") if k in consts)}
    if ctx.output_is_accumulator(node):
        params["output_acc"] = 1
        ctx.set_output_scales(rz.acc_scale)
        info["encoder"] = "none (int32 output)"
    else:
        enc_consts, enc_params, enc_info = ctx.encoder_parts(
            node, node.attrs.get("activation"), rz.acc_scale, rz.acc_bound)
        consts.update(enc_consts)
        params.update(enc_params, output_acc=0)
        info = {**enc_info, **info}          # the layer's own abits/exponent take precedence
    if "stack_bytes" in params:
        info["kernel_stack_bytes"] = params["stack_bytes"]
    return ctx.step(node, kind, params=params, consts=consts, info=info)


def _store_codes(consts, params, qw, rz):
    """Packed b-bit weight codes and the layer's code table (code -> stored value) instead of
    the stored values: the kernel unpacks one block of output channels at a time into a stack
    buffer."""
    codes = qw.codes.reshape(qw.codes.shape[0], -1)
    packed, row_bytes = pack_codes(codes, qw.grid.bits, qw.grid.B)
    table = rz.code_table
    assert np.array_equal(table[codes + qw.grid.B], rz.weights)
    del consts["weights"]
    consts.update(weight_codes=packed, dw=table.astype(smallest_int_dtype(table)))
    rows = len(params["oc_offsets"])
    params.update(w_codes=1, w_bits=qw.grid.bits, w_row_bytes=row_bytes,
                  w_mask=(1 << qw.grid.bits) - 1, w_row=codes.shape[1],
                  wbuf_elems=rows * codes.shape[1])
    params["stack_bytes"] = (params.get("stack_bytes", 0)
                             + consts["dw"].itemsize * params["wbuf_elems"])


def decoded_weights(step) -> np.ndarray:
    """(rows, K) decoded weights, from whichever form the step stores them in."""
    p = step.params
    if not p.get("w_codes"):
        return step.consts["weights"].astype(np.int64).reshape(step.consts["bias"].size, -1)
    rows = step.consts["bias"].size
    values = unpack_codes(step.consts["weight_codes"], rows, p["w_row"], p["w_bits"], p["w_row_bytes"])
    return step.consts["dw"].astype(np.int64)[values]


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


def decode_input(step, x):
    """Codes -> fixed-point integers through the step's decode table (identity when elided)."""
    x = np.asarray(x, dtype=np.int64)
    if step.params["identity_dx"]:
        return x
    return step.consts["dx"].astype(np.int64)[x + step.params["x_offset"]]


def mac_accumulate(step, x_codes, w, mac):
    """sum_k W[c,k] * X[k] for the step's realization, with `mac(x, w)` the layer's plain
    multiply-accumulate of float64 arrays (exact: every partial sum is an integer below 2^31).
    Product tables: the kernels add P at byte offset w_k + dx[x_k]; per distinct stored weight v
    that is the MAC of the indicator (w == v) with P[(v + dx[x]) / 4]. The zero padding of `mac`
    matches the kernels', whose band holds offset 0 there, and P[v / 4] (input code 0) = 0."""
    x = decode_input(step, x_codes)
    if not step.params.get("product"):
        return mac(x.astype(np.float64), w.astype(np.float64))
    table = step.consts["pt"].astype(np.int64)
    total = 0.0
    for v in np.unique(w):
        column = table[(v + x) // PRODUCT_ENTRY_BYTES]
        if column.any():
            total = total + mac(column.astype(np.float64), (w == v).astype(np.float64))
    return total


def encode_output(step, acc):
    """(N, C, M) int accumulators -> codes (row = channel), or the accumulators themselves for
    the output."""
    if step.params["output_acc"]:
        return acc
    return encode(step, acc, np.arange(acc.shape[1])[None, :, None])


def check_bias(node, ctx, n_out, bias):
    if bias is None:
        return np.zeros(n_out)
    bias = np.asarray(bias, dtype=np.float64).reshape(-1)
    if bias.size == 1:
        bias = np.full(n_out, bias[0])
    if bias.size != n_out:
        ctx.fail(node, f"bias has {bias.size} values for {n_out} output channels")
    return bias
