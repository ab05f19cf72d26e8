"""ReduceMean, ReduceSum (decode, sum, encode with the divisor folded into the encoder, as
AveragePool) and ReduceMax, ReduceMin (on codes: the encoding is monotone), over any axes of a
static tensor.

The frontend normalizes the axes: the batch axis and axes of size 1 reduce nothing; a mean or
max over H and W of [1, C, H, W] is the global pool (an AveragePool or MaxPool node, so targets
with a pool kernel of their own run it: the dynamo exporter writes AdaptiveAvgPool2d(1) this
way); reduced axes that are not adjacent are first moved last by a Transpose node. A step then
reduces the middle axis of [outer, n, inner].
"""
from __future__ import annotations

import numpy as np

from mcugen.ir.graph import Node
from mcugen.lower.encoders import encode
from mcugen.lower.fixedpoint import decode_table, table_scale
from mcugen.numerics import activation_fn
from mcugen.ops import OpDef, register, value_span
from mcugen.ops.pool import sum_frac_bits

SUMS = {"ReduceMean": "mean", "ReduceSum": "sum"}
EXTREMES = {"ReduceMax": "max", "ReduceMin": "min"}


def _reduced_axes(node, ctx, rank) -> list:
    """The ONNX axes (attribute before opset 18, ReduceSum's input from 13), normalized and
    without the axes that reduce nothing (the batch, size 1)."""
    attrs = ctx.attrs(node)
    axes = attrs.get("axes")
    if len(node.input) > 1 and node.input[1]:
        axes = ctx.require_const(node, 1, "axes")
    if axes is None or len(np.asarray(axes).reshape(-1)) == 0:
        if attrs.get("noop_with_empty_axes", 0):
            return []
        axes = range(rank)
    shape = ctx.shape(node.input[0])
    axes = sorted({int(a) + rank if int(a) < 0 else int(a) for a in np.asarray(list(axes)).reshape(-1)})
    if any(not 0 <= a < rank for a in axes):
        ctx.fail(node, f"axes {list(axes)} are outside the input's rank {rank}")
    return [a for a in axes if a > 0 and shape[a] > 1]


def _to_nodes(node, ctx, kind, mode):
    """The IR nodes of one ONNX reduce node (see the module docstring)."""
    x, out = node.input[0], node.output[0]
    shape = tuple(ctx.shape(x))
    axes = _reduced_axes(node, ctx, len(shape))
    across_channels = 1 in axes          # before a Transpose renumbers them
    if not axes:
        return Node(name=node.name, op="Reshape", inputs=[x], output=out,
                    attrs={"shape": list(ctx.shape(out))}, onnx_op=node.op_type)
    if len(shape) == 4 and axes == [2, 3] and mode in ("mean", "max"):
        return _global_pool(node, ctx, mode)
    nodes = []
    if axes != list(range(axes[0], axes[0] + len(axes))):
        kept = [a for a in range(len(shape)) if a not in axes]
        moved = f"{out}/reduced_axes_last"
        ctx.shapes[moved] = tuple(shape[a] for a in kept + axes)
        nodes.append(Node(name=f"{node.name}/transpose", op="Transpose", inputs=[x], output=moved,
                          attrs={"perm": kept + axes}, onnx_op=node.op_type))
        x, axes = moved, list(range(len(kept), len(shape)))
    nodes.append(Node(name=node.name, op=kind, inputs=[x], output=out, onnx_op=node.op_type,
                      attrs={"mode": mode, "axes": axes, "shape": list(ctx.shape(out)),
                             "across_channels": across_channels,
                             "activation": None}))
    return nodes


def _global_pool(node, ctx, mode):
    """A mean (max) over H and W of [1, C, H, W]: the global AveragePool (MaxPool), then a free
    reshape when keepdims=0 drops the two axes."""
    x, out = node.input[0], node.output[0]
    _, c, h, w = ctx.shape(x)
    attrs = {"kernel": [h, w], "strides": [1, 1], "pads": [0, 0, 0, 0]}
    attrs.update({"counted": [0, 0, 0, 0]} if mode == "mean" else {"dilations": [1, 1]})
    op = "AveragePool" if mode == "mean" else "MaxPool"
    if tuple(ctx.shape(out)) == (1, c, 1, 1):
        return Node(name=node.name, op=op, inputs=[x], output=out, attrs=attrs, onnx_op=node.op_type)
    pooled = f"{out}/global_pool"
    ctx.shapes[pooled] = (1, c, 1, 1)
    return [Node(name=node.name, op=op, inputs=[x], output=pooled, attrs=attrs, onnx_op=node.op_type),
            Node(name=f"{node.name}/reshape", op="Reshape", inputs=[pooled], output=out,
                 attrs={"shape": list(ctx.shape(out))}, onnx_op=node.op_type)]


