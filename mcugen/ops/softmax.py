"""Softmax/LogSoftmax as the last op: run in float on the host side of the interface (the
integer model's logits give the same argmax); the frontend removes the node."""
from __future__ import annotations

import numpy as np

from mcugen.ops import OpDef, register


def apply_output_transform(name, y):
    if name is None:
        return y
    z = y - y.max(axis=-1, keepdims=True)
    if name == "Softmax":
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


@register
class Softmax(OpDef):
    kind = "Softmax"
    onnx_types = ("Softmax", "LogSoftmax")

    def from_onnx(self, node, ctx):
        if not ctx.is_graph_output(node.output[0]):
            ctx.fail(node, "Softmax/LogSoftmax is supported only as the model's last op")
        rank = len(ctx.shape(node.input[0]))
        axis = int(ctx.attrs(node).get("axis", -1 if ctx.opset >= 13 else 1))
        if axis not in (-1, rank - 1) and not (rank == 2 and axis == 1):
            ctx.fail(node, f"softmax over axis {axis} of a rank-{rank} tensor is not supported")
        ctx.set_output_transform(node.op_type, node.input[0])
        return None
