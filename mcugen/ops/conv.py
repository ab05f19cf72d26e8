"""Conv: grouped/depthwise 2-D convolution with pads, strides and dilations."""
from __future__ import annotations

import numpy as np

from mcugen.ir.graph import Node
from mcugen.ops import OpDef, register
from mcugen.ops._common import conv2d, out_size
from mcugen.numerics import activation_fn
from mcugen.ops._mac import (check_bias, decoded_weights, encode_output,
                             lower_mac, mac_accumulate)


@register
class Conv(OpDef):
    kind = "Conv"
    onnx_types = ("Conv",)
    step_kinds = ("conv2d",)
    is_mac = True
    applies_activation = True
    fuses_activation = "per_channel"

    def from_onnx(self, node, ctx):
        x = node.input[0]
        w = ctx.require_const(node, 1, "weight")
        if w.ndim != 4:
            ctx.fail(node, f"{w.ndim - 2}-D convolution is not supported; supported: 2-D (weight of rank 4)")
        in_shape = ctx.shape(x)
        attrs = ctx.attrs(node)
        group = int(attrs.get("group", 1))
        strides = list(attrs.get("strides", [1, 1]))
        dilations = list(attrs.get("dilations", [1, 1]))
        pads = ctx.resolve_pads(node, attrs, in_shape[2:], w.shape[2:], strides, dilations)
        bias = check_bias(node, ctx, w.shape[0], ctx.optional_const(node, 2))
        return Node(name=node.name, op=self.kind, inputs=[x], output=node.output[0],
                    attrs={"group": group, "strides": strides, "dilations": dilations,
                           "pads": pads, "activation": None},
                    params={"weight": w.astype(np.float64), "bias": bias}, onnx_op="Conv")

    def infer_shape(self, node, in_shapes):
        n, c, h, w = in_shapes[0]
        co, _, kh, kw = node.params["weight"].shape
        a = node.attrs
        return (n, co, out_size(h, kh, a["strides"][0], a["pads"][0], a["pads"][2], a["dilations"][0]),
                out_size(w, kw, a["strides"][1], a["pads"][1], a["pads"][3], a["dilations"][1]))

    def run_float(self, node, inputs):
        a = node.attrs
        y = conv2d(inputs[0], node.params["weight"], a["strides"], a["pads"], a["dilations"], a["group"])
        y = y + node.params["bias"].reshape(1, -1, 1, 1)
        return activation_fn(a["activation"])(y)

    def lower(self, node, ctx):
        _, c, h, w = ctx.shape(node.inputs[0])
        _, co, oh, ow = ctx.shape(node.output)
        _, cg, kh, kw = node.params["weight"].shape
        a = node.attrs
        params = {"in_c": c, "in_h": h, "in_w": w, "out_c": co, "out_h": oh, "out_w": ow,
                  "k_h": kh, "k_w": kw, "stride_h": a["strides"][0], "stride_w": a["strides"][1],
                  "pad_top": a["pads"][0], "pad_left": a["pads"][1],
                  "pad_bottom": a["pads"][2], "pad_right": a["pads"][3],
                  "dil_h": a["dilations"][0], "dil_w": a["dilations"][1], "group": a["group"],
                  "in_c_per_group": cg, "out_c_per_group": co // a["group"],
                  "weights_per_channel": cg * kh * kw, "in_plane": h * w, "out_plane": oh * ow}
        return lower_mac(node, ctx, "conv2d", params, macs=co * oh * ow * cg * kh * kw)

    def run_int(self, step, inputs):
        p = step.params
        w = decoded_weights(step).reshape(p["out_c"], p["in_c_per_group"], p["k_h"], p["k_w"])
        acc = mac_accumulate(step, inputs[0], w, lambda x, w: conv2d(
            x, w, (p["stride_h"], p["stride_w"]),
            (p["pad_top"], p["pad_left"], p["pad_bottom"], p["pad_right"]),
            (p["dil_h"], p["dil_w"]), p["group"]))
        acc = np.rint(acc).astype(np.int64) + step.consts["bias"].astype(np.int64).reshape(1, -1, 1, 1)
        n = acc.shape[0]
        return encode_output(step, acc.reshape(n, p["out_c"], -1)).reshape(acc.shape)
