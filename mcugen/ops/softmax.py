"""Softmax/LogSoftmax. As the network's last op (over its last axis, or over axis 1 of
[1, C, 1, ..., 1], or before opset 13 over axis 1) it runs in float on the host side of the
interface (the integer model's logits give the same argmax) and the frontend removes the node.
Any other Softmax is the integer step `softmax` (DESIGN section 2), row by row over the middle
axis of [outer, n, inner]:

    D = round(x / u), u = ln2 / 2^K          decode table of the input's codes
    d = max(D) - D >= 0                       per row
    e = (T[d & (2^K-1)] + ((1 << h) >> 1)) >> h, h = d >> K; 0 when h > F
                                              T[j] = round(2^F * 2^(-j / 2^K))
    s = sum(e) in [2^F, 2^30]; inv = (2^30 + s/2) / s    one division per row
    acc = e * inv <= 2^30 + 2^(F-1)           the probability in units of 2^-30, encoded

LogSoftmax inside the graph is refused."""
from __future__ import annotations

import math

import numpy as np

from mcugen.ir.graph import Node
from mcugen.lower.encoders import encode
from mcugen.lower.fixedpoint import common_point_table, smallest_int_dtype
from mcugen.numerics import round_half_away
from mcugen.ops import OpDef, register

RECIP_BITS = 30            # Q: inv = (2^Q + s/2) / s, acc = e * inv in units of 2^-Q
MAX_PROB_BITS = 15         # F up to this: T[0] = 2^F fits uint16
MIN_PROB_BITS = 8          # below this a row is too long for the int32 sum
MIN_EXP_BITS, MAX_EXP_BITS = 6, 12   # K: the exponent table has 2^K entries
DECODE_LIMIT = 1 << 29     # |D| <= 2^29, so 0 <= d <= 2^30


def apply_output_transform(name, y):
    if name is None:
        return y
    z = y - y.max(axis=-1, keepdims=True)
    if name == "Softmax":
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _read_by_a_node(ctx, name) -> bool:
    return any(name in n.input for n in ctx.model.graph.node)


def exp_bits(out_b: int, x_range: float) -> int:
    """K: the least K >= MIN_EXP_BITS with u = ln2 / 2^K <= 1 / (4 B_y) (the decode moves a
    probability by at most a quarter of a uniform output step), at most MAX_EXP_BITS; lowered
    while the input range needs more than DECODE_LIMIT units. -1: none fits."""
    k = max(MIN_EXP_BITS, math.ceil(math.log2(4.0 * math.log(2.0) * out_b)))
    k = min(k, MAX_EXP_BITS)
    while k >= 0 and x_range * (1 << k) / math.log(2.0) > DECODE_LIMIT:
        k -= 1
    return k


def prob_bits(n: int, k: int) -> int:
    """F, with n * 2^F <= 2^30 (the row's sum): 15 (uint16 exponent entries) while the sum's
    rounding term (1 + n) 2^-F of the error bound stays within the decode's e^u - 1 (rows of up
    to 21 values at K = 10); for longer rows the F that minimizes (1 + n) 2^-F + 2^(F-31)
    (int32 entries)."""
    top = int(math.floor(math.log2((1 << RECIP_BITS) / n)))
    if (1 + n) * 2.0 ** -MAX_PROB_BITS <= decode_error(k) or top <= MAX_PROB_BITS:
        return min(MAX_PROB_BITS, top)
    return min(range(MAX_PROB_BITS, top + 1), key=lambda f: (1 + n) * 2.0 ** -f + 2.0 ** (f - RECIP_BITS - 1))


def decode_error(k: int) -> float:
    """e^u - 1: the decode's relative error of a probability (u = ln2 / 2^K)."""
    return math.expm1(math.log(2.0) / (1 << k))


def exp_table(k: int, f: int) -> np.ndarray:
    """T[j] = round(2^F * 2^(-j / 2^K)), j < 2^K: in (2^(F-1), 2^F]."""
    table = round_half_away((1 << f) * np.exp2(-np.arange(1 << k) / float(1 << k)))
    return table.astype(np.uint16 if f <= MAX_PROB_BITS else np.int32)


def error_bound(k: int, f: int, n: int) -> float:
    """The proven bound of |acc / 2^30 - y| at y = 1 (DESIGN section 2):
    y (e^u - 1) + (1 + n y e^u) 2^-F + 2^(F-31)."""
    return decode_error(k) + (1 + n * (1 + decode_error(k))) * 2.0 ** -f + 2.0 ** (f - RECIP_BITS - 1)


def _split(shape, axes) -> tuple:
    """[outer, n, inner] of `shape` (batch first) reduced over the adjacent `axes` (none: n=1)."""
    if not axes:
        return int(np.prod(shape[1:])), 1, 1
    outer = int(np.prod(shape[1:axes[0]]))
    n = int(np.prod([shape[a] for a in axes]))
    inner = int(np.prod(shape[axes[-1] + 1:]))
    return outer, n, inner


def exponentials(d, k, f):
    """e of every difference d (int64 >= 0), as the C computes it."""
    h = d >> k
    hc = np.minimum(h, f)
    t = exp_table(k, f).astype(np.int64)[d & ((1 << k) - 1)]
    return np.where(h > f, 0, (t + ((np.int64(1) << hc) >> 1)) >> hc)


