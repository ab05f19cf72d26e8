"""Constant folding before shape inference: every node whose inputs are all known becomes an
initializer, and so does the Shape (or Size) of a tensor whose shape is static.

Exporters compute shapes at run time: TorchScript writes `Shape -> Gather -> Unsqueeze ->
Concat -> Reshape` for a flatten and `ConstantOfShape / Equal / Where / Expand` for a
broadcast, all of them constant once the input's shape is fixed. Folded only after shape
inference, the Reshape's target shape stays unknown, every shape downstream of it too, and the
first error names a Shape node instead of what is really unsupported. So shapes are inferred,
what is constant is folded, and the two repeat until nothing more folds (each round makes the
shapes after a folded Reshape known). Values come from onnx's reference evaluator.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from mcugen.errors import MCUGenError, display_name

# node types whose output depends on the input's shape only (static shape: a constant)
SHAPE_OF = ("Shape", "Size")


def static_shapes(model) -> dict:
    """Tensor name -> its shape, for every value whose dimensions are all known numbers."""
    shapes = {}
    for value in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        tensor_type = value.type.tensor_type
        dims = tensor_type.shape.dim
        if tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(int(d.dim_value) for d in dims)
    return shapes


def _infer(model):
    """Shape inference that tolerates what it cannot infer yet (strict inference runs after)."""
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:       # noqa: BLE001 - onnx raises several types; the strict run reports
        return model


def _gather_elements(node, feeds) -> list:
    """GatherElements by numpy: onnx's reference evaluator goes through np.choose, which takes
    at most 64 choices (transformers' token-type buffer over 512 positions has more)."""
    data, indices = (feeds[name] for name in node.input[:2])
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0) % data.ndim
    indices = np.where(indices < 0, indices + data.shape[axis], indices)
    return [np.take_along_axis(data, indices.astype(np.int64), axis=axis)]


# node types folded by mcugen's own numpy instead of onnx's reference evaluator
OWN_FOLDS = {"GatherElements": _gather_elements}


def _evaluate(node, opset_import, feeds) -> list:
    """The outputs of one node on the given input values; a node the evaluator fails on is
    refused in one line."""
    if node.op_type in OWN_FOLDS:
        return OWN_FOLDS[node.op_type](node, feeds)
    try:
        return _reference_evaluate(node, opset_import, feeds)
    except Exception as exc:      # noqa: BLE001 - the evaluator raises many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MCUGenError(f"node '{display_name(node.name or node.output[0])}' ({node.op_type}): "
                          f"folding it to a constant failed: {display_name(first, 120)}") from None


def _reference_evaluate(node, opset_import, feeds) -> list:
    """The outputs of one node by onnx's reference evaluator."""
    # deferred: onnx.reference takes a second to import; most models have no constant nodes
    from onnx.reference import ReferenceEvaluator
    outputs = [onnx.ValueInfoProto(name=name) for name in node.output]
    graph = helper.make_graph([node], "fold", [], outputs)
    evaluator = ReferenceEvaluator(helper.make_model(graph, opset_imports=opset_import))
    return [np.asarray(v) for v in evaluator.run(None, feeds)]


def _foldable(node, constants, shapes, outputs) -> bool:
    if node.domain not in ("", "ai.onnx") or any(out in outputs for out in node.output):
        return False
    if node.op_type in SHAPE_OF:
        return node.input[0] in shapes or node.input[0] in constants
    return all(name in constants for name in node.input if name)


def _feeds(node, constants, shapes) -> dict:
    """The node's inputs; for Shape/Size of an activation, zeros of its static shape."""
    if node.op_type in SHAPE_OF and node.input[0] not in constants:
        return {node.input[0]: np.zeros(shapes[node.input[0]], dtype=np.float32)}
    return {name: constants[name] for name in node.input if name}


def _fold_round(model, shapes) -> bool:
    """Fold every foldable node of the model, in order, into initializers; whether any was."""
    constants = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    kept, folded = [], False
    for node in model.graph.node:
        if not _foldable(node, constants, shapes, outputs):
            kept.append(node)
            continue
        values = _evaluate(node, model.opset_import, _feeds(node, constants, shapes))
        for name, value in zip(node.output, values):
            if name:
                constants[name] = value
                _add_initializer(model, numpy_helper.from_array(value, name))
        folded = True
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return folded


def _add_initializer(model, tensor) -> None:
    """Before IR version 4 an initializer is only seen (by shape inference too) when it is
    also a graph input."""
    model.graph.initializer.append(tensor)
    if model.ir_version < 4:
        model.graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type,
                                                               list(tensor.dims)))


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every constant subgraph (Shape of static tensors included) folded into
    initializers, and the value_info that shape inference found on the way dropped (the strict
    inference that follows recomputes it)."""
    while True:
        inferred = _infer(model)
        if not _fold_round(model, static_shapes(inferred)):
            return model
