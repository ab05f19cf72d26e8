"""Relu, Clip (ReLU6) and LeakyRelu. Normally fused into the producer's encoder; when they
stand alone (after a pool, say) they become a code-to-code look-up table."""
from __future__ import annotations

import numpy as np

from mcugen.ir.graph import Node
from mcugen.ops import OpDef, register
from mcugen.ops._common import activation_fn


def activation_spec(node, ctx):
    if node.op_type == "Relu":
        return ("Relu",)
    if node.op_type == "LeakyRelu":
        return ("LeakyRelu", float(ctx.attrs(node).get("alpha", 0.01)))
    attrs = ctx.attrs(node)
    lo, hi = attrs.get("min", -np.inf), attrs.get("max", np.inf)     # opset < 11: attributes
    if len(node.input) > 1 and node.input[1]:
        lo = float(ctx.require_const(node, 1, "min"))
    if len(node.input) > 2 and node.input[2]:
        hi = float(ctx.require_const(node, 2, "max"))
    return ("Clip", float(lo), float(hi))


@register
class Activation(OpDef):
    kind = "Activation"
    onnx_types = ("Relu", "Clip", "LeakyRelu")
    step_kinds = ("recode",)

    def from_onnx(self, node, ctx):
        return Node(name=node.name, op=self.kind, inputs=[node.input[0]], output=node.output[0],
                    attrs={"activation": activation_spec(node, ctx)}, onnx_op=node.op_type)

    def infer_shape(self, node, in_shapes):
        return in_shapes[0]

    def run_float(self, node, inputs):
        return activation_fn(node.attrs["activation"])(inputs[0])

    def lower(self, node, ctx):
        sigma = activation_fn(node.attrs["activation"])
        return lower_recode(node, ctx, lambda values: sigma(values)[None, :], channels=1)

    def run_int(self, step, inputs):
        return run_recode(step, inputs[0])


def lower_recode(node, ctx, function, channels):
    """A code-to-code table per channel (or one for all): every input code decoded, `function`
    (real values (n,) -> (channels, n)) applied, encoded to the output's grid; exactly what
    simulated quantization computes, with no arithmetic at run time."""
    x, y = ctx.encoding(node.inputs[0]), ctx.encoding(node.output)
    lut = y.encode(function(x.decode(x.codes())))
    size = int(np.prod(ctx.shape(node.output)))
    params = {"channels": channels, "plane": size // channels, "n_codes": int(lut.shape[1]),
              "x_offset": x.table_offset}
    return ctx.step(node, "recode", params=params, consts={"lut": lut.astype(y.ctype)},
                    info={"abits": y.bits, "table_bytes": int(lut.astype(y.ctype).nbytes)})


def run_recode(step, codes):
    p = step.params
    n = codes.shape[0]
    index = codes.astype(np.int64).reshape(n, p["channels"], p["plane"]) + p["x_offset"]
    rows = np.arange(p["channels"])[None, :, None]
    return step.consts["lut"].astype(np.int64)[rows, index].reshape(codes.shape)
