"""Transpose: a pure data movement on codes (ones that keep memory order are removed by the
drop_noop_transpose pass)."""
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
