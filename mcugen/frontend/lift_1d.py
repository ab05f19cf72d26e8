"""1-D convolution and pooling (audio, sensor and keyword-spotting models) as their 2-D forms:
an ONNX-to-ONNX rewrite that views [1, C, L] as [1, C, 1, L] around each such node (two free
Reshapes), so the 2-D kernels, their tiling and their tests serve both."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

LIFTED = ("Conv", "MaxPool", "AveragePool", "GlobalAveragePool")


def _static_shapes(model):
    shapes = {}
    for value in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if value.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [int(d.dim_value) for d in dims]
    return shapes


def _as_2d_attributes(node):
    """kernel_shape/strides/dilations [k] -> [1, k]; pads [b, e] -> [0, b, 0, e]."""
    lifted = []
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        if attr.name in ("kernel_shape", "strides", "dilations") and len(value) == 1:
            value = [1, int(value[0])]
        elif attr.name == "pads" and len(value) == 2:
            value = [0, int(value[0]), 0, int(value[1])]
        lifted.append(helper.make_attribute(attr.name, value))
    return lifted


def _reshape(name, src, dst, shape, initializers):
    shape_name = f"{dst}/shape"
    initializers.append(numpy_helper.from_array(np.array(shape, dtype=np.int64), shape_name))
    return helper.make_node("Reshape", [src, shape_name], [dst], name=name)


def _lift(node, shapes, weights, initializers):
    """The three nodes that replace a 1-D node, or None when it cannot be lifted (a weight
    computed at run time: the 2-D check then refuses it by name)."""
    x, y = node.input[0], node.output[0]
    inputs = list(node.input)
    if node.op_type == "Conv":
        if len(inputs) < 2 or inputs[1] not in weights:
            return None
        weight = weights[inputs[1]]
        inputs[1] = f"{inputs[1]}/2d:{node.name or y}"
        initializers.append(numpy_helper.from_array(weight[:, :, None, :], inputs[1]))
    c, length = shapes[x][1:]
    inputs[0] = f"{x}/2d:{node.name or y}"
    lifted = helper.make_node(node.op_type, inputs, [f"{y}/2d"], name=node.name, domain=node.domain)
    lifted.attribute.extend(_as_2d_attributes(node))
    out_shape = [1] + shapes[y][1:]
    return [_reshape(f"{node.name or y}/to2d", x, inputs[0], [1, c, 1, length], initializers),
            lifted,
            _reshape(f"{node.name or y}/to1d", f"{y}/2d", y, out_shape, initializers)]


def lift_1d(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite every 1-D Conv/pool of a shape-inferred model; returns the model (re-inferred
    when anything changed)."""
    shapes = _static_shapes(model)
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:          # some exporters write weights as Constant nodes
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        if node.op_type == "Constant" and value is not None:
            weights[node.output[0]] = numpy_helper.to_array(value)
    initializers, nodes, changed = [], [], False
    for node in model.graph.node:
        one_d = (node.op_type in LIFTED and node.domain in ("", "ai.onnx") and node.input
                 and len(shapes.get(node.input[0], [])) == 3 and node.output[0] in shapes)
        replacement = _lift(node, shapes, weights, initializers) if one_d else None
        nodes.extend(replacement or [node])
        changed |= replacement is not None
    if not changed:
        return model
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(initializers)
    del model.graph.value_info[:]
    return onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
