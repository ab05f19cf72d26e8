"""Concat: copy each input's codes, through a code-to-code table when its encoding differs
from the output's (recoding through the common real value). A constant input (a class token)
is a Constant step of its own (ops/constant.py)."""
from __future__ import annotations

import numpy as np

from mcugen.ir.graph import Node
from mcugen.ops import OpDef, register, value_span
from mcugen.ops.constant import constant_operand


@register
class Concat(OpDef):
    kind = "Concat"
    onnx_types = ("Concat",)
    step_kinds = ("concat",)

    def step_value_range(self, step, input_ranges):
        """Its inputs' codes, or their recoded values (lut_*)."""
        return value_span(list(input_ranges) + [(int(v.min()), int(v.max()))
                                                for k, v in step.consts.items() if k.startswith("lut_")])

    def from_onnx(self, node, ctx):
        rank = len(ctx.shape(node.output[0]))
        axis = int(ctx.attrs(node)["axis"])
        axis = axis + rank if axis < 0 else axis
        if axis == 0:
            ctx.fail(node, "concatenation along the batch axis is not supported; supported: any other axis")
        activations = [name for name in node.input if ctx.const(name) is None]
        if not activations:
            ctx.fail(node, "every input is a constant (constant folding left it: an unsupported "
                           "type?); supported: at least one activation")
        constants = [constant_operand(node, ctx, i, activations[0])
                     for i, name in enumerate(node.input) if ctx.const(name) is not None]
        by_index = {c.name: c.output for c in constants}
        inputs = [by_index.get(f"{node.name}/constant{i}", name) for i, name in enumerate(node.input)]
        return constants + [Node(name=node.name, op=self.kind, inputs=inputs, output=node.output[0],
                                 attrs={"axis": axis}, onnx_op="Concat")]

    def infer_shape(self, node, in_shapes):
        out = list(in_shapes[0])
        out[node.attrs["axis"]] = sum(s[node.attrs["axis"]] for s in in_shapes)
        return tuple(out)

    def run_float(self, node, inputs):
        return np.concatenate(inputs, axis=node.attrs["axis"])

    def lower(self, node, ctx):
        axis = node.attrs["axis"]
        y = ctx.encoding(node.output)
        out_shape = ctx.shape(node.output)
        consts, chunks, offsets, recode = {}, [], [], []
        for i, tensor in enumerate(node.inputs):
            x = ctx.encoding(tensor)
            chunks.append(int(np.prod(ctx.shape(tensor)[axis:])))
            offsets.append(x.table_offset)
            same = x == y
            recode.append(int(not same))
            if not same:
                consts[f"lut_{i}"] = y.encode(x.decode(x.codes())).astype(y.ctype)
        params = {"outer": int(np.prod(out_shape[1:axis])), "n_inputs": len(node.inputs),
                  "chunks": chunks, "x_offsets": offsets, "recode": recode,
                  "out_chunk": int(np.prod(out_shape[axis:]))}
        return ctx.step(node, "concat", params=params, consts=consts, info={"abits": y.bits})

    def run_int(self, step, inputs):
        p = step.params
        parts = []
        for i, x in enumerate(inputs):
            x = x.astype(np.int64).reshape(x.shape[0], p["outer"], p["chunks"][i])
            if p["recode"][i]:
                x = step.consts[f"lut_{i}"].astype(np.int64)[x + p["x_offsets"][i]]
            parts.append(x)
        return np.concatenate(parts, axis=2)
