"""Elementwise activations: Relu, Clip (ReLU6), LeakyRelu, PRelu, Sigmoid, Tanh, HardSigmoid,
HardSwish, Elu, Selu, Softplus, Gelu, and the SiLU/Gelu/Mish nodes frontend/patterns.py fuses
from their exported subgraphs. Normally fused into the producer's encoder; when they stand
alone (after a pool, say) they become a code-to-code look-up table, one per channel for a
per-channel PRelu."""
from __future__ import annotations

import numpy as np

from mcugen.ir.graph import Node
from mcugen.ops import OpDef, register
from mcugen.numerics import activation_fn, activation_per_channel

# ONNX's default Selu constants (the float32 values the operator schema states)
SELU_ALPHA = 1.67326319217681884765625
SELU_GAMMA = 1.05070102214813232421875


def _float_attr(node, ctx, name, default):
    return float(ctx.attrs(node).get(name, default))


def _clip_spec(node, ctx):
    attrs = ctx.attrs(node)
    lo, hi = attrs.get("min", -np.inf), attrs.get("max", np.inf)     # opset < 11: attributes
    if len(node.input) > 1 and node.input[1]:
        lo = float(ctx.require_const(node, 1, "min"))
    if len(node.input) > 2 and node.input[2]:
        hi = float(ctx.require_const(node, 2, "max"))
    return ("Clip", float(lo), float(hi))


def _gelu_spec(node, ctx):
    approximate = ctx.attrs(node).get("approximate", b"none")
    approximate = approximate.decode() if isinstance(approximate, bytes) else str(approximate)
    if approximate not in ("none", "tanh"):
        ctx.fail(node, f"approximate='{approximate}' is not a Gelu mode; use 'none' or 'tanh'")
    return ("Gelu",) if approximate == "none" else ("GeluTanh",)


def _prelu_spec(node, ctx):
    """The slope tensor -> one slope, or one per channel (axis 1) of the input."""
    slope = np.asarray(ctx.require_const(node, 1, "slope"), dtype=np.float64)
    shape = tuple(ctx.shape(node.input[0]))
    try:
        full = np.broadcast_to(slope, shape)           # ONNX: unidirectional broadcast
    except ValueError:
        ctx.fail(node, f"slope of shape {list(slope.shape)} does not broadcast to the input "
                       f"{list(shape)}")
    if np.all(full == full.flat[0]):
        return ("PRelu", (float(full.flat[0]),))
    per_channel = np.moveaxis(full, 1, 0).reshape(shape[1], -1) if len(shape) >= 2 else None
    if per_channel is None or not np.all(per_channel == per_channel[:, :1]):
        ctx.fail(node, f"slope of shape {list(slope.shape)} varies along other axes than the "
                       f"channels of {list(shape)}; supported: one slope or one per channel")
    return ("PRelu", tuple(float(s) for s in per_channel[:, 0]))


SPECS = {
    "Relu": lambda node, ctx: ("Relu",),
    "Clip": _clip_spec,
    "LeakyRelu": lambda node, ctx: ("LeakyRelu", _float_attr(node, ctx, "alpha", 0.01)),
    "PRelu": _prelu_spec,
    "Sigmoid": lambda node, ctx: ("Sigmoid",),
    "Tanh": lambda node, ctx: ("Tanh",),
    "HardSigmoid": lambda node, ctx: ("HardSigmoid", _float_attr(node, ctx, "alpha", 0.2),
                                      _float_attr(node, ctx, "beta", 0.5)),
    "HardSwish": lambda node, ctx: ("HardSwish",),
    "Elu": lambda node, ctx: ("Elu", _float_attr(node, ctx, "alpha", 1.0)),
    "Selu": lambda node, ctx: ("Selu", _float_attr(node, ctx, "alpha", SELU_ALPHA),
                               _float_attr(node, ctx, "gamma", SELU_GAMMA)),
    "Softplus": lambda node, ctx: ("Softplus",),
    "Gelu": _gelu_spec,
    "SiLU": lambda node, ctx: ("SiLU",),          # fused by frontend/patterns.py
    "Mish": lambda node, ctx: ("Mish",),          # fused by frontend/patterns.py
}


def activation_spec(node, ctx):
    """An ONNX activation node -> the spec tuple ops/_common.activation_fn evaluates."""
    return SPECS[node.op_type](node, ctx)


@register
class Activation(OpDef):
    kind = "Activation"
    onnx_types = tuple(SPECS)
    step_kinds = ("recode",)
    applies_activation = True

    def step_value_range(self, step, input_ranges):
        return (int(step.consts["lut"].min()), int(step.consts["lut"].max()))

    def from_onnx(self, node, ctx):
        return Node(name=node.name, op=self.kind, inputs=[node.input[0]], output=node.output[0],
                    attrs={"activation": activation_spec(node, ctx)}, onnx_op=node.op_type)

    def infer_shape(self, node, in_shapes):
        return in_shapes[0]

    def run_float(self, node, inputs):
        return activation_fn(node.attrs["activation"])(inputs[0])

    def lower(self, node, ctx):
        spec = node.attrs["activation"]
        channels = activation_per_channel(spec) or 1
        sigma = activation_fn(spec, axis=0)

        def per_channel(values):
            return sigma(np.broadcast_to(values, (channels, values.size)))
        return lower_recode(node, ctx, per_channel, channels=channels)

    def run_int(self, step, inputs):
        return run_recode(step, inputs[0])


def lower_recode(node, ctx, function, channels):
    """A code-to-code table per channel (or one for all): every input code decoded, `function`
    (real values (n,) -> (channels, n)) applied, encoded to the output's grid; exactly what
    simulated quantization computes, with no arithmetic at run time. Its input is already a
    code, so the table is indexed by it directly: an exact lut (code error 0 by construction),
    reported like the encoders of the other steps."""
    x, y = ctx.encoding(node.inputs[0]), ctx.encoding(node.output)
    lut = y.encode(function(x.decode(x.codes())))
    size = int(np.prod(ctx.shape(node.output)))
    params = {"channels": channels, "plane": size // channels, "n_codes": int(lut.shape[1]),
              "x_offset": x.table_offset}
    return ctx.step(node, "recode", params=params, consts={"lut": lut.astype(y.ctype)},
                    info={"abits": y.bits, "table_bytes": int(lut.astype(y.ctype).nbytes),
                          "encoder": "recode", "encoder_max_code_error": 0,
                          "encoder_off_share": 0.0, "encoder_mean_code_error": 0.0})


def run_recode(step, codes):
    p = step.params
    n = codes.shape[0]
    index = codes.astype(np.int64).reshape(n, p["channels"], p["plane"]) + p["x_offset"]
    rows = np.arange(p["channels"])[None, :, None]
    return step.consts["lut"].astype(np.int64)[rows, index].reshape(codes.shape)
