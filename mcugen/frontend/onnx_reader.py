"""ONNX ModelProto -> float IR Graph, through the op registry.

Checks and normalizes: onnx checker, symbolic batch fixed to 1 (any other dynamic dimension is
an error naming it), constant folding (frontend/fold.py, Shape of static tensors included) and shape inference, NaN/Inf
weights, and every node mapped by its OpDef or rejected by name before anything is written.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from mcugen.errors import MCUGenError, display_name
from mcugen.frontend.batch_axis import batch_axis_first
from mcugen.frontend.fold import fold_constants
from mcugen.frontend.guards import drop_nan_guards
from mcugen.frontend.lift_1d import lift_1d
from mcugen.frontend.masks import split_masks
from mcugen.frontend.linear import fuse_linear_bias
from mcugen.frontend.patterns import fuse_activation_patterns
from mcugen.frontend.positions import computed_from_ids, position_lookups
from mcugen.frontend.spellings import respell
from mcugen.ir.graph import Graph
from mcugen.ops import onnx_op, supported_onnx_ops

INTEGER_TYPES = (onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.INT16,
                 onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.UINT16,
                 onnx.TensorProto.UINT32, onnx.TensorProto.UINT64)


def read_model(path) -> onnx.ModelProto:
    path = Path(path)
    if not path.is_file():
        raise MCUGenError(f"model file '{path}' not found")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf gives many exception types for a bad file
        raise MCUGenError(f"'{path}' is not a readable ONNX model ({type(exc).__name__}); "
                          f"export it again") from None
    if not model.graph.node:
        raise MCUGenError(f"'{path}' holds no graph nodes: is it an ONNX model? export it again")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MCUGenError(f"'{path}' fails the ONNX checker: {display_name(first, 160)}") from None
    return model


def _sequence_first(value) -> bool:
    """An input whose axis 0 is fixed above 1 and another axis is 1 ([T, 1, E]: nn.Transformer
    without batch_first): read with its batch on that axis (frontend/batch_axis.py)."""
    dims = value.type.tensor_type.shape.dim
    return any(d.HasField("dim_value") and d.dim_value == 1 for d in list(dims)[1:])


def _fix_batch(model: onnx.ModelProto) -> None:
    """Fix a symbolic (or zero) batch dimension to 1; any other dynamic dimension is an error."""
    initializers = {i.name for i in model.graph.initializer}
    for value in list(model.graph.input) + list(model.graph.output):
        if value.name in initializers:
            continue
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            dynamic = dim.dim_param or not dim.HasField("dim_value") or dim.dim_value <= 0
            if dynamic and axis == 0:
                dim.Clear()
                dim.dim_value = 1
            elif axis == 0 and dim.dim_value != 1 and value in model.graph.input \
                    and not _sequence_first(value):
                raise MCUGenError(
                    f"input '{display_name(value.name)}' has a fixed batch of {dim.dim_value}; "
                    f"the generated code runs one sample at a time: re-export with batch 1 or "
                    f"a dynamic batch")
            elif dynamic:
                label = dim.dim_param or "?"
                raise MCUGenError(
                    f"'{display_name(value.name)}' has dynamic dimension {axis} ('{display_name(label)}'); "
                    f"only the batch dimension may be dynamic: re-export with a fixed shape")
    for value in model.graph.output:
        if value.name not in initializers:
            value.type.tensor_type.ClearField("shape")
    del model.graph.value_info[:]


class ImportContext:
    """What an OpDef.from_onnx may ask about the model being imported."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.constants = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        self.shapes = {}
        for value in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
            dims = value.type.tensor_type.shape.dim
            if value.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
                self.shapes[value.name] = tuple(int(d.dim_value) for d in dims)
        self.graph_outputs = [o.name for o in model.graph.output]
        initializers = {i.name for i in model.graph.initializer}
        real_input = next(i for i in model.graph.input if i.name not in initializers)
        self.input_name = real_input.name
        self.input_is_integer = real_input.type.tensor_type.elem_type in INTEGER_TYPES
        self.input_rows = None            # set by the embedding lookups the ids index
        self.output_transform = None
        self.output_override = None

    def fail(self, node, message):
        label = display_name(node.name or node.output[0])
        raise MCUGenError(f"node '{label}' ({node.op_type}): {message}")

    def const(self, name):
        return self.constants.get(name) if name else None

    def optional_const(self, node, index):
        if len(node.input) <= index or not node.input[index]:
            return None
        return self.require_const(node, index, f"input {index}")

    def require_const(self, node, index, what):
        value = self.const(node.input[index]) if len(node.input) > index else None
        if value is None:
            self.fail(node, f"its {what} must be a constant (initializer), not computed at run time")
        return value

    def shape(self, name):
        if name not in self.shapes:
            raise MCUGenError(f"the shape of tensor '{display_name(name)}' could not be inferred; "
                              f"re-export the model with static shapes")
        return self.shapes[name]

    def attrs(self, node):
        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def is_graph_output(self, name):
        return name in self.graph_outputs

    def producer(self, name):
        """The node writing tensor `name`, or None (an input or an initializer)."""
        return next((n for n in self.model.graph.node if name in n.output), None)

    def is_read(self, name):
        """A tensor some node or the graph output reads."""
        return name in self.graph_outputs or any(name in n.input for n in self.model.graph.node)

    def set_output_transform(self, kind, new_output):
        self.output_transform = kind
        self.output_override = new_output

    def resolve_pads(self, node, attrs, spatial, kernel, strides, dilations):
        """ONNX pads/auto_pad -> [top, left, bottom, right]."""
        auto = attrs.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto in ("NOTSET", ""):
            pads = [int(p) for p in attrs.get("pads", [0, 0, 0, 0])]
            if len(pads) != 4:
                self.fail(node, "only 2-D windows are supported")
            return pads
        if auto == "VALID":
            return [0, 0, 0, 0]
        begin, end = [], []
        for size, k, s, d in zip(spatial, kernel, strides, dilations):
            out = math.ceil(size / s)
            total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
            small, large = total // 2, total - total // 2
            begin.append(small if auto == "SAME_UPPER" else large)
            end.append(large if auto == "SAME_UPPER" else small)
        return begin + end


