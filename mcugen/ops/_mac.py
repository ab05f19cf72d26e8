"""What Conv and Gemm share: weight/bias params and the lowering of a MAC layer."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcugen.lower.decode_width import decode_width
from mcugen.lower.encoders import encode
from mcugen.lower.fixedpoint import (decode_table, is_identity, mac_fixed_point, pack_codes,
                                     smallest_int_dtype, unpack_codes)
from mcugen.lower.product import mac_product_table, product_table_fits


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
    # the tables' limits: --decode-bits and the board's SIMD lanes (lower/decode_width.py)
    width = decode_width(ctx.decode_bits, qw, x_enc)
    fp = mac_fixed_point(node.name, qw.codes, qw.grid, qw.scale, qw.bias,
                         x_enc, x_enc.range, fine_bias=ctx.output_is_accumulator(node),
                         w_limit=width.w_limit, x_limit=width.x_limit)
    identity_dx = int(is_identity(x_enc) and fp.x_frac_bits == 0)
    tables = {} if identity_dx else {"dx": fp.x_table.astype(smallest_int_dtype(fp.x_table))}
    return MacRealization(fp.weights, decode_table(qw.grid, fp.w_frac_bits), fp.bias,
                          fp.acc_scale, fp.acc_bound, tables,
                          {"identity_dx": identity_dx, "product": 0, "decode_bits": width.bits},
                          {"mac_tables": "separable", "w_frac_bits": fp.w_frac_bits,
                           "x_frac_bits": fp.x_frac_bits, "decode_bits": width.bits or None,
                           "decode8_cost": width.cost8})


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
                          {"identity_dx": 0, "product": 1, "decode_bits": 0},
                          {"mac_tables": "product", "product_frac_bits": pt.frac_bits})


def lower_mac(node, ctx, kind, params, macs):
    """Decode or product tables, beta, proven bound, and the encoder or an int32 output. How a
    target's kernel loops over it (tiles, register blocks) is the target's plan, not here."""
    qw = ctx.qweights(node)
    x_enc = ctx.encoding(node.inputs[0])
    if ctx.product_tables and product_table_fits(qw.grid, x_enc):
        rz = product_realization(node, qw, x_enc)
    else:
        rz = separable_realization(node, ctx, qw, x_enc)
    consts = {"weights": rz.weights.astype(smallest_int_dtype(rz.weights)),
              "bias": rz.bias.astype(np.int32), **rz.tables}
    params = dict(params, x_offset=x_enc.table_offset, **rz.params)
    params["band_dtype"] = band_dtype(consts, x_enc, rz.params["decode_bits"])
    params["w_codes"] = 0
    if ctx.weight_storage == "codes" and not is_identity(qw.grid):
        _store_codes(consts, params, qw, rz)
    info = {"macs": int(macs), "wbits": qw.grid.bits, "abits": x_enc.bits,
            "exponent": qw.grid.exponent, "scheme": qw.grid.scheme,
            "recon_error": qw.recon_error, "constant_channels": qw.constant_channels,
            "output_error": qw.output_error, "output_error_before": qw.output_error_before,
            **rz.info, "acc_bound": rz.acc_bound,
            "weight_storage": "codes" if params["w_codes"] else "decoded",
            "weight_bytes": sum(int(consts[k].nbytes) for k in ("weights", "weight_codes", "dw") if k in consts),
            "w_lanes": qw.grid.lanes, **ctx.grid_choice(node.inputs[0])}
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
    return ctx.step(node, kind, params=params, consts=consts, info=info)


def band_dtype(consts, x_enc, decode_bits) -> str:
    """The type of the buffer a kernel decodes inputs into: that of the decoded values under
    8-bit decoding (uint8 for unsigned inputs), else at least int16."""
    if decode_bits == 8:
        return "int8" if x_enc.signed else "uint8"
    values = consts["dx"] if "dx" in consts else x_enc.codes()
    return "int32" if smallest_int_dtype(values) == "int32" else "int16"


def _store_codes(consts, params, qw, rz):
    """Packed b-bit weight codes and the layer's code table (code -> stored value) instead of
    the stored values (a kernel unpacks them as it goes)."""
    codes = qw.codes.reshape(qw.codes.shape[0], -1)
    packed, row_bytes = pack_codes(codes, qw.grid.bits, qw.grid.B)
    table = rz.code_table
    assert np.array_equal(table[codes + qw.grid.B], rz.weights)
    del consts["weights"]
    consts.update(weight_codes=packed, dw=table.astype(smallest_int_dtype(table)))
    params.update(w_codes=1, w_bits=qw.grid.bits, w_row_bytes=row_bytes,
                  w_mask=(1 << qw.grid.bits) - 1, w_row=codes.shape[1])


def decoded_weights(step) -> np.ndarray:
    """(rows, K) decoded weights, from whichever form the step stores them in."""
    p = step.params
    if not p.get("w_codes"):
        return step.consts["weights"].astype(np.int64).reshape(step.consts["bias"].size, -1)
    rows = step.consts["bias"].size
    values = unpack_codes(step.consts["weight_codes"], rows, p["w_row"], p["w_bits"], p["w_row_bytes"])
    return step.consts["dw"].astype(np.int64)[values]


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
    # the shape of the result even when every product is zero (an all-zero input batch)
    total = mac(np.zeros(x.shape), np.zeros(w.shape))
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
