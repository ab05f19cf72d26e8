"""Pad: constant, edge, reflect or wrap padding, and cropping (negative pads), on any axis but
the batch. A zero constant Pad on the spatial axes folds into the following Conv or
AveragePool (fold_pad); any other Pad is a step that moves codes: every output element is an
input element or the fill code."""
from __future__ import annotations

import numpy as np

from mcugen.ir.graph import Node
from mcugen.ops import OpDef, register, value_span

MAX_RANK = 4          # dimensions after the batch
MODES = ("constant", "edge", "reflect", "wrap")


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def _pads_and_value(node, ctx, rank):
    attrs = ctx.attrs(node)
    pads = attrs.get("pads")
    if pads is None:
        pads = ctx.require_const(node, 1, "pads")
    value = float(attrs.get("value", 0.0))
    if len(node.input) > 2 and node.input[2]:
        value = float(np.asarray(ctx.require_const(node, 2, "constant_value")).reshape(-1)[0])
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    if len(node.input) > 3 and node.input[3]:              # opset 18: pads of these axes only
        axes = [int(a) % rank for a in np.asarray(ctx.require_const(node, 3, "axes")).reshape(-1)]
        full = [0] * (2 * rank)
        for i, axis in enumerate(axes):
            full[axis], full[axis + rank] = pads[i], pads[i + len(axes)]
        pads = full
    return pads, value


@register
class Pad(OpDef):
    kind = "Pad"
    onnx_types = ("Pad",)
    step_kinds = ("pad",)
    preserves_codes = True

    def output_nonnegative(self, node, inputs_nonnegative):
        negative_fill = node.attrs["mode"] == "constant" and node.attrs["value"] < 0
        return not negative_fill and all(inputs_nonnegative)

    def step_value_range(self, step, input_ranges):
        return value_span(list(input_ranges) + [(step.params["fill"], step.params["fill"])])

    def from_onnx(self, node, ctx):
        mode = _text(ctx.attrs(node).get("mode", "constant"))
        if mode not in MODES:
            ctx.fail(node, f"mode '{mode}' is not supported; supported: {', '.join(MODES)}")
        rank = len(ctx.shape(node.input[0]))
        pads, value = _pads_and_value(node, ctx, rank)
        if len(pads) != 2 * rank or pads[0] or pads[rank]:
            ctx.fail(node, "padding the batch axis is not supported")
        if rank - 1 > MAX_RANK:
            ctx.fail(node, f"tensors of rank {rank} are not supported (at most {MAX_RANK + 1})")
        return Node(name=node.name, op=self.kind, inputs=[node.input[0]], output=node.output[0],
                    attrs={"begin": pads[1:rank], "end": pads[rank + 1:], "mode": mode,
                           "value": value}, onnx_op="Pad")

    def spatial_zero_pads(self, node):
        """[top, left, bottom, right] when this Pad only adds zeros around H and W, else None."""
        a = node.attrs
        if a["mode"] != "constant" or a["value"] != 0.0 or len(a["begin"]) != 3:
            return None
        if a["begin"][0] or a["end"][0] or min(a["begin"] + a["end"]) < 0:
            return None
        return [a["begin"][1], a["begin"][2], a["end"][1], a["end"][2]]

    def infer_shape(self, node, in_shapes):
        a = node.attrs
        return (in_shapes[0][0],) + tuple(s + b + e for s, b, e in zip(in_shapes[0][1:], a["begin"], a["end"]))

    def run_float(self, node, inputs):
        x = inputs[0]
        return _gather(x, self.source_index(node, x.shape[1:]), node.attrs["value"])

    def source_index(self, node, in_shape):
        """Per axis, the input index every output index reads (-1: the fill value)."""
        a = node.attrs
        return [_axis_index(size, b, e, a["mode"]) for size, b, e in zip(in_shape, a["begin"], a["end"])]

    def lower(self, node, ctx):
        in_shape = list(ctx.shape(node.inputs[0]))[1:]
        source = ctx.root(node.inputs[0])
        value = node.attrs["value"]
        if source.dtype == "int32" and value != 0.0:
            ctx.fail(node, "a non-zero constant pad after the last layer is not supported "
                           "(its accumulators have a scale per channel); pad with 0")
        fill = 0 if source.dtype == "int32" else int(ctx.encoding(node.inputs[0]).encode(value))
        strides = [int(np.prod(in_shape[i + 1:])) for i in range(len(in_shape))]
        extra = MAX_RANK - len(in_shape)
        consts = {}
        for axis, index in enumerate([np.zeros(1, np.int64)] * extra + self.source_index(node, in_shape)):
            stride = ([0] * extra + strides)[axis]
            consts[f"src{axis}"] = np.where(index < 0, -1, index * stride).astype(np.int32)
        params = {"out_dims": [int(c.size) for c in consts.values()], "fill": fill}
        return ctx.step(node, "pad", params=params, consts=consts, info={})

    def run_int(self, step, inputs):
        x = inputs[0].reshape(inputs[0].shape[0], -1).astype(np.int64)
        offsets = [step.consts[f"src{axis}"].astype(np.int64) for axis in range(MAX_RANK)]
        grids = np.meshgrid(*offsets, indexing="ij")
        fill = np.any([g < 0 for g in grids], axis=0).reshape(-1)
        flat = np.where(fill, 0, sum(grids).reshape(-1))
        return np.where(fill[None, :], step.params["fill"], x[:, flat])


def _axis_index(size, begin, end, mode):
    """Output index -> input index along one axis; -1 where the constant fills."""
    out = np.arange(size + begin + end) - begin
    if mode == "constant":
        return np.where((out >= 0) & (out < size), out, -1)
    if mode == "edge":
        return np.clip(out, 0, size - 1)
    if mode == "wrap":
        return out % size
    period = 2 * (size - 1) if size > 1 else 1           # reflect, edge not repeated
    folded = np.abs(out) % period
    return np.where(folded < size, folded, period - folded)


def _gather(x, index, value):
    grids = np.meshgrid(*index, indexing="ij")
    fill = np.any([g < 0 for g in grids], axis=0)
    picked = x[(slice(None),) + tuple(np.maximum(g, 0) for g in grids)]
    return np.where(fill[None], value, picked)
