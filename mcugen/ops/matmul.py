"""MatMul of two activations (attention's Q K^T and A V): [1, ..., N, K] x [1, ..., K, M] with
the leading axes (heads) equal, or those of one operand all 1 (shared by every head).

The integer product of DESIGN section 2 summed: both operands decoded through their own tables
(int16 at most), acc = sum_k Da[a_nk] * Db[b_km] in int32 with the tables' fractional bits
lowered until K * max|Da| * max|Db| <= 2^31 - 2, then encoded by the step's encoder."""
from __future__ import annotations

import numpy as np

from mcugen.ir.graph import Node
from mcugen.lower.encoders import encode
from mcugen.lower.fixedpoint import ACC_LIMIT, decode_table, default_frac_bits, table_scale
from mcugen.numerics import activation_fn
from mcugen.ops import OpDef, register


def matmul_of_activations(node, ctx):
    """The IR node of an ONNX MatMul whose right operand is computed (ops/gemm.py sends it)."""
    a_shape, b_shape = (tuple(ctx.shape(name)) for name in node.input)
    if len(a_shape) < 3 or len(b_shape) < 3 or a_shape[0] != 1 or b_shape[0] != 1:
        ctx.fail(node, f"MatMul of two activations {list(a_shape)} x {list(b_shape)}: supported "
                       f"are [1, ..., N, K] x [1, ..., K, M] (attention's heads)")
    if a_shape[-1] != b_shape[-2]:
        ctx.fail(node, f"inner dimensions differ: {list(a_shape)} x {list(b_shape)}")
    heads_a, heads_b = a_shape[1:-2], b_shape[1:-2]
    if len(heads_a) != len(heads_b) or not (heads_a == heads_b or all(h == 1 for h in heads_a)
                                            or all(h == 1 for h in heads_b)):
        ctx.fail(node, f"the heads of {list(a_shape)} and {list(b_shape)} neither match nor are "
                       f"shared; supported: equal leading axes, or all 1 on one side")
    return Node(name=node.name, op="MatMulAct", inputs=list(node.input), output=node.output[0],
                attrs={"activation": None}, onnx_op="MatMul")


def _frac_bits(ea, eb, k):
    """The tables' fractional bits: the int16 defaults, the larger lowered first until a sum
    of k products provably fits int32."""
    fa, fb = default_frac_bits(ea), default_frac_bits(eb)
    while True:
        bound = k * int(np.abs(decode_table(ea, fa)).max()) * int(np.abs(decode_table(eb, fb)).max())
        if bound <= ACC_LIMIT or (fa == 0 and fb == 0):
            return fa, fb, bound
        if fa >= fb:
            fa -= 1
        else:
            fb -= 1


@register
class MatMulAct(OpDef):
    kind = "MatMulAct"
    step_kinds = ("matmul",)
    applies_activation = True
    fuses_activation = "elementwise"

    def infer_shape(self, node, in_shapes):
        a, b = in_shapes
        heads = tuple(max(x, y) for x, y in zip(a[1:-2], b[1:-2]))
        return (1,) + heads + (a[-2], b[-1])

    def run_float(self, node, inputs):
        return activation_fn(node.attrs["activation"])(np.matmul(inputs[0], inputs[1]))

    def lower(self, node, ctx):
        ea, eb = (ctx.encoding(t) for t in node.inputs)
        a_shape, b_shape = (ctx.shape(t) for t in node.inputs)
        n, k, m = a_shape[-2], a_shape[-1], b_shape[-1]
        fa, fb, bound = _frac_bits(ea, eb, k)
        if bound > ACC_LIMIT:
            ctx.fail(node, f"a sum of {k} products can overflow int32 even without fractional "
                           f"bits; supported: inner dimensions up to {ACC_LIMIT // bound * k}")
        heads = int(np.prod(self.infer_shape(node, [a_shape, b_shape])[1:-2]))
        unit = ea.range * eb.range / (table_scale(ea, fa) * table_scale(eb, fb))
        consts, params, info = ctx.encoder_parts(node, node.attrs["activation"], [unit], bound)
        params.update(heads=heads, n=n, k=k, m=m,
                      a_head=n * k if int(np.prod(a_shape[1:-2])) > 1 else 0,
                      b_head=k * m if int(np.prod(b_shape[1:-2])) > 1 else 0,
                      a_offset=ea.table_offset, b_offset=eb.table_offset)
        consts.update(table_a=decode_table(ea, fa).astype(np.int16),
                      table_b=decode_table(eb, fb).astype(np.int16))
        info.update(macs=heads * n * k * m, acc_bound=bound, x_frac_bits=fa)
        return ctx.step(node, "matmul", params=params, consts=consts, info=info)

    def run_int(self, step, inputs):
        p = step.params
        count = inputs[0].shape[0]

        def decoded(x, table, offset, rows, cols, stride):
            values = step.consts[table].astype(np.int64)[x.astype(np.int64).reshape(count, -1) + offset]
            heads = p["heads"] if stride else 1
            values = values.reshape(count, heads, rows, cols)
            return np.broadcast_to(values, (count, p["heads"], rows, cols))
        a = decoded(inputs[0], "table_a", p["a_offset"], p["n"], p["k"], p["a_head"])
        b = decoded(inputs[1], "table_b", p["b_offset"], p["k"], p["m"], p["b_head"])
        return encode(step, np.matmul(a, b).reshape(count, -1), 0)