def _check_finite(ctx, used):
    for name in used:
        value = ctx.constants.get(name)
        if value is not None and value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            bad = "NaN" if np.isnan(value).any() else "Inf"
            raise MCUGenError(f"weight '{display_name(name)}' contains {bad}: the model is "
                              f"broken (diverged training?); fix or re-export it")


def _unique_node_names(nodes) -> None:
    """Node names are optional and need not be unique in ONNX, but the IR keys weights,
    encodings and messages by them: give an unnamed node its op and output tensor (unique in
    a valid graph) as its name, and number repeats."""
    seen = set()
    for node in nodes:
        name = node.name or f"{node.op_type}->{node.output[0]}"
        unique, n = name, 1
        while unique in seen:
            n += 1
            unique = f"{name}#{n}"
        seen.add(unique)
        node.name = unique


def _check_token_ids(ctx, ir_nodes) -> None:
    """An integer input is token ids: only embedding lookups may read it (and reshapes of it
    that only they read, or nothing: the lookups read through them)."""
    if not ctx.input_is_integer:
        return

    def other_reader(tensor):
        for node in (n for n in ir_nodes if tensor in n.inputs):
            if node.op == "Reshape":
                node = other_reader(node.output)
            if node is not None and node.op != "Embedding":
                return node
        return None
    readers = [n for n in ir_nodes if ctx.input_name in n.inputs]
    other = other_reader(ctx.input_name)
    if other is not None or not readers:
        what = f"node '{display_name(other.name)}' ({other.onnx_op or other.op}) reads it" if other \
            else "nothing reads it"
        raise MCUGenError(f"the model's input '{display_name(ctx.input_name)}' is integer and {what}; "
                          f"supported: float inputs, or token ids that only index embedding tables "
                          f"(Gather from a constant)")


def import_model(model: onnx.ModelProto) -> Graph:
    real_inputs = [i for i in model.graph.input if i.name not in {x.name for x in model.graph.initializer}]
    if len(real_inputs) != 1 or len(model.graph.output) != 1:
        raise MCUGenError(f"the model has {len(real_inputs)} inputs and {len(model.graph.output)} "
                          f"outputs; mcugen supports exactly one of each")
    _fix_batch(model)
    model = fold_constants(model)
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MCUGenError(f"ONNX shape inference failed: {display_name(first, 160)}") from None
    model = lift_1d(batch_axis_first(model))
    ctx = ImportContext(model)
    nodes = split_masks(respell(drop_nan_guards(list(model.graph.node), ctx), ctx), ctx)
    nodes = position_lookups(fuse_linear_bias(fuse_activation_patterns(nodes, ctx), ctx), ctx)
    _check_finite(ctx, {i for n in nodes for i in n.input})
    computed_ids = computed_from_ids(nodes, ctx)
    for node in nodes:
        if node.domain not in ("", "ai.onnx") or onnx_op(node.op_type) is None:
            if node.output[0] in computed_ids:
                ctx.fail(node, "computes from the token ids (a padding mask, or position ids "
                               "other than RoBERTa's rule); mcugen reads ids only as embedding "
                               "indices: export with constant position ids and no mask (pass "
                               "them in the wrapper)")
            ctx.fail(node, f"op not supported; mcugen lowers: {', '.join(supported_onnx_ops())}")
    _unique_node_names(nodes)
    ir_nodes = []
    for node in nodes:
        ir = onnx_op(node.op_type).from_onnx(node, ctx)     # a Node, a list of them, or None
        ir_nodes.extend(ir if isinstance(ir, list) else [ir] if ir is not None else [])
    _check_token_ids(ctx, ir_nodes)
    output = ctx.output_override or model.graph.output[0].name
    graph = Graph(nodes=ir_nodes, input=real_inputs[0].name, output=output,
                  shapes=dict(ctx.shapes), output_transform=ctx.output_transform,
                  input_rows=ctx.input_rows)
    graph.toposort()
    return graph
