"""MaxPool (on codes: the encoding is monotone), AveragePool and GlobalAveragePool (decode,
sum, encode with the divisor folded into the thresholds)."""
from __future__ import annotations

import numpy as np

from mcugen.ir.graph import Node
from mcugen.lower.encoders import encode
from mcugen.lower.fixedpoint import (ACC_LIMIT, WIDE_TABLE_LIMIT, decode_table, default_frac_bits,
                                     table_scale)
from mcugen.ops import OpDef, register, value_span
from mcugen.ops._common import out_size, windows


def _ceil_extra(size, kernel, stride, pad_begin, pad_end):
    """Rows (or columns) ceil_mode=1 adds past the end pad for a partial last window; as in
    onnxruntime and PyTorch, a last window that would start inside the end padding is dropped."""
    span = size + pad_begin + pad_end - kernel
    out = -(-span // stride) + 1
    if (out - 1) * stride >= size + pad_begin:
        out -= 1
    return max(0, (out - 1) * stride + kernel - (size + pad_begin + pad_end))


def _pool_attrs(node, ctx, in_shape, kernel, dilated=False):
    """(strides, window pads, counted pads, dilations): window pads include what ceil_mode adds
    (never counted by an average); counted pads are the explicit pads when
    count_include_pad=1. Only MaxPool takes dilations (`dilated`)."""
    attrs = ctx.attrs(node)
    strides = list(attrs.get("strides", [1, 1]))
    if len(in_shape) != 4 or len(kernel) != 2:
        ctx.fail(node, f"only 2-D pooling on [1, C, H, W] is supported, got {list(in_shape)}")
    dilations = [int(d) for d in attrs.get("dilations", [1, 1])]
    if dilations != [1, 1] and not dilated:
        ctx.fail(node, "dilated average pooling is not supported; supported: dilations [1, 1]")
    pads = ctx.resolve_pads(node, attrs, in_shape[2:], kernel, strides, dilations)
    counted = list(pads) if attrs.get("count_include_pad", 0) else [0, 0, 0, 0]
    spans = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    if attrs.get("ceil_mode", 0):
        for axis in range(2):
            pads[axis + 2] += _ceil_extra(in_shape[2 + axis], spans[axis], strides[axis],
                                          pads[axis], pads[axis + 2])
    out = [out_size(in_shape[2 + i], spans[i], strides[i], pads[i], pads[i + 2]) for i in range(2)]
    declared = list(ctx.shape(node.output[0])[2:])
    if out != declared:       # ONNX shape inference keeps a last window onnxruntime drops
        ctx.fail(node, f"the output is {declared[0]}x{declared[1]} by ONNX shape inference but "
                       f"{out[0]}x{out[1]} by onnxruntime (ceil_mode with a window starting past "
                       f"the input); re-export without ceil_mode or with explicit pads")
    return strides, pads, counted, dilations


def window_counts(size, out, kernel, stride, pad_begin, counted_begin, counted_end):
    """How many elements of each output's window an average divides by: the window clipped to
    the input plus its counted pads."""
    start = np.arange(out) * stride - pad_begin
    lo = np.maximum(start, -counted_begin)
    hi = np.minimum(start + kernel, size + counted_end)
    return hi - lo


def _geometry(node, ctx):
    _, c, h, w = ctx.shape(node.inputs[0])
    _, _, oh, ow = ctx.shape(node.output)
    a = node.attrs
    return {"channels": c, "in_h": h, "in_w": w, "out_h": oh, "out_w": ow,
            "k_h": a["kernel"][0], "k_w": a["kernel"][1],
            "stride_h": a["strides"][0], "stride_w": a["strides"][1],
            "pad_top": a["pads"][0], "pad_left": a["pads"][1],
            "pad_bottom": a["pads"][2], "pad_right": a["pads"][3],
            "dil_h": a.get("dilations", [1, 1])[0], "dil_w": a.get("dilations", [1, 1])[1],
            "in_plane": h * w, "out_plane": oh * ow}


def _out_shape(node, in_shape):
    n, c, h, w = in_shape
    a = node.attrs
    d = a.get("dilations", [1, 1])
    return (n, c, out_size(h, a["kernel"][0], a["strides"][0], a["pads"][0], a["pads"][2], d[0]),
            out_size(w, a["kernel"][1], a["strides"][1], a["pads"][1], a["pads"][3], d[1]))


def _window_reads(step, schedule) -> int:
    """A pool reads its window once per output element."""
    return schedule.buffers[step.output].size * step.params["k_h"] * step.params["k_w"]


def _window_args(p):
    return ((p["k_h"], p["k_w"]), (p["stride_h"], p["stride_w"]),
            (p["pad_top"], p["pad_left"], p["pad_bottom"], p["pad_right"]), (p["dil_h"], p["dil_w"]))


@register
class MaxPool(OpDef):
    kind = "MaxPool"
    onnx_types = ("MaxPool",)
    step_kinds = ("maxpool",)
    preserves_codes = True

    def step_value_range(self, step, input_ranges):
        return value_span(input_ranges)         # a maximum of its input's codes

    def elements_read(self, step, schedule):
        return _window_reads(step, schedule)

    def from_onnx(self, node, ctx):
        if len(node.output) > 1 and node.output[1]:
            ctx.fail(node, "the Indices output of MaxPool is not supported; supported: the values output alone")
        if ctx.attrs(node).get("storage_order", 0):
            ctx.fail(node, "storage_order=1 (column-major indices) is not supported")
        kernel = list(ctx.attrs(node)["kernel_shape"])
        strides, pads, _, dilations = _pool_attrs(node, ctx, ctx.shape(node.input[0]), kernel,
                                                  dilated=True)
        return Node(name=node.name, op=self.kind, inputs=[node.input[0]], output=node.output[0],
                    attrs={"kernel": kernel, "strides": strides, "pads": pads,
                           "dilations": dilations}, onnx_op="MaxPool")

    def infer_shape(self, node, in_shapes):
        return _out_shape(node, in_shapes[0])

    def run_float(self, node, inputs):
        a = node.attrs
        return windows(inputs[0], a["kernel"], a["strides"], a["pads"], a["dilations"],
                       pad_value=-np.inf).max(axis=(4, 5))

    def lower(self, node, ctx):
        params = _geometry(node, ctx)
        source = ctx.root(node.inputs[0])
        if source.dtype == "int32":        # the last layer's accumulators: any int32 but the pad
            params["code_min"] = -ACC_LIMIT - 1
            info = {}
        else:
            params["code_min"] = ctx.encoding(node.inputs[0]).code_min
            info = {"abits": ctx.encoding(node.inputs[0]).bits}
        return ctx.step(node, "maxpool", params=params, consts={}, info=info)

    def run_int(self, step, inputs):
        p = step.params
        return windows(inputs[0].astype(np.int64), *_window_args(p),
                       pad_value=p["code_min"] - 1).max(axis=(4, 5))


@register
class AveragePool(OpDef):
    kind = "AveragePool"
    onnx_types = ("AveragePool", "GlobalAveragePool")
    step_kinds = ("avgpool",)

    def elements_read(self, step, schedule):
        return _window_reads(step, schedule)

    def from_onnx(self, node, ctx):
        in_shape = ctx.shape(node.input[0])
        if len(in_shape) != 4:
            ctx.fail(node, f"only 2-D pooling on [1, C, H, W] is supported, got {list(in_shape)}")
        if node.op_type == "GlobalAveragePool":
            kernel, strides, pads, counted = list(in_shape[2:]), [1, 1], [0, 0, 0, 0], [0, 0, 0, 0]
        else:
            kernel = list(ctx.attrs(node)["kernel_shape"])
            strides, pads, counted, _ = _pool_attrs(node, ctx, in_shape, kernel)
        return Node(name=node.name, op=self.kind, inputs=[node.input[0]], output=node.output[0],
                    attrs={"kernel": kernel, "strides": strides, "pads": pads, "counted": counted},
                    onnx_op=node.op_type)

    def infer_shape(self, node, in_shapes):
        return _out_shape(node, in_shapes[0])

    def counts(self, node, in_shape, out_shape):
        """Divisor of every output position along H and along W."""
        a = node.attrs
        return [window_counts(in_shape[2 + i], out_shape[2 + i], a["kernel"][i], a["strides"][i],
                              a["pads"][i], a["counted"][i], a["counted"][i + 2]) for i in range(2)]

    def run_float(self, node, inputs):
        a = node.attrs
        total = windows(inputs[0], a["kernel"], a["strides"], a["pads"]).sum(axis=(4, 5))
        count_h, count_w = self.counts(node, inputs[0].shape, total.shape)
        return total / (count_h[:, None] * count_w[None, :])

    def lower(self, node, ctx):
        x = ctx.encoding(node.inputs[0])
        count_h, count_w = self.counts(node, ctx.shape(node.inputs[0]), ctx.shape(node.output))
        frac = sum_frac_bits(node, ctx, x, node.attrs["kernel"][0] * node.attrs["kernel"][1])
        table = decode_table(x, frac)
        sizes_h, row_h = np.unique(count_h, return_inverse=True)
        sizes_w, row_w = np.unique(count_w, return_inverse=True)
        # one encoder row per (window height, window width): the divisor folded into each
        units = x.range / (table_scale(x, frac) * np.outer(sizes_h, sizes_w).reshape(-1))
        bound = int(np.abs(table).max()) * node.attrs["kernel"][0] * node.attrs["kernel"][1]
        consts, params, info = ctx.encoder_parts(node, None, units, bound)
        params.update(_geometry(node, ctx), x_offset=x.table_offset, n_rows_w=len(sizes_w))
        index = np.uint8 if max(len(sizes_h), len(sizes_w)) <= 256 else np.uint16
        consts.update(dx=table.astype(np.int32), row_h=row_h.astype(index),
                      row_w=row_w.astype(index))
        info.update(x_frac_bits=frac, acc_bound=bound)
        return ctx.step(node, "avgpool", params=params, consts=consts, info=info)

    def run_int(self, step, inputs):
        p = step.params
        x = step.consts["dx"].astype(np.int64)[inputs[0].astype(np.int64) + p["x_offset"]]
        acc = windows(x, *_window_args(p)).sum(axis=(4, 5))
        rows = (step.consts["row_h"].astype(np.int64)[:, None] * p["n_rows_w"]
                + step.consts["row_w"].astype(np.int64)[None, :])
        return encode(step, acc, rows[None, None])


def sum_frac_bits(node, ctx, x, count):
    """The decode table's fractional bits: as fine as its int32 table allows, lowered until a
    window's sum of `count` decoded values provably fits the int32 accumulator."""
    frac = default_frac_bits(x, limit=WIDE_TABLE_LIMIT)
    while frac > 0 and int(np.abs(decode_table(x, frac)).max()) * count > ACC_LIMIT:
        frac -= 1
    if int(np.abs(decode_table(x, frac)).max()) * count > ACC_LIMIT:
        ctx.fail(node, f"a window of {count} values can overflow the int32 sum even without "
                       f"fractional bits; split the pooling into smaller windows")
    return frac