@register
class Softmax(OpDef):
    kind = "Softmax"
    onnx_types = ("Softmax", "LogSoftmax")
    step_kinds = ("softmax",)

    def output_nonnegative(self, node, inputs_nonnegative) -> bool:
        return True

    def elements_read(self, step, schedule) -> int:
        return 3 * schedule.buffers[step.inputs[0]].size      # the max, the sum, the output

    def from_onnx(self, node, ctx):
        shape = ctx.shape(node.input[0])
        rank = len(shape)
        axis = int(ctx.attrs(node).get("axis", -1 if ctx.opset >= 13 else 1))
        if not -rank <= axis < rank:
            ctx.fail(node, f"axis {axis} is outside the input's rank {rank}")
        axis = axis + rank if axis < 0 else axis
        final = ctx.is_graph_output(node.output[0]) and not _read_by_a_node(ctx, node.output[0])
        # before opset 13 the axis splits the shape into 2-D: axis 1 means over the whole
        # sample; from 13 on axis 1 is the same when every later dimension is 1 ([1, C, 1, 1])
        over_sample = axis == 1 and (ctx.opset < 13 or all(d == 1 for d in shape[2:]))
        if final and axis == rank - 1:
            ctx.set_output_transform(node.op_type, node.input[0])
            return None
        if final and over_sample:
            flat = f"{node.output[0]}/flat"
            ctx.shapes[flat] = (1, int(np.prod(shape[1:])))
            ctx.set_output_transform(node.op_type, flat)
            return Node(name=f"{node.name}/flatten", op="Reshape", inputs=[node.input[0]], output=flat,
                        attrs={"shape": list(ctx.shapes[flat])}, onnx_op="Flatten")
        if node.op_type == "LogSoftmax":
            if final:
                ctx.fail(node, f"softmax over axis {axis} of a {list(shape)} tensor is not supported; "
                               f"supported: the last axis, or axis 1 followed by dimensions of 1")
            ctx.fail(node, "LogSoftmax is supported only as the model's last op (Softmax also "
                           "inside the graph)")
        # the integer step: one axis from opset 13, the trailing axes from `axis` before; the
        # batch (1) and axes of size 1 reduce nothing
        axes = [axis] if ctx.opset >= 13 else list(range(axis, rank))
        axes = [a for a in axes if a > 0]
        n = int(np.prod([shape[a] for a in axes]))
        if n > 1 << (RECIP_BITS - MIN_PROB_BITS):
            ctx.fail(node, f"a softmax over {n} values is not supported (its int32 sum would "
                           f"keep fewer than {MIN_PROB_BITS} bits); supported: up to "
                           f"{1 << (RECIP_BITS - MIN_PROB_BITS)} values per row")
        return Node(name=node.name, op=self.kind, inputs=[node.input[0]], output=node.output[0],
                    attrs={"axes": axes}, onnx_op=node.op_type)

    def infer_shape(self, node, in_shapes):
        return in_shapes[0]

    def run_float(self, node, inputs):
        x = inputs[0]
        axes = tuple(node.attrs["axes"])
        if not axes:
            return np.ones_like(x)
        e = np.exp(x - x.max(axis=axes, keepdims=True))
        return e / e.sum(axis=axes, keepdims=True)

    def lower(self, node, ctx):
        x, y = ctx.encoding(node.inputs[0]), ctx.encoding(node.output)
        outer, n, inner = _split(ctx.shape(node.inputs[0]), node.attrs["axes"])
        k = exp_bits(y.B, x.range)
        if k < 0:
            ctx.fail(node, f"the input's range {x.range:.3g} is too wide for the integer softmax "
                           f"(at most {DECODE_LIMIT * math.log(2.0):.3g}); calibrate the layer "
                           f"before it with real data (--calib) or a percentile")
        f = prob_bits(n, k)
        unit = math.log(2.0) / (1 << k)
        table = common_point_table(x, x.range, unit)
        assert int(np.abs(table).max()) <= DECODE_LIMIT
        bound = (1 << RECIP_BITS) + (1 << (f - 1))
        consts, params, info = ctx.encoder_parts(node, None, [2.0 ** -RECIP_BITS], bound)
        params.update(outer=outer, n=n, inner=inner, block=n * inner, x_offset=x.table_offset,
                      exp_bits=k, exp_mask=(1 << k) - 1, prob_bits=f, recip_one=1 << RECIP_BITS)
        consts.update(dx=table.astype(smallest_int_dtype(table)), exp=exp_table(k, f))
        info.update(acc_bound=bound, exp_bits=k, prob_bits=f,
                    softmax_error_bound=round(error_bound(k, f, n), 7))
        return ctx.step(node, "softmax", params=params, consts=consts, info=info)

    def run_int(self, step, inputs):
        acc = probabilities(step, inputs[0])
        return encode(step, acc.reshape(acc.shape[0], -1), 0)


def probabilities(step, codes):
    """The accumulators a softmax step encodes (probabilities in units of 2^-30), in the shape
    (batch, outer, n, inner), as the C computes them."""
    p = step.params
    dx = step.consts["dx"].astype(np.int64)[codes.astype(np.int64) + p["x_offset"]]
    dx = dx.reshape(codes.shape[0], p["outer"], p["n"], p["inner"])
    d = dx.max(axis=2, keepdims=True) - dx
    e = exponentials(d, p["exp_bits"], p["prob_bits"])
    s = e.sum(axis=2, keepdims=True)
    inv = (p["recip_one"] + s // 2) // s
    return e * inv
