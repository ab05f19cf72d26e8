"""Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout: free (the buffer is aliased)."""
from __future__ import annotations

import numpy as np

from mcugen.ir.graph import Node
from mcugen.ops import OpDef, register


@register
class Reshape(OpDef):
    kind = "Reshape"
    onnx_types = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout")
    preserves_codes = True

    def from_onnx(self, node, ctx):
        if node.op_type == "Dropout":
            _check_inference_dropout(node, ctx)
        in_shape, out_shape = ctx.shape(node.input[0]), ctx.shape(node.output[0])
        if not out_shape or out_shape[0] != 1 or np.prod(out_shape[1:]) != np.prod(in_shape[1:]):
            ctx.fail(node, f"{list(in_shape)} -> {list(out_shape)} moves data across the batch "
                           f"axis; only reshapes of one sample [1, ...] -> [1, ...] are supported")
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


def _check_inference_dropout(node, ctx):
    """Dropout is the identity at inference: refuse training mode (a constant true with a
    non-zero ratio) and a mask output that something reads (an unread one is harmless)."""
    if len(node.output) > 1 and node.output[1] and ctx.is_read(node.output[1]):
        ctx.fail(node, "the mask output of Dropout is read; only the data output is supported")
    ratio = ctx.const(node.input[1]) if len(node.input) > 1 and node.input[1] else None
    ratio = float(ctx.attrs(node).get("ratio", 0.5)) if ratio is None else float(np.asarray(ratio).reshape(-1)[0])
    training = ctx.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if len(node.input) > 2 and node.input[2] and training is None:
        ctx.fail(node, "training_mode must be a constant (false at inference)")
    is_test = ctx.attrs(node).get("is_test", 1)              # opset < 7
    if ratio != 0.0 and ((training is not None and bool(np.asarray(training).reshape(-1)[0])) or not is_test):
        ctx.fail(node, "Dropout in training mode drops values at random; export the model in "
                       "inference mode (training_mode false)")