def _split(shape, axes) -> tuple:
    """[outer, n, inner] of `shape` (batch first) reduced over the adjacent `axes`."""
    outer = int(np.prod(shape[1:axes[0]]))
    n = int(np.prod([shape[a] for a in axes]))
    inner = int(np.prod(shape[axes[-1] + 1:]))
    return outer, n, inner


def _reduced(node, values, reduce):
    """`reduce` over the node's axes, in the ONNX output's shape (keepdims or not: the same
    memory order)."""
    out = reduce(values, axis=tuple(node.attrs["axes"]), keepdims=True)
    return out.reshape((values.shape[0],) + tuple(node.attrs["shape"][1:]))


@register
class ReduceSum(OpDef):
    kind = "ReduceSum"
    onnx_types = tuple(SUMS)
    step_kinds = ("reduce_sum",)
    applies_activation = True
    fuses_activation = "elementwise"
    sign_follows_inputs = True

    def from_onnx(self, node, ctx):
        return _to_nodes(node, ctx, self.kind, SUMS[node.op_type])

    def infer_shape(self, node, in_shapes):
        return tuple(node.attrs["shape"])

    def run_float(self, node, inputs):
        reduce = np.mean if node.attrs["mode"] == "mean" else np.sum
        return activation_fn(node.attrs["activation"])(_reduced(node, inputs[0], reduce))

    def lower(self, node, ctx):
        x = ctx.encoding(node.inputs[0])
        outer, n, inner = _split(ctx.shape(node.inputs[0]), node.attrs["axes"])
        frac = sum_frac_bits(node, ctx, x, n)
        table = decode_table(x, frac)
        divisor = n if node.attrs["mode"] == "mean" else 1
        bound = int(np.abs(table).max()) * n
        consts, params, info = ctx.encoder_parts(node, node.attrs["activation"],
                                                 [x.range / (table_scale(x, frac) * divisor)], bound)
        params.update(outer=outer, n=n, inner=inner, x_offset=x.table_offset)
        consts["dx"] = table.astype(np.int32)
        info.update(x_frac_bits=frac, acc_bound=bound)
        return ctx.step(node, "reduce_sum", params=params, consts=consts, info=info)

    def run_int(self, step, inputs):
        p = step.params
        x = step.consts["dx"].astype(np.int64)[inputs[0].astype(np.int64) + p["x_offset"]]
        acc = x.reshape(x.shape[0], p["outer"], p["n"], p["inner"]).sum(axis=2)
        return encode(step, acc.reshape(x.shape[0], -1), 0)


@register
class ReduceMax(OpDef):
    kind = "ReduceMax"
    onnx_types = tuple(EXTREMES)
    step_kinds = ("reduce_minmax",)
    preserves_codes = True

    def step_value_range(self, step, input_ranges):
        return value_span(input_ranges)         # one of its input's codes

    def keeps_channel_scales(self, node) -> bool:
        return not node.attrs["across_channels"]

    def from_onnx(self, node, ctx):
        return _to_nodes(node, ctx, self.kind, EXTREMES[node.op_type])

    def infer_shape(self, node, in_shapes):
        return tuple(node.attrs["shape"])

    def run_float(self, node, inputs):
        return _reduced(node, inputs[0], np.max if node.attrs["mode"] == "max" else np.min)

    def lower(self, node, ctx):
        outer, n, inner = _split(ctx.shape(node.inputs[0]), node.attrs["axes"])
        params = {"outer": outer, "n": n, "inner": inner,
                  "take_min": int(node.attrs["mode"] == "min")}
        info = {} if ctx.root(node.inputs[0]).dtype == "int32" else \
            {"abits": ctx.encoding(node.inputs[0]).bits}
        return ctx.step(node, "reduce_minmax", params=params, consts={}, info=info)

    def run_int(self, step, inputs):
        p = step.params
        x = inputs[0].astype(np.int64).reshape(inputs[0].shape[0], p["outer"], p["n"], p["inner"])
        extreme = x.min(axis=2) if p["take_min"] else x.max(axis=2)
        return extreme.reshape(x.shape[0], -1)
