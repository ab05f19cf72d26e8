"""A transformer Linear as exporters write it: MatMul(tokens, W) then Add(bias) -> one MatMul
node with the bias as a third input (ops/gemm.py token_linear takes it), so that the bias goes
into the layer's accumulator instead of an Add of a constant after the layer. Runs on the
shape-inferred, constant-folded ONNX node list, before the nodes are mapped."""
from __future__ import annotations

from collections import Counter

import numpy as np
from onnx import helper


def _bias_of(add, matmul_out, ctx, features):
    """The Add's other operand when it is a constant along the last axis only, else None."""
    others = [name for name in add.input if name != matmul_out]
    if len(add.input) != 2 or len(others) != 1:
        return None
    value = ctx.const(others[0])
    if value is None or value.size != features or value.shape[-1:] != (features,):
        return None
    return np.asarray(value, dtype=np.float32).reshape(features)


def fuse_linear_bias(nodes, ctx) -> list:
    """Every MatMul of tokens (rank >= 3) by a 2-D constant whose only reader is an Add of a
    bias vector: the pair becomes one three-input MatMul writing the Add's output."""
    producers = {node.output[0]: node for node in nodes if node.output}
    readers = Counter(name for node in nodes for name in node.input if name)
    fused, dropped = {}, set()
    for add in nodes:
        if add.op_type != "Add" or add.domain not in ("", "ai.onnx"):
            continue
        for name in add.input:
            matmul = producers.get(name)
            if matmul is None or matmul.op_type != "MatMul" or readers[name] != 1 \
                    or ctx.is_graph_output(name) or id(matmul) in dropped:
                continue
            weight = ctx.const(matmul.input[1])
            shape = ctx.shapes.get(matmul.input[0])
            if weight is None or weight.ndim != 2 or shape is None or len(shape) < 3:
                continue
            bias = _bias_of(add, name, ctx, weight.shape[1])
            if bias is None:
                continue
            bias_name = f"{add.output[0]}/linear_bias"
            ctx.constants[bias_name] = bias
            fused[id(add)] = helper.make_node("MatMul", [matmul.input[0], matmul.input[1], bias_name],
                                              list(add.output), name=matmul.name)
            dropped.add(id(matmul))
            break
    return [fused.get(id(node), node) for node in nodes if id(node) not in dropped]
