"""MaxPool (on codes: the encoding is monotone), AveragePool and GlobalAveragePool (decode,
sum, encode with the divisor folded into the thresholds)."""
from __future__ import annotations

import numpy as np

from mcugen.ir.graph import Node
from mcugen.lower.encoders import apply_thresholds, encoder_step_parts
from mcugen.lower.fixedpoint import decode_table, default_frac_bits, table_scale
from mcugen.ops import OpDef, register
from mcugen.ops._common import out_size, windows


def _pool_attrs(node, ctx, in_shape, kernel):
    attrs = ctx.attrs(node)
    strides = list(attrs.get("strides", [1, 1]))
    if list(attrs.get("dilations", [1, 1])) != [1, 1]:
        ctx.fail(node, "dilated pooling is not supported")
    pads = ctx.resolve_pads(node, attrs, in_shape[2:], kernel, strides, [1, 1])
    if attrs.get("ceil_mode", 0):
        for axis in range(2):
            size = in_shape[2 + axis] + pads[axis] + pads[axis + 2]
            if (size - kernel[axis]) % strides[axis]:
                ctx.fail(node, "ceil_mode=1 with a partial last window is not supported")
    return strides, pads


def _geometry(node, ctx):
    _, c, h, w = ctx.shape(node.inputs[0])
    _, _, oh, ow = ctx.shape(node.output)
    a = node.attrs
    return {"channels": c, "in_h": h, "in_w": w, "out_h": oh, "out_w": ow,
            "k_h": a["kernel"][0], "k_w": a["kernel"][1],
            "stride_h": a["strides"][0], "stride_w": a["strides"][1],
            "pad_top": a["pads"][0], "pad_left": a["pads"][1],
            "pad_bottom": a["pads"][2], "pad_right": a["pads"][3],
            "in_plane": h * w, "out_plane": oh * ow}


def _out_shape(node, in_shape):
    n, c, h, w = in_shape
    a = node.attrs
    return (n, c, out_size(h, a["kernel"][0], a["strides"][0], a["pads"][0], a["pads"][2]),
            out_size(w, a["kernel"][1], a["strides"][1], a["pads"][1], a["pads"][3]))


def _window_args(p):
    return ((p["k_h"], p["k_w"]), (p["stride_h"], p["stride_w"]),
            (p["pad_top"], p["pad_left"], p["pad_bottom"], p["pad_right"]))


@register
class MaxPool(OpDef):
    kind = "MaxPool"
    onnx_types = ("MaxPool",)
    step_kinds = ("maxpool",)
    preserves_codes = True

    def from_onnx(self, node, ctx):
        if len(node.output) > 1 and node.output[1]:
            ctx.fail(node, "the Indices output of MaxPool is not supported")
        kernel = list(ctx.attrs(node)["kernel_shape"])
        strides, pads = _pool_attrs(node, ctx, ctx.shape(node.input[0]), kernel)
        return Node(name=node.name, op=self.kind, inputs=[node.input[0]], output=node.output[0],
                    attrs={"kernel": kernel, "strides": strides, "pads": pads}, onnx_op="MaxPool")

    def infer_shape(self, node, in_shapes):
        return _out_shape(node, in_shapes[0])

    def run_float(self, node, inputs):
        a = node.attrs
        return windows(inputs[0], a["kernel"], a["strides"], a["pads"], pad_value=-np.inf).max(axis=(4, 5))

    def lower(self, node, ctx):
        enc = ctx.encoding(node.inputs[0])
        params = _geometry(node, ctx)
        params["code_min"] = enc.code_min
        return ctx.step(node, "maxpool", params=params, consts={}, info={"abits": enc.bits})

    def run_int(self, step, inputs):
        p = step.params
        return windows(inputs[0].astype(np.int64), *_window_args(p),
                       pad_value=p["code_min"] - 1).max(axis=(4, 5))


@register
class AveragePool(OpDef):
    kind = "AveragePool"
    onnx_types = ("AveragePool", "GlobalAveragePool")
    step_kinds = ("avgpool",)

    def from_onnx(self, node, ctx):
        in_shape = ctx.shape(node.input[0])
        if len(in_shape) != 4:
            ctx.fail(node, f"only 2-D pooling on [1, C, H, W] is supported, got {list(in_shape)}")
        if node.op_type == "GlobalAveragePool":
            kernel, strides, pads = list(in_shape[2:]), [1, 1], [0, 0, 0, 0]
        else:
            kernel = list(ctx.attrs(node)["kernel_shape"])
            strides, pads = _pool_attrs(node, ctx, in_shape, kernel)
            if any(pads) and not ctx.attrs(node).get("count_include_pad", 0):
                ctx.fail(node, "padded AveragePool with count_include_pad=0 is not supported")
        return Node(name=node.name, op=self.kind, inputs=[node.input[0]], output=node.output[0],
                    attrs={"kernel": kernel, "strides": strides, "pads": pads},
                    onnx_op=node.op_type)

    def infer_shape(self, node, in_shapes):
        return _out_shape(node, in_shapes[0])

    def run_float(self, node, inputs):
        a = node.attrs
        return windows(inputs[0], a["kernel"], a["strides"], a["pads"]).mean(axis=(4, 5))

    def lower(self, node, ctx):
        x, y = ctx.encoding(node.inputs[0]), ctx.encoding(node.output)
        frac = default_frac_bits(x)
        table = decode_table(x, frac)
        count = node.attrs["kernel"][0] * node.attrs["kernel"][1]
        unit = x.range / (table_scale(x, frac) * count)
        bound = int(np.abs(table).max()) * count
        consts, params, info = encoder_step_parts(y, None, [unit], bound)
        params.update(_geometry(node, ctx), x_offset=x.table_offset)
        consts["dx"] = table.astype(np.int32)
        return ctx.step(node, "avgpool", params=params, consts=consts, info=info)

    def run_int(self, step, inputs):
        p = step.params
        x = step.consts["dx"].astype(np.int64)[inputs[0].astype(np.int64) + p["x_offset"]]
        acc = windows(x, *_window_args(p)).sum(axis=(4, 5))
        n = acc.shape[0]
        flat = acc.reshape(n, 1, -1)
        return apply_thresholds(flat, step.consts["thresholds"], p["code_min"]).reshape(acc.shape)
