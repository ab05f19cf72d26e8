"""Slice, Split and Gather (a constant index) of an activation: copies of codes, the output
sharing its input's encoding.

Each is one IR "Slice" node per output, which picks a list of indices along every axis of the
input (`picks`, the batch axis keeping its one sample); the output is the picked elements in
their order, in the ONNX output's shape (a Gather's scalar index drops its axis, an index tensor
puts its shape in the axis' place: the same memory order). Lowered, the picks are a view of the
input: `out[j] = in[offset + sum_k j_k * stride_k]`, a slice's start in the offset and its step
in the stride (negative when it runs backwards), a picked index list that is not an arithmetic
progression (a Gather's) read through a small table of input offsets on its loop. Axes read
whole and contiguously merge, so a view has at most four loops, as a Transpose. A view with
no offset and no table is a Transpose step (ops/transpose.py); the others are "gather" steps.
"""
from __future__ import annotations

import numpy as np

from mcugen.ir.graph import Node
from mcugen.ops.embedding import embedding_lookup
from mcugen.ops import OpDef, register, value_span
from mcugen.ops.transpose import MAX_RANK


def _axis(node, ctx, axis, rank) -> int:
    axis = int(axis)
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis < rank:
        ctx.fail(node, f"axis {axis} is outside the input's rank {rank}")
    return axis


def _slice_picks(node, ctx, shape) -> list:
    """ONNX Slice: attributes starts/ends/axes before opset 10, constant inputs starts, ends,
    axes, steps from 10; negative indices count from the end, then each bound is clamped as
    the spec says (a step < 0 starts at most at dim - 1 and ends at least at -1)."""
    if ctx.opset < 10:
        attrs = ctx.attrs(node)
        starts, ends, axes, steps = attrs["starts"], attrs["ends"], attrs.get("axes"), None
    else:
        starts = ctx.require_const(node, 1, "starts")
        ends = ctx.require_const(node, 2, "ends")
        axes, steps = ctx.optional_const(node, 3), ctx.optional_const(node, 4)
    starts = [int(v) for v in np.asarray(starts).reshape(-1)]
    ends = [int(v) for v in np.asarray(ends).reshape(-1)]
    axes = list(range(len(starts))) if axes is None else [int(v) for v in np.asarray(axes).reshape(-1)]
    steps = [1] * len(starts) if steps is None else [int(v) for v in np.asarray(steps).reshape(-1)]
    if not len(starts) == len(ends) == len(axes) == len(steps):
        ctx.fail(node, "starts, ends, axes and steps differ in length")
    axes = [_axis(node, ctx, a, len(shape)) for a in axes]
    if len(set(axes)) != len(axes) or 0 in steps:
        ctx.fail(node, f"axes {axes} repeat or a step is 0 (steps {steps})")
    picks = [list(range(d)) for d in shape]
    for axis, start, end, step in zip(axes, starts, ends, steps):
        dim = shape[axis]
        start, end = start + dim if start < 0 else start, end + dim if end < 0 else end
        low, high = (0, dim) if step > 0 else (-1, dim - 1)
        start, end = min(max(start, 0), high), min(max(end, low), high)
        picks[axis] = list(range(start, end, step))
    return picks


