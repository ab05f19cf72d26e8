"""Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout: free (the buffer is aliased)."""
from __future__ import annotations

from mcugen.ir.graph import Node
from mcugen.ops import OpDef, register


@register
class Reshape(OpDef):
    kind = "Reshape"
    onnx_types = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout")
    preserves_codes = True

    def from_onnx(self, node, ctx):
        if node.op_type == "Dropout" and len(node.output) > 1 and node.output[1]:
            ctx.fail(node, "the mask output of Dropout is not supported")
        return Node(name=node.name, op=self.kind, inputs=[node.input[0]], output=node.output[0],
                    attrs={"shape": list(ctx.shape(node.output[0]))}, onnx_op=node.op_type)

    def infer_shape(self, node, in_shapes):
        return tuple(node.attrs["shape"])

    def run_float(self, node, inputs):
        return inputs[0].reshape((inputs[0].shape[0],) + tuple(node.attrs["shape"][1:]))

    def lower(self, node, ctx):
        return None

    def run_int(self, step, inputs):
        raise AssertionError("Reshape never becomes a step")
