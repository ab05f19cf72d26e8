"""Mul of two activations with numpy broadcasting (a squeeze-excitation gate, x * g with g of
shape [1, C, 1, 1]); Mul and Div by a constant are per-channel affines (ops/affine.py).

The integer product is the automorphism of DESIGN section 2 on two activations: each operand's
codes decoded through its own table into a fixed point (the identity on the uniform grid, so
the product of two int8 codes there), one int32 product, encoded by the step's encoder."""
from __future__ import annotations

import numpy as np

from mcugen.ir.graph import Node
from mcugen.lower.encoders import encode
from mcugen.lower.fixedpoint import decode_table, default_frac_bits, table_scale
from mcugen.numerics import activation_fn
from mcugen.ops import OpDef, register
from mcugen.ops.affine import affine_from_onnx
from mcugen.ops.constant import constant_operand

MAX_DIMS = 4      # loop dimensions of the broadcast, after merging (the kernel's loop nest)


def broadcast_loops(out_shape, operand_shapes) -> tuple:
    """The loop nest over the output (batch excluded) and each operand's element stride per
    loop (0 where it is broadcast): adjacent axes that every operand walks contiguously are
    merged, size-1 axes dropped, and the nest padded in front to MAX_DIMS (or longer when it
    cannot be merged that far). Returns (dims, [strides per operand])."""
    rank = len(out_shape)
    dims = list(out_shape[1:])
    strides = []
    for shape in operand_shapes:
        padded = (1,) * (rank - len(shape)) + tuple(shape)
        step = [int(np.prod(padded[a + 1:])) for a in range(1, rank)]
        strides.append([0 if padded[a] == 1 else step[a - 1] for a in range(1, rank)])
    loops = [(d, [s[i] for s in strides]) for i, d in enumerate(dims) if d > 1]
    merged = []
    for d, st in loops:
        if merged and all(prev == cur * d for prev, cur in zip(merged[-1][1], st)):
            merged[-1] = (merged[-1][0] * d, st)
        else:
            merged.append((d, st))
    merged = [(1, [0] * len(strides))] * max(0, MAX_DIMS - len(merged)) + merged
    return [d for d, _ in merged], [[st[k] for _, st in merged] for k in range(len(strides))]


def gather_index(dims, strides) -> np.ndarray:
    """The flat element index an operand with `strides` reads at each output position."""
    grids = np.meshgrid(*[np.arange(d) for d in dims], indexing="ij")
    return sum(g * s for g, s in zip(grids, strides)).reshape(-1).astype(np.int64)


@register
class Mul(OpDef):
    kind = "Mul"
    onnx_types = ("Mul", "Div")
    step_kinds = ("mul",)
    applies_activation = True
    fuses_activation = "elementwise"
    sign_follows_inputs = True

    def from_onnx(self, node, ctx):
        consts = [ctx.const(name) for name in node.input]
        if consts[0] is not None or consts[1] is not None:
            return affine_from_onnx(node, ctx, consts) or self._with_constant(node, ctx, consts)
        if node.op_type == "Div":
            ctx.fail(node, "Div of two activations is not supported: nothing bounds its divisor "
                           "away from zero; supported: division by a constant")
        return self._node(node, ctx, list(node.input))

    def _node(self, node, ctx, inputs):
        """The IR Mul of two activation tensors, once their broadcast is one the kernel loops."""
        out = tuple(ctx.shape(node.output[0]))
        shapes = [tuple(ctx.shape(name)) for name in inputs]
        if any(len(shape) > len(out) or (len(shape) == len(out) and shape[0] != 1) for shape in shapes):
            ctx.fail(node, "operands broadcast across the batch axis; supported: [1, ...] operands")
        dims, _ = broadcast_loops(out, shapes)
        if len(dims) > MAX_DIMS:
            ctx.fail(node, f"the broadcast of {[list(s) for s in shapes]} needs {len(dims)} nested "
                           f"loops; supported: up to {MAX_DIMS}")
        return Node(name=node.name, op=self.kind, inputs=inputs, output=node.output[0],
                    attrs={"activation": None}, onnx_op=node.op_type)

    def _with_constant(self, node, ctx, consts):
        """x * C or x / C with C varying along more than the channels (a mask): C (its
        reciprocal for a Div) becomes an operand of its own, broadcast as it is."""
        c_index = 0 if consts[0] is not None else 1
        x = node.input[1 - c_index]
        value = np.asarray(consts[c_index], dtype=np.float64)
        if node.op_type == "Div":
            if c_index == 0:
                ctx.fail(node, "dividing a constant by an activation is not supported")
            if np.any(value == 0):
                ctx.fail(node, "the constant divisor holds zeros")
            value = 1.0 / value
        constant = constant_operand(node, ctx, c_index, x, value=value)
        inputs = [constant.output, x] if c_index == 0 else [x, constant.output]
        return [constant, self._node(node, ctx, inputs)]

    def infer_shape(self, node, in_shapes):
        return tuple(np.broadcast_shapes(*in_shapes))

    def run_float(self, node, inputs):
        return activation_fn(node.attrs["activation"])(inputs[0] * inputs[1])

    def lower(self, node, ctx):
        ea, eb = (ctx.encoding(t) for t in node.inputs)
        fa, fb = default_frac_bits(ea), default_frac_bits(eb)
        table_a, table_b = decode_table(ea, fa), decode_table(eb, fb)
        # |Da|, |Db| <= 2^15 - 1 (int16 tables): the product stays below 2^30 < int32
        bound = int(np.abs(table_a).max()) * int(np.abs(table_b).max())
        unit = ea.range * eb.range / (table_scale(ea, fa) * table_scale(eb, fb))
        consts, params, info = ctx.encoder_parts(node, node.attrs["activation"], [unit], bound)
        dims, (a_strides, b_strides) = broadcast_loops(
            ctx.shape(node.output), [ctx.shape(t) for t in node.inputs])
        params.update(dims=dims, a_strides=a_strides, b_strides=b_strides,
                      a_offset=ea.table_offset, b_offset=eb.table_offset)
        consts.update(table_a=table_a.astype(np.int16), table_b=table_b.astype(np.int16))
        info.update(acc_bound=bound, x_frac_bits=fa)
        return ctx.step(node, "mul", params=params, consts=consts, info=info)

    def run_int(self, step, inputs):
        p = step.params
        a_index = gather_index(p["dims"], p["a_strides"])
        b_index = gather_index(p["dims"], p["b_strides"])
        n = inputs[0].shape[0]
        a = step.consts["table_a"].astype(np.int64)[inputs[0].reshape(n, -1)[:, a_index].astype(np.int64)
                                                    + p["a_offset"]]
        b = step.consts["table_b"].astype(np.int64)[inputs[1].reshape(n, -1)[:, b_index].astype(np.int64)
                                                    + p["b_offset"]]
        return encode(step, a * b, 0)
