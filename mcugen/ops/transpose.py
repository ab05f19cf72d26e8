"""Transpose and Expand: strided copies of codes (transposes that keep memory order are
removed by the drop_noop_transpose pass)."""
from __future__ import annotations

import numpy as np

from mcugen.ir.graph import Node
from mcugen.ops import OpDef, register, value_span

MAX_RANK = 4   # dimensions after the batch


@register
class Transpose(OpDef):
    kind = "Transpose"
    onnx_types = ("Transpose",)
    step_kinds = ("transpose",)
    preserves_codes = True

    def step_value_range(self, step, input_ranges):
        return value_span(input_ranges)         # its inputs' codes, moved

    def from_onnx(self, node, ctx):
        rank = len(ctx.shape(node.input[0]))
        perm = list(ctx.attrs(node).get("perm", list(range(rank))[::-1]))
        if perm[0] != 0 or rank - 1 > MAX_RANK:
            ctx.fail(node, f"perm {perm} moves the batch axis or has rank > {MAX_RANK + 1}")
        return Node(name=node.name, op=self.kind, inputs=[node.input[0]], output=node.output[0],
                    attrs={"perm": perm}, onnx_op="Transpose")

    def infer_shape(self, node, in_shapes):
        return tuple(in_shapes[0][p] for p in node.attrs["perm"])

    def run_float(self, node, inputs):
        return np.transpose(inputs[0], node.attrs["perm"])

    def lower(self, node, ctx):
        in_shape = list(ctx.shape(node.inputs[0]))[1:]
        perm = [p - 1 for p in node.attrs["perm"][1:]]
        in_strides = [int(np.prod(in_shape[i + 1:])) for i in range(len(in_shape))]
        out_shape = [in_shape[p] for p in perm]
        pad = MAX_RANK - len(out_shape)
        params = {"out_dims": [1] * pad + out_shape,
                  "in_strides": [0] * pad + [in_strides[p] for p in perm]}
        return ctx.step(node, "transpose", params=params, consts={}, info={})

    def run_int(self, step, inputs):
        x = inputs[0]
        n = x.shape[0]
        flat = x.reshape(n, -1)
        dims, strides = step.params["out_dims"], step.params["in_strides"]
        grids = np.meshgrid(*[np.arange(d) for d in dims], indexing="ij")
        index = sum(g * s for g, s in zip(grids, strides)).reshape(-1)
        return flat[:, index]


@register
class Expand(OpDef):
    """Expand of an activation (an Expand of a constant is folded): the same strided copy as a
    Transpose, each broadcast axis read with stride 0."""
    kind = "Expand"
    onnx_types = ("Expand",)
    preserves_codes = True

    def step_value_range(self, step, input_ranges):
        return value_span(input_ranges)

    def from_onnx(self, node, ctx):
        ctx.require_const(node, 1, "shape")
        out = tuple(ctx.shape(node.output[0]))
        given = tuple(ctx.shape(node.input[0]))
        if len(out) - 1 > MAX_RANK or out[0] != 1:
            ctx.fail(node, f"expanding to {list(out)}; supported: [1, ...] of rank <= {MAX_RANK + 1}")
        padded = (1,) * (len(out) - len(given)) + given
        return Node(name=node.name, op=self.kind, inputs=[node.input[0]], output=node.output[0],
                    attrs={"from_shape": list(padded), "shape": list(out)}, onnx_op="Expand")

    def infer_shape(self, node, in_shapes):
        return tuple(node.attrs["shape"])

    def run_float(self, node, inputs):
        x = inputs[0].reshape((inputs[0].shape[0],) + tuple(node.attrs["from_shape"][1:]))
        return np.broadcast_to(x, x.shape[:1] + tuple(node.attrs["shape"][1:])).copy()

    def lower(self, node, ctx):
        given, out = node.attrs["from_shape"][1:], node.attrs["shape"][1:]
        strides = [0 if g == 1 and o > 1 else int(np.prod(given[i + 1:]))
                   for i, (g, o) in enumerate(zip(given, out))]
        pad = MAX_RANK - len(out)
        params = {"out_dims": [1] * pad + list(out), "in_strides": [0] * pad + strides}
        # a "transpose" step: the reference runs it with Transpose.run_int
        return ctx.step(node, "transpose", params=params, consts={}, info={})
