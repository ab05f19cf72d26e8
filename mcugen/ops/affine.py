"""Per-channel affine y = x * scale + shift: BatchNormalization, and Mul/Add/Sub/Div by a
constant. The fold_affine pass merges it into the preceding Conv/Gemm; one that cannot fold (on
the network input, after a ReLU or a pool, in a pre-activation ResNet) becomes a code-to-code
table per channel, with any following activation fused into it."""
from __future__ import annotations

import numpy as np

from mcugen.ir.graph import Node
from mcugen.ops import OpDef, register
from mcugen.numerics import activation_fn
from mcugen.ops.activation import lower_recode


def _per_channel(node, ctx, value, out_shape):
    """A constant that broadcasts against out_shape -> a vector along axis 1, or None when it
    varies along other axes too."""
    value = np.asarray(value, dtype=np.float64)
    channels = out_shape[1]
    try:
        full = np.broadcast_to(value, out_shape)
    except ValueError:
        ctx.fail(node, f"constant of shape {list(value.shape)} does not broadcast to {list(out_shape)}")
    moved = np.moveaxis(full, 1, 0).reshape(channels, -1)
    return moved[:, 0].copy() if np.all(moved == moved[:, :1]) else None


def affine_from_onnx(node, ctx, consts):
    """An Add/Sub/Mul/Div of an activation and a constant per channel -> an Affine node; None
    when the constant varies along other axes than the channels (the op then takes it as an
    operand of its own: ops/constant.py)."""
    x_index = 0 if consts[0] is None else 1
    x = node.input[x_index]
    c = consts[1 - x_index]
    shape = ctx.shape(node.output[0])
    if len(shape) < 2:
        ctx.fail(node, f"a constant {node.op_type} on a tensor of rank {len(shape)} has no channel "
                       f"axis; supported: per-channel constants on [1, C, ...]")
    vec = _per_channel(node, ctx, c, shape)
    if vec is None:
        return None
    ones, zeros = np.ones(shape[1]), np.zeros(shape[1])
    op = node.op_type
    if op == "Mul":
        scale, shift = vec, zeros
    elif op == "Div":
        if x_index == 1:
            ctx.fail(node, "dividing a constant by an activation is not supported")
        scale, shift = 1.0 / vec, zeros
    elif op in ("Add", "Sum"):
        scale, shift = ones, vec
    else:  # Sub
        scale, shift = (ones, -vec) if x_index == 0 else (-ones, vec)
    return affine_node(node, x, scale, shift)


def affine_node(node, x, scale, shift):
    """`node`'s output as an Affine of `x`: x * scale + shift per channel, named after `node`."""
    return Node(name=node.name, op="Affine", inputs=[x], output=node.output[0],
                attrs={"activation": None}, params={"scale": scale, "shift": shift},
                onnx_op=node.op_type)


@register
class Affine(OpDef):
    kind = "Affine"
    onnx_types = ("BatchNormalization",)
    applies_activation = True
    fuses_activation = "elementwise"

    def from_onnx(self, node, ctx):
        gamma, beta, mean, var = (ctx.require_const(node, i, n) for i, n in
                                  ((1, "scale"), (2, "B"), (3, "mean"), (4, "var")))
        eps = float(ctx.attrs(node).get("epsilon", 1e-5))
        scale = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
        shift = np.asarray(beta, np.float64) - np.asarray(mean, np.float64) * scale
        return affine_node(node, node.input[0], scale.reshape(-1), shift.reshape(-1))

    def infer_shape(self, node, in_shapes):
        return in_shapes[0]


    def run_float(self, node, inputs):
        x = inputs[0]
        shape = (1, -1) + (1,) * (x.ndim - 2)
        y = x * node.params["scale"].reshape(shape) + node.params["shift"].reshape(shape)
        return activation_fn(node.attrs["activation"])(y)

    def lower(self, node, ctx):
        if len(ctx.shape(node.inputs[0])) < 2:
            ctx.fail(node, "a per-channel scale needs a channel axis (rank >= 2)")
        scale, shift = node.params["scale"][:, None], node.params["shift"][:, None]
        sigma = activation_fn(node.attrs["activation"], axis=0)
        return lower_recode(node, ctx, lambda values: sigma(values[None, :] * scale + shift),
                            channels=scale.shape[0])      # a recode step (activation.py)
