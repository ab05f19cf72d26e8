"""Gemm and MatMul with a constant right operand: a fully connected layer y = x W^T + b."""
from __future__ import annotations

import numpy as np

from mcugen.ir.graph import Node
from mcugen.ops import OpDef, register
from mcugen.ops.matmul import matmul_of_activations
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
        if node.op_type == "MatMul" and ctx.const(node.input[1]) is None:
            return matmul_of_activations(node, ctx)
        if node.op_type == "MatMul" and len(in_shape) >= 3 and in_shape[0] == 1:
            return token_linear(node, ctx)
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
            w, bias = w.T, ctx.optional_const(node, 2)       # a bias: frontend/linear.py
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


def token_linear(node, ctx):
    """MatMul of tokens [1, ..., T, K] by a constant [K, M] (a transformer's Linear; a bias the
    frontend fused in as a third input): the same y = x W + b on every token, lowered as a 1x1
    Conv over the tokens viewed [1, K, T, 1], so every target's conv kernel (tiled, SIMD, on
    GAP8's cluster) runs it and the weights are quantized per output feature. Transposes bring
    the features to the channel axis and back; passes/rewrites.py cancels the pairs between
    consecutive Linears and moves elementwise activations in, to fuse into the conv."""
    x, out = node.input[0], node.output[0]
    in_shape, out_shape = tuple(ctx.shape(x)), tuple(ctx.shape(out))
    w = ctx.require_const(node, 1, "weight")
    if w.ndim != 2:
        ctx.fail(node, f"MatMul of tokens needs a 2-D constant right operand, got rank {w.ndim}")
    k, m = w.shape
    tokens = int(np.prod(in_shape[1:-1]))
    bias = check_bias(node, ctx, m, ctx.optional_const(node, 2))
    names = [f"{out}/tokens", f"{out}/features", f"{out}/features_2d", f"{out}/conv",
             f"{out}/conv_1d", f"{out}/tokens_out"]
    shapes = [(1, tokens, k), (1, k, tokens), (1, k, tokens, 1), (1, m, tokens, 1),
              (1, m, tokens), (1, tokens, m)]
    for name, shape in zip(names, shapes):
        ctx.shapes[name] = shape

    def view(name, src, dst, shape):
        return Node(name=f"{node.name}/{name}", op="Reshape", inputs=[src], output=dst,
                    attrs={"shape": list(shape)}, onnx_op="MatMul")

    def move(name, src, dst):
        return Node(name=f"{node.name}/{name}", op="Transpose", inputs=[src], output=dst,
                    attrs={"perm": [0, 2, 1]}, onnx_op="MatMul")
    conv = Node(name=node.name, op="Conv", inputs=[names[2]], output=names[3], onnx_op="MatMul",
                attrs={"group": 1, "strides": [1, 1], "dilations": [1, 1], "pads": [0, 0, 0, 0],
                       "activation": None},
                params={"weight": np.asarray(w, dtype=np.float64).T.reshape(m, k, 1, 1).copy(),
                        "bias": bias})
    return [view("flatten_tokens", x, names[0], shapes[0]), move("to_features", names[0], names[1]),
            view("as_2d", names[1], names[2], shapes[2]), conv,
            view("as_1d", names[3], names[4], shapes[4]), move("to_tokens", names[4], names[5]),
            view("unflatten_tokens", names[5], out, out_shape)]
