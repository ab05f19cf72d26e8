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

A LogSoftmax that is not the host's is the same step with `log` set: the same D, d, e and s,
then the integer natural log of s in the unit u, no division:
    b = the position of s's leading one        in [F, F + floor(log2 n)]
    t = rshift_round(s, b - M) - 2^M           the mantissa's top M = min(K, F) bits, [0, 2^M]
    l = (b - F) * 2^K + LG[t]                  2^K log2(s / 2^F); LG[t] = round(2^K log2(1 + t/2^M))
    acc = -(d + l) >= -(d_max + 2^K (floor(log2 n) + 1))   the log-probability in units of u"""
from __future__ import annotations

import math

import numpy as np

from mcugen.ir.graph import Node
from mcugen.lower.encoders import encode
from mcugen.lower.fixedpoint import code_grid, common_point_table, smallest_int_dtype
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


def log_bits(k: int, f: int) -> int:
    """M, the mantissa bits the log table reads: K (its entries' own resolution), at most F so
    that the leading one's position p >= F >= M and the mantissa is a right shift of s."""
    return min(k, f)


def log_table(k: int, m: int) -> np.ndarray:
    """LG[t] = round(2^K log2(1 + t / 2^M)), t in [0, 2^M] (a mantissa may round up to 2):
    in [0, 2^K], int16."""
    t = np.arange((1 << m) + 1, dtype=np.float64)
    return round_half_away((1 << k) * np.log2(1.0 + t / (1 << m))).astype(np.int16)


def log_error_bound(k: int, f: int, n: int) -> float:
    """The proven bound of |u acc - y| in nats (DESIGN section 2): 3u/2 (the decode, u; the log
    table, u/2) + (n - 1) 2^-F (the exponentials' sum) + 2^-(M+1) (the mantissa's rounding)."""
    u = math.log(2.0) / (1 << k)
    return 1.5 * u + (n - 1) * 2.0 ** -f + 2.0 ** -(log_bits(k, f) + 1)


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
        return not node.attrs.get("log")       # log-probabilities are <= 0: a signed grid

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
        # the integer step: one axis from opset 13, the trailing axes from `axis` before; the
        # batch (1) and axes of size 1 reduce nothing
        axes = [axis] if ctx.opset >= 13 else list(range(axis, rank))
        axes = [a for a in axes if a > 0]
        n = int(np.prod([shape[a] for a in axes]))
        if n > 1 << (RECIP_BITS - MIN_PROB_BITS):
            ctx.fail(node, f"a {node.op_type} over {n} values is not supported (its int32 sum would "
                           f"keep fewer than {MIN_PROB_BITS} bits); supported: up to "
                           f"{1 << (RECIP_BITS - MIN_PROB_BITS)} values per row")
        params = {"keep": _keep_rows(node, ctx, shape, axes)} if len(node.input) > 1 else {}
        return Node(name=node.name, op=self.kind, inputs=[node.input[0]], output=node.output[0],
                    attrs={"axes": axes, "log": node.op_type == "LogSoftmax"}, onnx_op=node.op_type,
                    params=params)

    def infer_shape(self, node, in_shapes):
        return in_shapes[0]

    def run_float(self, node, inputs):
        x = inputs[0]
        if "keep" in node.params:
            return masked_softmax(x, node.params["keep"])
        axes, log = tuple(node.attrs["axes"]), node.attrs.get("log")
        if not axes:
            return np.zeros_like(x) if log else np.ones_like(x)
        z = x - x.max(axis=axes, keepdims=True)
        if log:
            return z - np.log(np.exp(z).sum(axis=axes, keepdims=True))
        e = np.exp(z)
        return e / e.sum(axis=axes, keepdims=True)

    def lower(self, node, ctx):
        x, y = ctx.encoding(node.inputs[0]), ctx.encoding(node.output)
        outer, n, inner = _split(ctx.shape(node.inputs[0]), node.attrs["axes"])
        k = exp_bits(code_grid(y).B, x.range)     # the output's resolution, however stored
        if k < 0:
            ctx.fail(node, f"the input's range {x.range:.3g} is too wide for the integer softmax "
                           f"(at most {DECODE_LIMIT * math.log(2.0):.3g}); calibrate the layer "
                           f"before it with real data (--calib) or a percentile")
        f = prob_bits(n, k)
        table = common_point_table(x, x.range, math.log(2.0) / (1 << k))
        assert int(np.abs(table).max()) <= DECODE_LIMIT
        parts = _log_parts if node.attrs.get("log") else _probability_parts
        consts, params, info = parts(node, ctx, table, n, k, f)
        keep = node.params.get("keep")
        params.update(masked=int(keep is not None), mask_rows=0 if keep is None else keep.shape[0])
        if keep is not None:
            consts.update(keep=keep.reshape(-1).astype(np.uint8))
        params.update(outer=outer, n=n, inner=inner, block=n * inner, x_offset=x.table_offset,
                      exp_bits=k, exp_mask=(1 << k) - 1, prob_bits=f)
        consts.update(dx=table.astype(smallest_int_dtype(table)), exp=exp_table(k, f))
        info.update(exp_bits=k, prob_bits=f)
        return ctx.step(node, "softmax", params=params, consts=consts, info=info)

    def run_int(self, step, inputs):
        acc = (log_probabilities if step.params["log"] else probabilities)(step, inputs[0])
        return encode(step, acc.reshape(acc.shape[0], -1), 0)


def _keep_rows(node, ctx, shape, axes):
    """A masked softmax's kept entries (frontend/masks.py) as [rows, n] booleans: one row per
    row of the last two axes when the mask repeats over the leading ones (heads), else per
    row of the input."""
    rank = len(shape)
    if axes != [rank - 1] or node.op_type != "Softmax":
        ctx.fail(node, "a mask is supported on a Softmax over the last axis only")
    keep = ctx.const(node.input[1])
    full = np.broadcast_to(np.asarray(keep, dtype=bool), tuple(shape)).reshape(-1, shape[-1])
    period = shape[-2] if rank > 2 else 1
    repeats = full.reshape(-1, period, shape[-1])
    return repeats[0].copy() if np.all(repeats == repeats[:1]) else full.copy()


def masked_softmax(x, keep):
    """Float softmax over the last axis of the kept entries ([rows, n], repeating), 0 elsewhere
    and on rows with none kept (where the exporters' guards give 0 for NaN)."""
    rows = x.reshape(x.shape[0], -1, x.shape[-1])
    mask = keep[np.arange(rows.shape[1]) % keep.shape[0]][None]
    peak = np.where(mask, rows, -np.inf).max(axis=-1, keepdims=True)
    e = np.where(mask, np.exp(rows - np.where(np.isfinite(peak), peak, 0.0)), 0.0)
    s = e.sum(axis=-1, keepdims=True)
    return np.where(s > 0, e / np.where(s > 0, s, 1.0), 0.0).reshape(x.shape)


def _probability_parts(node, ctx, table, n, k, f):
    """(consts, params, info) of a Softmax beyond the shared ones: the division, the encoder of
    probabilities in units of 2^-30."""
    bound = (1 << RECIP_BITS) + (1 << (f - 1))
    consts, params, info = ctx.encoder_parts(node, None, [2.0 ** -RECIP_BITS], bound)
    params.update(log=0, recip_one=1 << RECIP_BITS)
    info.update(acc_bound=bound, softmax_error_bound=round(error_bound(k, f, n), 7))
    return consts, params, info


def _log_parts(node, ctx, table, n, k, f):
    """(consts, params, info) of a LogSoftmax beyond the shared ones: the log table, the encoder
    of log-probabilities in units of u (acc <= 0: the row's spread of D plus the log's largest
    value, 2^K (p - F) + LG[t] <= 2^K (floor(log2 n) + 1))."""
    m, octaves = log_bits(k, f), n.bit_length() - 1           # floor(log2 n)
    bound = int(table.max() - table.min()) + ((octaves + 1) << k)
    consts, params, info = ctx.encoder_parts(node, None, [math.log(2.0) / (1 << k)], bound)
    params.update(log=1, log_bits=m, log_one=1 << m, top_bit=f + octaves)
    consts.update(log=log_table(k, m))
    info.update(acc_bound=bound, log_bits=m, softmax_error_bound=round(log_error_bound(k, f, n), 7))
    return consts, params, info


def differences(step, codes):
    """d = max(D) - D of every element (int64), in the shape (batch, outer, n, inner)."""
    p = step.params
    dx = step.consts["dx"].astype(np.int64)[codes.astype(np.int64) + p["x_offset"]]
    dx = dx.reshape(codes.shape[0], p["outer"], p["n"], p["inner"])
    return dx.max(axis=2, keepdims=True) - dx


def kept(step):
    """The mask of a masked softmax as (1, outer, n, 1) booleans (rows repeat every mask_rows),
    or None."""
    p = step.params
    if not p.get("masked"):
        return None
    keep = step.consts["keep"].reshape(p["mask_rows"], p["n"]).astype(bool)
    return keep[np.arange(p["outer"]) % p["mask_rows"]][None, :, :, None]


def probabilities(step, codes):
    """The accumulators a softmax step encodes (probabilities in units of 2^-30), in the shape
    (batch, outer, n, inner), as the C computes them. Masked: the maximum and the sum over the
    kept entries, the others 0; a row with none kept is all 0."""
    p, keep = step.params, kept(step)
    if keep is None:
        d = differences(step, codes)
        e = exponentials(d, p["exp_bits"], p["prob_bits"])
    else:
        dx = step.consts["dx"].astype(np.int64)[codes.astype(np.int64) + p["x_offset"]]
        dx = dx.reshape(codes.shape[0], p["outer"], p["n"], p["inner"])
        low = np.iinfo(np.int64).min
        m = np.where(keep, dx, low).max(axis=2, keepdims=True)
        d = np.where(keep, m - dx, 0)
        e = np.where(keep, exponentials(d, p["exp_bits"], p["prob_bits"]), 0)
    s = e.sum(axis=2, keepdims=True)
    inv = np.where(s > 0, (p["recip_one"] + s // 2) // np.maximum(s, 1), 0)
    return e * inv


def log_probabilities(step, codes):
    """The accumulators a LogSoftmax step encodes (log-probabilities in units of u = ln2 / 2^K,
    <= 0), in the shape (batch, outer, n, inner), as the C computes them."""
    p, d = step.params, differences(step, codes)
    s = exponentials(d, p["exp_bits"], p["prob_bits"]).sum(axis=2, keepdims=True)
    return -(d + log_of_sums(s, p, step.consts["log"]))


def log_of_sums(s, p, table):
    """l = 2^K log2(s / 2^F) in integers (int64 s in [2^F, 2^30]): the leading one's position b
    by the C's loop, the mantissa rounded to M bits, the table."""
    f = p["prob_bits"]
    b = np.full(s.shape, f, dtype=np.int64)
    for i in range(f + 1, p["top_bit"] + 1):
        b = np.where((s >> i) != 0, i, b)
    shift = b - p["log_bits"]
    t = ((s + ((np.int64(1) << shift) >> 1)) >> shift) - p["log_one"]
    return ((b - f) << p["exp_bits"]) + table.astype(np.int64)[t]
