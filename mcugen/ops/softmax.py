"""Softmax/LogSoftmax as the last op: run in float on the host side of the interface (the
integer model's logits give the same argmax); the frontend removes the node."""
from __future__ import annotations

import numpy as np

from mcugen.ir.graph import Node
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
        shape = ctx.shape(node.input[0])
        rank = len(shape)
        axis = int(ctx.attrs(node).get("axis", -1 if ctx.opset >= 13 else 1))
        axis = axis + rank if axis < 0 else axis
        if axis == rank - 1:
            ctx.set_output_transform(node.op_type, node.input[0])
            return None
        # before opset 13 the axis splits the shape into 2-D: axis 1 means over the whole
        # sample; from 13 on axis 1 is the same when every later dimension is 1 ([1, C, 1, 1])
        if axis != 1 or (ctx.opset >= 13 and any(d != 1 for d in shape[2:])):
            ctx.fail(node, f"softmax over axis {axis} of a {list(shape)} tensor is not supported; "
                           f"supported: the last axis, or axis 1 followed by dimensions of 1")
        flat = f"{node.output[0]}/flat"
        ctx.shapes[flat] = (1, int(np.prod(shape[1:])))
        ctx.set_output_transform(node.op_type, flat)
        return Node(name=f"{node.name}/flatten", op="Reshape", inputs=[node.input[0]], output=flat,
                    attrs={"shape": list(ctx.shapes[flat])}, onnx_op="Flatten")
