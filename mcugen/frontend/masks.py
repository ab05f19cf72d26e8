"""Attention masks added before a softmax: Add(scores, M) -> Softmax over the last axis, the
constant M holding -inf, or values at or below -1e4 that no score comes near (GPT-2's and
Llama's causal masks, a padding mask; dynamo writes float32's lowest instead of -inf). Added as
they are, they would set the softmax input's range (3.4e38) and leave no resolution for the
scores. Instead the masked entries become a second input of the Softmax, a constant boolean
`keep` (ops/softmax.py: left out of the row's maximum and sum, probability 0), and what is left
of M (a relative position bias, zeros) stays an Add when it is not all zero. Runs on the
shape-inferred node list, before the nodes are mapped."""
from __future__ import annotations

from collections import Counter

import numpy as np
from onnx import helper

MASKED = -1e4          # at or below: a mask entry (float32 softmax gives it probability 0)


def _mask_operand(add, ctx):
    """(index of the scores, the constant) when the Add adds a constant holding masked entries."""
    if add.op_type != "Add" or len(add.input) != 2 or add.domain not in ("", "ai.onnx"):
        return None
    for i in (0, 1):
        value = ctx.const(add.input[1 - i])
        if value is not None and ctx.const(add.input[i]) is None and value.dtype.kind == "f" \
                and np.any(value <= MASKED):
            return i, np.asarray(value, dtype=np.float64)
    return None


def _last_axis(softmax, ctx) -> bool:
    rank = len(ctx.shapes.get(softmax.input[0], ()))
    axis = next((a.i for a in softmax.attribute if a.name == "axis"), -1 if ctx.opset >= 13 else 1)
    return rank > 1 and axis % rank == rank - 1


def split_masks(nodes, ctx) -> list:
    """Every Add of a masking constant read only by a Softmax over the last axis: the mask moved
    into the Softmax, the rest of the constant (if any) added as before."""
    producers = {node.output[0]: node for node in nodes if node.output}
    readers = Counter(name for node in nodes for name in node.input if name)
    replaced, dropped = {}, set()
    for softmax in nodes:
        if softmax.op_type != "Softmax" or len(softmax.input) != 1 or not _last_axis(softmax, ctx):
            continue
        add = producers.get(softmax.input[0])
        found = _mask_operand(add, ctx) if add is not None else None
        if found is None or readers[add.output[0]] != 1 or ctx.is_graph_output(add.output[0]):
            continue
        index, value = found
        keep = f"{softmax.output[0]}/keep"
        ctx.constants[keep] = value > MASKED
        scores = add.input[index]
        rest = np.where(value > MASKED, value, 0.0)
        if np.any(rest):
            rest_name = f"{add.output[0]}/unmasked"
            ctx.constants[rest_name] = rest.astype(np.float32)
            replaced[id(add)] = helper.make_node("Add", [scores, rest_name], list(add.output), name=add.name)
            scores = add.output[0]
        else:
            dropped.add(id(add))
        masked = helper.make_node("Softmax", [scores, keep], list(softmax.output), name=softmax.name)
        masked.attribute.extend(softmax.attribute)
        replaced[id(softmax)] = masked
    return [replaced.get(id(node), node) for node in nodes if id(node) not in dropped]
