"""What Conv and Gemm share: weight/bias params and the lowering of a MAC layer."""
from __future__ import annotations

import numpy as np

from mcugen.lower.encoders import threshold_table
from mcugen.lower.fixedpoint import is_identity, mac_fixed_point, smallest_int_dtype


def lower_mac(node, ctx, kind, params, macs):
    """Decode tables, beta, proven bound, and the encoder (thresholds) or an int32 output."""
    qw = ctx.qweights(node)
    x_enc = ctx.encoding(node.inputs[0])
    fp = mac_fixed_point(node.name, qw.codes, qw.grid, qw.scale, node.params["bias"],
                         x_enc, x_enc.range)
    consts = {"weights": fp.weights.astype(smallest_int_dtype(fp.weights)),
              "bias": fp.bias.astype(np.int32)}
    params = dict(params, x_offset=x_enc.B if x_enc.signed else 0,
                  identity_dx=int(is_identity(x_enc) and fp.x_frac_bits == 0))
    if not params["identity_dx"]:
        consts["dx"] = fp.x_table.astype(smallest_int_dtype(fp.x_table))
    info = {"macs": int(macs), "wbits": qw.grid.bits, "abits": x_enc.bits,
            "exponent": qw.grid.exponent, "scheme": qw.grid.scheme,
            "recon_error": qw.recon_error, "w_frac_bits": fp.w_frac_bits,
            "x_frac_bits": fp.x_frac_bits, "acc_bound": fp.acc_bound,
            "weight_bytes": int(consts["weights"].nbytes)}
    if ctx.output_is_accumulator(node):
        params["output_acc"] = 1
        ctx.set_output_scales(fp.acc_scale)
        info["encoder"] = "none (int32 output)"
    else:
        y_enc = ctx.encoding(node.output)
        thresholds = threshold_table(y_enc, node.attrs.get("activation"), fp.acc_scale,
                                     fp.acc_bound)
        consts["thresholds"] = thresholds
        params.update(output_acc=0, n_thresholds=thresholds.shape[1],
                      code_min=-y_enc.B if y_enc.signed else 0)
        info.update(encoder="threshold", encoder_max_code_error=0,
                    table_bytes=int(thresholds.nbytes))
    return ctx.step(node, kind, params=params, consts=consts, info=info)


def decode_input(step, x):
    """Codes -> fixed-point integers through the step's decode table (identity when elided)."""
    x = np.asarray(x, dtype=np.int64)
    if step.params["identity_dx"]:
        return x
    return step.consts["dx"].astype(np.int64)[x + step.params["x_offset"]]


def encode_output(step, acc):
    """(N, C, M) int accumulators -> codes, or the accumulators themselves for the output."""
    from mcugen.lower.encoders import apply_thresholds
    if step.params["output_acc"]:
        return acc
    return apply_thresholds(acc, step.consts["thresholds"], step.params["code_min"])


def check_bias(node, ctx, n_out, bias):
    if bias is None:
        return np.zeros(n_out)
    bias = np.asarray(bias, dtype=np.float64).reshape(-1)
    if bias.size == 1:
        bias = np.full(n_out, bias[0])
    if bias.size != n_out:
        ctx.fail(node, f"bias has {bias.size} values for {n_out} output channels")
    return bias