def _split_sizes(node, ctx, dim) -> list:
    """ONNX Split: the sizes from the `split` attribute (before opset 13) or constant input
    (from 13), else equal parts (from opset 18, `num_outputs` parts of ceil(dim / n), the last
    smaller)."""
    attrs = ctx.attrs(node)
    if ctx.opset < 13:
        sizes = attrs.get("split")
    else:
        given = len(node.input) > 1 and node.input[1]
        sizes = ctx.require_const(node, 1, "split sizes") if given else None
    n = len(node.output)
    if sizes is not None and len(np.asarray(sizes).reshape(-1)):
        sizes = [int(v) for v in np.asarray(sizes).reshape(-1)]
    elif "num_outputs" in attrs:
        chunk = -(-dim // int(attrs["num_outputs"]))
        sizes = [chunk] * (n - 1) + [dim - chunk * (n - 1)]
    elif dim % n == 0:
        sizes = [dim // n] * n
    else:
        ctx.fail(node, f"{n} equal parts of {dim}; supported: sizes that divide the axis, or split sizes")
    if len(sizes) != n or sum(sizes) != dim or min(sizes) < 1:
        ctx.fail(node, f"split sizes {sizes} for {n} outputs of an axis of {dim}; supported: "
                       f"positive sizes that sum to the axis")
    return sizes


def _gather_picks(node, ctx, shape):
    """ONNX Gather of an activation by a constant index: (picks, the output's shape)."""
    index = np.asarray(ctx.require_const(node, 1, "indices")).astype(np.int64)
    axis = _axis(node, ctx, ctx.attrs(node).get("axis", 0), len(shape))
    dim = shape[axis]
    if axis == 0:
        ctx.fail(node, "gathers along the batch axis; supported: a constant index along any other axis")
    if index.size and not (-dim <= index.min() and index.max() < dim):
        ctx.fail(node, f"indices {index.reshape(-1).tolist()[:8]} outside an axis of {dim}")
    picks = [list(range(d)) for d in shape]
    picks[axis] = [int(i) + dim if i < 0 else int(i) for i in index.reshape(-1)]
    return picks, tuple(shape[:axis]) + index.shape + tuple(shape[axis + 1:])


def _node(node, ctx, name, output, picks, shape):
    """The IR node of one output: a Slice, or a free Reshape when it picks every element in
    order."""
    in_shape = tuple(ctx.shape(node.input[0]))
    if tuple(shape) != tuple(ctx.shape(output)):
        ctx.fail(node, f"output shape {list(shape)} differs from ONNX's {list(ctx.shape(output))}")
    if any(not p for p in picks):
        ctx.fail(node, "the batch axis or an output is empty; supported: slices that keep the "
                       "one sample (start 0, end >= 1 on the batch axis) and at least one element")
    if all(p == list(range(d)) for p, d in zip(picks, in_shape)):
        return Node(name=name, op="Reshape", inputs=[node.input[0]], output=output,
                    attrs={"shape": list(shape)}, onnx_op=node.op_type)
    view = _view(picks[1:], in_shape[1:])
    if len(view["out_dims"]) > MAX_RANK:
        ctx.fail(node, f"the picked elements form {len(view['out_dims'])} strided axes after merging; "
                       f"supported: up to {MAX_RANK}")
    return Node(name=name, op="Slice", inputs=[node.input[0]], output=output, onnx_op=node.op_type,
                attrs={"picks": picks, "from_shape": list(in_shape), "shape": list(shape)})


def _progression(p) -> bool:
    return len(p) < 3 or all(b - a == p[1] - p[0] for a, b in zip(p, p[1:]))


def _view(picks, dims) -> dict:
    """The picks of the axes after the batch (of sizes `dims`) as loops over the input, outer
    first: out_dims, in_strides, in_offset, and table_loop/table when one loop reads its input
    offsets from a table (an index list that is no progression; its stride is then 0)."""
    strides = [int(np.prod(dims[k + 1:])) for k in range(len(dims))]
    loops, offset, table = [], 0, None
    for p, stride in zip(picks, strides):
        if _progression(p):
            offset += p[0] * stride
            if len(p) > 1:
                loops.append([len(p), (p[1] - p[0]) * stride])
        else:
            assert table is None, "one index list per view"
            table = [i * stride for i in p]
            loops.append([len(p), None])
    merged = []
    for size, stride in loops:
        if merged and stride is not None and merged[-1][1] == size * stride:
            merged[-1] = [merged[-1][0] * size, stride]
        else:
            merged.append([size, stride])
    merged = merged or [[1, 0]]
    view = {"out_dims": [s for s, _ in merged], "in_strides": [0 if t is None else t for _, t in merged],
            "in_offset": offset, "table_loop": -1, "table": table}
    if table is not None:
        view["table_loop"] = next(k for k, (_, t) in enumerate(merged) if t is None)
    return view


def _padded(view) -> dict:
    """The view's loops padded in front to MAX_RANK."""
    pad = MAX_RANK - len(view["out_dims"])
    table_loop = view["table_loop"] + pad if view["table_loop"] >= 0 else -1
    return dict(view, out_dims=[1] * pad + view["out_dims"], in_strides=[0] * pad + view["in_strides"],
                table_loop=table_loop)


def _view_index(out_dims, in_strides, in_offset=0, table_loop=-1, table=None) -> np.ndarray:
    """The flat input index of every output element, in order (what the C loops read)."""
    grids = np.meshgrid(*[np.arange(d) for d in out_dims], indexing="ij")
    terms = [np.asarray(table, dtype=np.int64)[g] if k == table_loop else g * s
             for k, (g, s) in enumerate(zip(grids, in_strides))]
    return (in_offset + sum(terms)).reshape(-1)


@register
class Slice(OpDef):
    """Slice (any axis but the batch, which keeps its one sample), Split (one node per output)
    and Gather of an activation by a constant index (any axis but the batch)."""
    kind = "Slice"
    onnx_types = ("Slice", "Split", "Gather")
    step_kinds = ("gather",)
    preserves_codes = True

    def keeps_channel_scales(self, node) -> bool:
        """Axis 1 is read whole and in order: every value stays in its channel."""
        shape = node.attrs["from_shape"]
        return len(shape) > 1 and node.attrs["picks"][1] == list(range(shape[1]))

    def step_value_range(self, step, input_ranges):
        return value_span(input_ranges)         # its input's codes, moved

    def elements_read(self, step, schedule) -> int:
        return schedule.buffers[step.output].size       # one input element per output element

    def from_onnx(self, node, ctx):
        if node.op_type == "Gather" and ctx.const(node.input[0]) is not None:
            return embedding_lookup(node, ctx)
        shape = tuple(ctx.shape(node.input[0]))
        if node.op_type == "Slice":
            picks = _slice_picks(node, ctx, shape)
            return _node(node, ctx, node.name, node.output[0], picks, [len(p) for p in picks])
        if node.op_type == "Gather":
            picks, out_shape = _gather_picks(node, ctx, shape)
            return _node(node, ctx, node.name, node.output[0], picks, out_shape)
        axis = _axis(node, ctx, ctx.attrs(node).get("axis", 0), len(shape))
        nodes, start = [], 0
        for i, (output, size) in enumerate(zip(node.output, _split_sizes(node, ctx, shape[axis]))):
            picks = [list(range(d)) for d in shape]
            picks[axis] = list(range(start, start + size))
            start += size
            name = node.name if len(node.output) == 1 else f"{node.name}/output{i}"
            if output:
                nodes.append(_node(node, ctx, name, output, picks, [len(p) for p in picks]))
        return nodes

    def infer_shape(self, node, in_shapes):
        return tuple(node.attrs["shape"])

    def run_float(self, node, inputs):
        """Through the view the step reads, so that the float IR's check against onnxruntime
        checks the offsets, strides and table too."""
        x = inputs[0]
        view = _view(node.attrs["picks"][1:], node.attrs["from_shape"][1:])
        index = _view_index(view["out_dims"], view["in_strides"], view["in_offset"],
                            view["table_loop"], view["table"])
        return x.reshape(x.shape[0], -1)[:, index].reshape((x.shape[0],) + tuple(node.attrs["shape"][1:]))

    def lower(self, node, ctx):
        view = _padded(_view(node.attrs["picks"][1:], node.attrs["from_shape"][1:]))
        params = {"out_dims": view["out_dims"], "in_strides": view["in_strides"]}
        if view["in_offset"] == 0 and view["table"] is None:
            return ctx.step(node, "transpose", params=params, consts={}, info={})
        params.update(in_offset=view["in_offset"], table_loop=view["table_loop"])
        consts = {} if view["table"] is None else {"index": np.asarray(view["table"], dtype=np.int32)}
        return ctx.step(node, "gather", params=params, consts=consts, info={})

    def run_int(self, step, inputs):
        p = step.params
        index = _view_index(p["out_dims"], p["in_strides"], p["in_offset"], p["table_loop"],
                            step.consts.get("index"))
        return inputs[0].reshape(inputs[0].shape[0], -1)[:, index]
