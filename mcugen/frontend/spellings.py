"""Ops an exporter writes that are another spelling of one mcugen lowers: Neg(x) is a Mul by a
constant -1 (rotary embeddings' rotate_half), and a Cast to the element type a tensor already
has is the identity (T5's TorchScript export casts float32 to float32). Runs on the
shape-inferred node list, before the nodes are mapped; any other Cast stays, and is refused."""
from __future__ import annotations

import numpy as np
from onnx import helper


def _elem_types(model) -> dict:
    values = list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output)
    types = {v.name: v.type.tensor_type.elem_type for v in values}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    return types


def respell(nodes, ctx) -> list:
    """The nodes, each Neg as a Mul by -1 and each same-type Cast as an Identity."""
    types = _elem_types(ctx.model)
    out = []
    for node in nodes:
        if node.domain not in ("", "ai.onnx"):
            out.append(node)
        elif node.op_type == "Neg":
            minus_one = f"{node.output[0]}/minus_one"
            ctx.constants[minus_one] = np.array(-1.0, dtype=np.float32)
            out.append(helper.make_node("Mul", [node.input[0], minus_one], list(node.output),
                                        name=node.name))
        elif node.op_type == "Cast" and types.get(node.input[0]) == \
                next(a.i for a in node.attribute if a.name == "to"):
            out.append(helper.make_node("Identity", [node.input[0]], list(node.output), name=node.name))
        else:
            out.append(node)
    return out
