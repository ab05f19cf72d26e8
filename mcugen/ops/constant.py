"""A constant that takes part in an activation op as an operand of its own: a class token
concatenated to the patches, a positional embedding added to them, a mask multiplied in (a
constant per channel is an affine instead: ops/affine.py). It is quantized on its own grid
(its range is its largest magnitude), stored as codes and copied into its buffer when the step
runs, so the op that reads it sees one more activation.

The node reads the activation it is combined with: that input only places the step (just
before the op, while that activation is live anyway) and gives the float kernel its batch.
"""
from __future__ import annotations

import numpy as np

from mcugen.ir.graph import Node
from mcugen.ops import OpDef, register


def constant_operand(node, ctx, index, partner, shape=None, value=None):
    """The Node making input `index` of `node` (a constant; `value` instead of its own when
    given) an activation tensor of the output's rank (batch 1 in front when it has fewer
    axes), broadcast to `shape` when given; placed beside the activation `partner`."""
    value = np.asarray(ctx.const(node.input[index]) if value is None else value, dtype=np.float64)
    rank = len(ctx.shape(node.output[0]))
    value = value.reshape((1,) * (rank - value.ndim) + value.shape)
    if value.shape[0] != 1:
        ctx.fail(node, f"constant operand of shape {list(value.shape)} has a batch of "
                       f"{value.shape[0]}; supported: batch 1")
    if shape is not None:
        value = np.broadcast_to(value, tuple(shape)).copy()
    tensor = f"{node.input[index]}@{node.name}"
    ctx.shapes[tensor] = tuple(int(d) for d in value.shape)
    return Node(name=f"{node.name}/constant{index}", op="Constant", inputs=[partner],
                output=tensor, attrs={"shape": list(value.shape)}, params={"value": value},
                onnx_op=node.op_type)


@register
class Constant(OpDef):
    kind = "Constant"
    step_kinds = ("constant",)

    def output_nonnegative(self, node, inputs_nonnegative) -> bool:
        return bool(np.all(node.params["value"] >= 0))

    def step_value_range(self, step, input_ranges):
        codes = step.consts["codes"]
        return (int(codes.min()), int(codes.max()))

    def elements_read(self, step, schedule) -> int:
        return step.params["size"]                  # its own codes, not its input

    def infer_shape(self, node, in_shapes):
        return tuple(node.attrs["shape"])

    def run_float(self, node, inputs):
        value = node.params["value"]
        return np.broadcast_to(value, (inputs[0].shape[0],) + value.shape[1:]).copy()

    def lower(self, node, ctx):
        y = ctx.encoding(node.output)
        codes = y.encode(node.params["value"]).reshape(-1).astype(y.ctype)
        return ctx.step(node, "constant", params={"size": int(codes.size)}, consts={"codes": codes},
                        info={"abits": y.bits})

    def run_int(self, step, inputs):
        codes = step.consts["codes"].astype(np.int64)
        return np.broadcast_to(codes, (inputs[0].shape[0], codes.size)).copy()
