"""Gemm and MatMul with a constant right operand: a fully connected layer y = x W^T + b."""
from __future__ import annotations

import numpy as np

from mcugen.ir.graph import Node
from mcugen.ops import OpDef, register
from mcugen.numerics import activation_fn
from mcugen.ops._mac import (check_bias, decoded_weights, encode_output,
                             lower_mac, mac_accumulate)


@register
class Gemm(OpDef):
    kind = "Gemm"
    onnx_types = ("Gemm", "MatMul")
    step_kinds = ("dense",)
    is_mac = True
    applies_activation = True
    fuses_activation = "per_channel"

    def from_onnx(self, node, ctx):
        x = node.input[0]
        in_shape = ctx.shape(x)
        if len(in_shape) != 2 or in_shape[0] != 1:
            ctx.fail(node, f"needs a [1, K] input, got {list(in_shape)} (add a Flatten before it)")
        w = ctx.require_const(node, 1, "weight")
        attrs = ctx.attrs(node)
        if node.op_type == "Gemm":
            if attrs.get("transA", 0):
                ctx.fail(node, "transA=1 is not supported; supported: transA=0 with any transB")
            alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
            w = (w if attrs.get("transB", 0) else w.T) * alpha
            bias = ctx.optional_const(node, 2)
            bias = None if bias is None else np.asarray(bias, dtype=np.float64) * beta
        else:
            if w.ndim != 2:
                ctx.fail(node, f"MatMul needs a 2-D constant right operand, got rank {w.ndim}")
            w, bias = w.T, None
        bias = check_bias(node, ctx, w.shape[0], bias)
        return Node(name=node.name, op=self.kind, inputs=[x], output=node.output[0],
                    attrs={"activation": None},
                    params={"weight": np.ascontiguousarray(w, dtype=np.float64), "bias": bias},
                    onnx_op=node.op_type)

    def infer_shape(self, node, in_shapes):
        return (in_shapes[0][0], node.params["weight"].shape[0])

    def run_float(self, node, inputs):
        y = inputs[0].reshape(inputs[0].shape[0], -1) @ node.params["weight"].T + node.params["bias"]
        return activation_fn(node.attrs["activation"])(y)

    def lower(self, node, ctx):
        n_out, k = node.params["weight"].shape
        params = {"in_features": k, "out_features": n_out}
        return lower_mac(node, ctx, "dense", params, macs=n_out * k)

    def run_int(self, step, inputs):
        x = inputs[0].reshape(inputs[0].shape[0], -1)
        acc = mac_accumulate(step, x, decoded_weights(step), lambda x, w: x @ w.T)
        acc = np.rint(acc).astype(np.int64) + step.consts["bias"].astype(np.int64)
        return encode_output(step, acc[:, :, None])[:, :, 0]
