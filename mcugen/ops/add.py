"""Add/Sub (and a Sum of two) of two activations (by a constant: ops/affine.py): decode both to a common fixed point, add, encode again."""
from __future__ import annotations

import numpy as np
from onnx import helper as onnx_helper

from mcugen.ir.graph import Node
from mcugen.lower.encoders import encode
from mcugen.lower.fixedpoint import common_point_table, stores_levels
from mcugen.ops import OpDef, register
from mcugen.numerics import activation_fn
from mcugen.ops.affine import affine_from_onnx
from mcugen.ops.constant import constant_operand

# the common unit is max(R_a, R_b) / 2^29: both tables stay within 2^29, so their sum within
# 2^30 < int32; 2^16 rounded the finest steps of an 8-bit power grid (near 0) by ~5%
COMMON_POINT_BITS = 29


@register
class Add(OpDef):
    kind = "Add"
    onnx_types = ("Add", "Sub", "Sum")
    step_kinds = ("add",)
    applies_activation = True
    fuses_activation = "elementwise"

    def from_onnx(self, node, ctx):
        if node.op_type == "Sum" and len(node.input) == 1:
            return Node(name=node.name, op="Reshape", inputs=[node.input[0]], output=node.output[0],
                        attrs={"shape": list(ctx.shape(node.output[0]))}, onnx_op="Sum")
        if node.op_type == "Sum" and len(node.input) > 2:
            return self._chain(node, ctx)
        consts = [ctx.const(name) for name in node.input]
        if consts[0] is not None or consts[1] is not None:
            return affine_from_onnx(node, ctx, consts) or self._with_constant(node, ctx, consts)
        a, b = node.input
        if tuple(ctx.shape(a)) != tuple(ctx.shape(b)):
            ctx.fail(node, f"broadcasting {list(ctx.shape(a))} with {list(ctx.shape(b))} is "
                           f"not supported; both operands need the same shape")
        return Node(name=node.name, op=self.kind, inputs=[a, b], output=node.output[0],
                    attrs={"activation": None, "negate_b": node.op_type == "Sub"},
                    onnx_op=node.op_type)

    def _chain(self, node, ctx):
        """A Sum of n > 2 inputs: n - 1 Adds, left to right (each encodes its partial sum)."""
        nodes, total = [], node.input[0]
        for k, name in enumerate(node.input[1:], start=1):
            out = node.output[0] if k == len(node.input) - 1 else f"{node.output[0]}/partial{k}"
            ctx.shapes.setdefault(out, tuple(ctx.shape(node.output[0])))
            pair = onnx_helper.make_node("Sum", [total, name], [out], name=f"{node.name}/add{k}")
            added = self.from_onnx(pair, ctx)
            nodes.extend(added if isinstance(added, list) else [added])
            total = out
        return nodes

    def _with_constant(self, node, ctx, consts):
        """x + C or x - C (or C - x) with C varying along more than the channels (a positional
        embedding): C, broadcast to the output, becomes an operand of its own."""
        c_index = 0 if consts[0] is not None else 1
        x = node.input[1 - c_index]
        out = ctx.shape(node.output[0])
        if tuple(ctx.shape(x)) != tuple(out):
            ctx.fail(node, f"the activation {list(ctx.shape(x))} is broadcast to {list(out)}; "
                           f"supported: a constant that broadcasts to the activation's shape")
        constant = constant_operand(node, ctx, c_index, x, shape=out)
        inputs = [constant.output, x] if c_index == 0 else [x, constant.output]
        return [constant, Node(name=node.name, op=self.kind, inputs=inputs, output=node.output[0],
                               attrs={"activation": None, "negate_b": node.op_type == "Sub"},
                               onnx_op=node.op_type)]

    def infer_shape(self, node, in_shapes):
        return in_shapes[0]

    def run_float(self, node, inputs):
        b = -inputs[1] if node.attrs["negate_b"] else inputs[1]
        return activation_fn(node.attrs["activation"])(inputs[0] + b)

    def lower(self, node, ctx):
        ea, eb = (ctx.encoding(t) for t in node.inputs)
        unit = max(ea.range, eb.range) / (1 << COMMON_POINT_BITS)
        table_a = common_point_table(ea, ea.range, unit)
        table_b = common_point_table(eb, eb.range, unit)
        if node.attrs["negate_b"]:
            table_b = -table_b
        bound = int(np.abs(table_a).max() + np.abs(table_b).max())
        consts, params, info = ctx.encoder_parts(node, node.attrs["activation"], [unit], bound)
        params.update(size=int(np.prod(ctx.shape(node.output))),
                      a_offset=ea.table_offset, b_offset=eb.table_offset)
        # an input that stores levels holds only its written values, a few of its table's
        # entries: a target's kernel may depend on that (codegen/add_plan.py's pair table)
        for key, grid in (("a_values", ea), ("b_values", eb)):
            if stores_levels(grid):
                params[key] = [int(v) for v in grid.written()]
        consts.update(table_a=table_a.astype(np.int32), table_b=table_b.astype(np.int32))
        return ctx.step(node, "add", params=params, consts=consts, info=info)

    def run_int(self, step, inputs):
        p = step.params
        for key, values in zip(("a_values", "b_values"), inputs):
            check_listed(step, key, values)
        a = step.consts["table_a"].astype(np.int64)[inputs[0].astype(np.int64) + p["a_offset"]]
        b = step.consts["table_b"].astype(np.int64)[inputs[1].astype(np.int64) + p["b_offset"]]
        return encode(step, a + b, 0)


def check_listed(step, key, values):
    """The values an input holds are among those lower listed for it (`key`): a kernel planned
    over the listed values alone (the pair table's maps) reads a wrong row for any other, a
    difference no sanitizer sees. Every run of the reference checks it."""
    listed = step.params.get(key)
    if listed is not None and not np.isin(values, listed).all():
        stray = sorted(set(np.unique(values).tolist()) - set(listed))[:4]
        raise AssertionError(f"{step.name}: its input holds {stray}, not among its {key} {listed}")
