"""Pad with zeros on the spatial axes: folded into the following Conv/pool by fold_pad."""
from __future__ import annotations

import numpy as np

from mcugen.ir.graph import Node
from mcugen.ops import OpDef, register


@register
class Pad(OpDef):
    kind = "Pad"
    onnx_types = ("Pad",)

    def from_onnx(self, node, ctx):
        attrs = ctx.attrs(node)
        if attrs.get("mode", b"constant") not in (b"constant", "constant"):
            ctx.fail(node, "only constant (zero) padding is supported")
        pads = attrs.get("pads")
        if pads is None:
            pads = ctx.require_const(node, 1, "pads")
        value = attrs.get("value", 0.0)
        if len(node.input) > 2 and node.input[2]:
            value = float(ctx.require_const(node, 2, "constant_value"))
        pads = [int(p) for p in np.asarray(pads).reshape(-1)]
        rank = len(pads) // 2
        if value != 0.0 or rank != 4 or any(pads[i] or pads[i + rank] for i in (0, 1)):
            ctx.fail(node, "only zero padding of the spatial axes of [1, C, H, W] is supported")
        return Node(name=node.name, op=self.kind, inputs=[node.input[0]], output=node.output[0],
                    attrs={"pads": [pads[2], pads[3], pads[6], pads[7]]}, onnx_op="Pad")

    def infer_shape(self, node, in_shapes):
        n, c, h, w = in_shapes[0]
        t, l, b, r = node.attrs["pads"]
        return (n, c, h + t + b, w + l + r)

    def run_float(self, node, inputs):
        t, l, b, r = node.attrs["pads"]
        return np.pad(inputs[0], ((0, 0), (0, 0), (t, b), (l, r)))

    def lower(self, node, ctx):
        ctx.fail(node, "a Pad must be followed by a Conv or a count_include_pad AveragePool "
                       "into which it is folded")
