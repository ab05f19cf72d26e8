"""Tensors whose batch axis is not first, at batch 1: nn.MultiheadAttention's [T, B, E] layout,
the heads folded into axis 0 by dynamo's sdpa ([B*H, T, D]), a Gemm over 2-D tokens [T, E].

At batch 1 such a tensor holds the same memory as a [1, ...] tensor: its first size-1 axis
moved to the front, or a 1 put in front when it has none (its *canonical shape*; moving a
size-1 axis moves no element). This ONNX-to-ONNX rewrite gives every activation its canonical
shape and rewrites the nodes that touch one whose shape changes: axis attributes mapped,
Reshape/Squeeze/Unsqueeze/Flatten to the canonical output shape, Transpose permutations
recomputed over the canonical axes, constant operands laid out like the output, Gemm written as
MatMul and Add, and a free Reshape wherever an operand's canonical shape is not the one the node
needs. A node it does not know is refused by name. A model whose activations all start with
their batch axis is returned unchanged.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from mcugen.errors import MCUGenError, display_name
from mcugen.frontend.fold import static_shapes
from mcugen.ops.activation import SPECS

# ops whose output is their inputs broadcast against each other, element by element
ELEMENTWISE = set(SPECS) | {"Add", "Sub", "Mul", "Div", "Pow", "Sum", "Max", "Min", "Mean",
                            "Sqrt", "Erf", "Reciprocal", "Neg", "Abs", "Exp", "Log", "Identity",
                            "Dropout", "Cast", "IsNaN", "Where", "Clip", "PRelu"}
RESHAPES = ("Reshape", "Squeeze", "Unsqueeze", "Flatten")
REDUCTIONS = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin")


def canonical_order(shape) -> list:
    """The onnx axis at each canonical position (None: the 1 put in front)."""
    shape = list(shape)
    if 1 in shape:
        first = shape.index(1)
        return [first] + [i for i in range(len(shape)) if i != first]
    return [None] + list(range(len(shape)))


def laid_out(shape, order) -> list:
    """A shape, right-aligned to the rank `order` is over, in that order."""
    aligned = [1] * (len(order) - (order[0] is None) - len(shape)) + list(shape)
    return [1 if i is None else int(aligned[i]) for i in order]


def canonical(shape) -> list:
    return laid_out(shape, canonical_order(shape))


def axis_map(shape) -> dict:
    """onnx axis -> canonical axis."""
    return {i: k for k, i in enumerate(canonical_order(shape)) if i is not None}


def is_canonical(shape) -> bool:
    return len(shape) > 0 and shape[0] == 1


class _Rewrite:
    def __init__(self, model, shapes, activations):
        self.shapes, self.activations = shapes, activations
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.constants = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        self.initializers, self.nodes = [], []

    # -- helpers
    def fail(self, node, message):
        raise MCUGenError(f"node '{display_name(node.name or node.output[0])}' ({node.op_type}): "
                          f"{message}")

    def constant(self, value, name) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        self.constants[name] = np.asarray(value)
        return name

    def reshape(self, src, dst, shape, name):
        shape_name = self.constant(np.array(shape, dtype=np.int64), f"{dst}/batch_first_shape")
        self.nodes.append(helper.make_node("Reshape", [src, shape_name], [dst], name=name))

    def view(self, tensor, shape, node) -> str:
        """`tensor` as `shape` (same elements, same order): itself, or a Reshape of it."""
        if list(shape) == canonical(self.shapes[tensor]):
            return tensor
        viewed = f"{tensor}/as:{node.name or node.output[0]}"
        self.reshape(tensor, viewed, shape, f"{viewed}/reshape")
        return viewed

    def emit(self, node, inputs, outputs=None, **attrs):
        """A copy of the node with new inputs (and outputs), its attributes overridden."""
        kept = [a for a in node.attribute if a.name not in attrs]
        new = helper.make_node(node.op_type, inputs, list(outputs or node.output), name=node.name,
                               domain=node.domain)
        new.attribute.extend(kept)
        for key, value in attrs.items():
            if value is not None:
                new.attribute.append(helper.make_attribute(key, value))
        self.nodes.append(new)

    def settle(self, node, natural, outputs=None):
        """(the names the node writes its `natural` shapes to, the pending (name, output) pairs
        `finish` reshapes to the outputs' canonical shapes where the two differ)."""
        outputs, renamed = list(outputs or node.output), []
        for out, shape in zip(outputs, natural):
            same = not out or list(shape) == canonical(self.shapes[out])
            renamed.append(out if same else f"{out}/natural")
        return renamed, [(r, o) for r, o in zip(renamed, outputs) if r != o]

    def finish(self, pending):
        for natural_name, out in pending:
            self.reshape(natural_name, out, canonical(self.shapes[out]), f"{out}/batch_first")

    def operand(self, name, order, node):
        """An input laid out in the output's canonical order: a constant re-laid (or kept
        when it broadcasts the same), an activation viewed."""
        if not name:
            return name
        shape = self.shapes[name] if name in self.activations else list(self.constants[name].shape)
        target = laid_out(shape, order)
        if name in self.activations:
            return self.view(name, target, node)
        value = self.constants[name]
        if _strip(value.shape) == _strip(target):      # it broadcasts the same way as it is
            return name
        return self.constant(value.reshape(target), f"{name}/as:{node.name or node.output[0]}")

    # -- the nodes
    def rewrite(self, node):
        op = node.op_type
        if op in ELEMENTWISE:
            return self.elementwise(node)
        handler = {"Transpose": self.transpose, "Gather": self.gather, "Split": self.split,
                   "Concat": self.concat, "Slice": self.slice, "MatMul": self.matmul,
                   "Gemm": self.gemm, "Expand": self.expand, "Softmax": self.normalize,
                   "LogSoftmax": self.normalize,
                   "LayerNormalization": self.normalize}.get(op)
        if op in RESHAPES:
            handler = self.reshape_node
        elif op in REDUCTIONS:
            handler = self.reduction
        if handler is None or node.domain not in ("", "ai.onnx"):
            shape = next(self.shapes[t] for t in list(node.input) + list(node.output)
                         if t in self.activations and not is_canonical(self.shapes[t]))
            self.fail(node, f"reads or writes {list(shape)}, whose batch axis is not first; "
                            f"mcugen moves the batch axis to the front through elementwise ops, "
                            f"reshapes, Transpose, Gather, Slice, Split, Concat, Expand, MatMul, "
                            f"Gemm, reductions, Softmax and LayerNormalization only")
        handler(node)

    def elementwise(self, node):
        order = canonical_order(self.shapes[node.output[0]])
        self.emit(node, [self.operand(name, order, node) for name in node.input])

    def expand(self, node):
        """A broadcast: its input laid out like the output, the target shape the output's."""
        y = node.output[0]
        order = canonical_order(self.shapes[y])
        shape = self.constant(np.array(canonical(self.shapes[y]), dtype=np.int64), f"{y}/batch_first_shape")
        self.emit(node, [self.operand(node.input[0], order, node), shape])

    def reshape_node(self, node):
        self.reshape(node.input[0], node.output[0], canonical(self.shapes[node.output[0]]),
                     node.name)

    def transpose(self, node):
        x, y = node.input[0], node.output[0]
        in_shape, out_shape = self.shapes[x], self.shapes[y]
        perm = [a.ints for a in node.attribute if a.name == "perm"]
        perm = list(perm[0]) if perm else list(range(len(in_shape)))[::-1]
        in_map, out_map = axis_map(in_shape), axis_map(out_shape)
        moved = {out_map[j]: in_map[p] for j, p in enumerate(perm) if out_shape[j] != 1}
        ones_out = [k for k in range(len(canonical(out_shape))) if k not in moved]
        ones_in = [k for k in range(len(canonical(in_shape))) if k not in moved.values()]
        moved.update(zip(ones_out, ones_in))
        self.emit(node, [x], perm=[moved[k] for k in range(len(moved))])

    def gather(self, node):
        data, indices = node.input
        if data not in self.activations:            # a table lookup: ops/embedding.py says
            return self.nodes.append(node)
        if indices not in self.constants:
            self.fail(node, "a Gather around a moved batch axis needs an activation indexed by a "
                            "constant")
        in_shape = self.shapes[data]
        axis = _attr(node, "axis", 0) % len(in_shape)
        index = np.asarray(self.constants[indices]).reshape(-1) if self.constants[indices].ndim == 0 \
            else np.asarray(self.constants[indices])
        new_axis, in_c = axis_map(in_shape)[axis], canonical(in_shape)
        if in_shape[axis] == 1 and index.size == 1:     # the one element of a size-1 axis
            return self.reshape(data, node.output[0], canonical(self.shapes[node.output[0]]), node.name)
        index_name = self.constant(index, f"{indices}/as:{node.name or node.output[0]}")
        natural = in_c[:new_axis] + list(index.shape) + in_c[new_axis + 1:]
        outputs, pending = self.settle(node, [natural])
        self.emit(node, [data, index_name], outputs, axis=new_axis)
        self.finish(pending)

    def split(self, node):
        in_shape = self.shapes[node.input[0]]
        axis = _attr(node, "axis", 0) % len(in_shape)
        new_axis, in_c = axis_map(in_shape)[axis], canonical(in_shape)
        natural = [in_c[:new_axis] + [self.shapes[o][axis]] + in_c[new_axis + 1:] if o else None
                   for o in node.output]
        outputs, pending = self.settle(node, natural)
        self.emit(node, list(node.input), outputs, axis=new_axis)
        self.finish(pending)

    def concat(self, node):
        out_shape = self.shapes[node.output[0]]
        order = canonical_order(out_shape)
        axis = _attr(node, "axis", 0) % len(out_shape)
        self.emit(node, [self.operand(name, order, node) for name in node.input],
                  axis=axis_map(out_shape)[axis])

    def slice(self, node):
        x, y = node.input[0], node.output[0]
        in_shape, out_shape = self.shapes[x], self.shapes[y]
        if len(node.input) < 3 or any(n and n not in self.constants for n in node.input[1:]):
            self.fail(node, "a Slice around a moved batch axis needs constant starts, ends, axes "
                            "and steps (opset 10 or later)")
        starts, ends = (np.asarray(self.constants[n]).reshape(-1) for n in node.input[1:3])
        axes = self._optional(node, 3, np.arange(len(starts)))
        steps = self._optional(node, 4, np.ones(len(starts), dtype=np.int64))
        in_map = axis_map(in_shape)
        keep = [i for i, a in enumerate(axes) if in_shape[int(a) % len(in_shape)] != 1]
        if not keep:                                    # slices size-1 axes only: the identity
            return self.reshape(x, y, canonical(out_shape), node.name)
        names = []
        for values, label in ((starts, "starts"), (ends, "ends"), (steps, "steps")):
            names.append(self.constant(np.asarray(values, dtype=np.int64)[keep], f"{y}/{label}"))
        new_axes = [in_map[int(axes[i]) % len(in_shape)] for i in keep]
        names.insert(2, self.constant(np.asarray(new_axes, dtype=np.int64), f"{y}/axes"))
        natural = laid_out(in_shape, canonical_order(in_shape))
        for i in range(len(in_shape)):
            natural[in_map[i]] = out_shape[i]
        outputs, pending = self.settle(node, [natural])
        self.emit(node, [x] + [names[0], names[1], names[2], names[3]], outputs)
        self.finish(pending)

    def _optional(self, node, index, default):
        if len(node.input) > index and node.input[index]:
            return np.asarray(self.constants[node.input[index]]).reshape(-1)
        return default

    def reduction(self, node):
        x, y = node.input[0], node.output[0]
        in_shape = self.shapes[x]
        axes = _attr(node, "axes", None)
        from_input = len(node.input) > 1 and node.input[1]
        if from_input:
            if node.input[1] not in self.constants:
                self.fail(node, "its axes must be a constant")
            axes = list(np.asarray(self.constants[node.input[1]]).reshape(-1))
        if axes is None or len(axes) == 0:
            axes = list(range(len(in_shape)))
        in_map = axis_map(in_shape)
        new_axes = sorted(in_map[int(a) % len(in_shape)] for a in axes if in_shape[int(a) % len(in_shape)] != 1)
        if not new_axes:                                # over size-1 axes only: the identity
            return self.reshape(x, y, canonical(self.shapes[y]), node.name)
        natural = [1 if k in new_axes else d for k, d in enumerate(canonical(in_shape))]
        outputs, pending = self.settle(node, [natural])
        if from_input:
            axes_name = self.constant(np.asarray(new_axes, dtype=np.int64), f"{y}/axes")
            self.emit(node, [x, axes_name], outputs, keepdims=1)
        else:
            self.emit(node, [x], outputs, keepdims=1, axes=new_axes)
        self.finish(pending)

    def normalize(self, node):
        """Softmax (a single axis from opset 13), LogSoftmax, LayerNormalization (every axis
        from `axis` on): the canonical axes holding the same elements."""
        x = node.input[0]
        in_shape = self.shapes[x]
        single = node.op_type != "LayerNormalization" and self.opset >= 13
        axis = _attr(node, "axis", -1 if single or node.op_type == "LayerNormalization" else 1)
        axis %= len(in_shape)
        in_map, in_c = axis_map(in_shape), canonical(in_shape)
        span = [axis] if single else list(range(axis, len(in_shape)))
        real = sorted(in_map[i] for i in span if in_shape[i] != 1)
        if not real:
            self.fail(node, "normalizes over size-1 axes only")
        start = real[0]
        trailing = [k for k in range(start, len(in_c)) if in_c[k] != 1]
        if not single and trailing != real:
            self.fail(node, f"the axes it normalizes over ({list(in_shape)} from axis {axis}) are "
                            f"not the last ones once the batch axis is first")
        inputs = list(node.input)
        if node.op_type == "LayerNormalization":
            inputs = [x] + [self._normalized_param(node, name, in_c[start:]) for name in inputs[1:]]
        self.emit(node, inputs, axis=start)

    def _normalized_param(self, node, name, shape):
        if not name:
            return name
        value = self.constants.get(name)
        if value is None:                 # computed: ops/layernorm.py refuses it by name
            return name
        if value.size != int(np.prod(shape)):
            self.fail(node, "its scale and bias must be constants over the normalized axes")
        return self.constant(value.reshape(shape), f"{name}/as:{node.name}")

    def matmul(self, node):
        """The matrix axes (the last two; the last only when B is a constant matrix, which
        every row meets alike) must stay where they are."""
        out_shape = self.shapes[node.output[0]]
        order = canonical_order(out_shape)
        inputs = list(node.input)
        constant_matrix = inputs[1] in self.constants and self.constants[inputs[1]].ndim == 2
        fixed = 1 if constant_matrix else 2
        if order[0] is not None and order[0] >= len(out_shape) - fixed:
            self.fail(node, f"its output {list(out_shape)} has a size-1 matrix axis where the "
                            f"batch axis would go")
        a = self.operand(inputs[0], order, node)
        b = inputs[1] if constant_matrix else self.operand(inputs[1], order, node)
        self.emit(node, [a, b] + inputs[2:])

    def gemm(self, node):
        a, b = node.input[:2]
        c = node.input[2] if len(node.input) > 2 else ""
        if _attr(node, "transA", 0) or b not in self.constants or (c and c not in self.constants):
            self.fail(node, "a Gemm over tokens needs transA=0 and constant B and C")
        weight = self.constants[b].T if _attr(node, "transB", 0) else self.constants[b]
        y = node.output[0]
        order = canonical_order(self.shapes[y])
        if order[0] == len(self.shapes[y]) - 1:
            self.fail(node, "a Gemm over tokens with one output feature is not supported")
        w_name = self.constant((weight * _attr(node, "alpha", 1.0)).astype(np.float32), f"{b}/as:{node.name}")
        matmul = helper.make_node("MatMul", [self.view(a, laid_out(self.shapes[a], order), node), w_name],
                                  [f"{y}/matmul" if c else y], name=node.name)
        self.nodes.append(matmul)
        if c:
            bias = (self.constants[c] * _attr(node, "beta", 1.0)).astype(np.float32)
            bias_name = self.constant(bias, f"{c}/bias:{node.name}")
            add = helper.make_node("Add", [matmul.output[0], self.operand(bias_name, order, node)],
                                   [y], name=f"{node.name}/bias")
            self.nodes.append(add)


def _strip(shape) -> list:
    """A shape without its leading 1s (how it broadcasts)."""
    shape = [int(d) for d in shape]
    while shape and shape[0] == 1:
        shape = shape[1:]
    return shape


def _attr(node, name, default):
    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def _rewrite_or_explain(rewrite, node, input_name, shapes) -> None:
    """Rewrite the node; when it cannot be and the model's input is sequence-first, say that
    its first axis may be a batch instead."""
    try:
        rewrite.rewrite(node)
    except MCUGenError as exc:
        shape = shapes.get(input_name, [1])
        if is_canonical(shape):
            raise
        raise MCUGenError(f"input '{display_name(input_name)}' is {list(shape)}, read with its "
                          f"batch on a size-1 axis (sequence first); then {exc}; if axis 0 is "
                          f"a batch of {shape[0]}, re-export with batch 1") from None


def _real_input(model):
    initializers = {i.name for i in model.graph.initializer}
    return next(i for i in model.graph.input if i.name not in initializers)


def _input_batch_first(model, shapes) -> None:
    """A sequence-first input declared in its canonical shape (the same memory)."""
    value = _real_input(model)
    shape = shapes.get(value.name)
    if shape is None or is_canonical(shape):
        return
    dims = value.type.tensor_type.shape.dim
    del dims[:]
    for size in canonical(shape):
        dims.add().dim_value = size


def batch_axis_first(model: onnx.ModelProto) -> onnx.ModelProto:
    """The shape-inferred model with every activation's batch axis first (re-inferred when
    anything changed)."""
    shapes = {name: list(shape) for name, shape in static_shapes(model).items()}
    initializers = {i.name for i in model.graph.initializer}
    computed = [i.name for i in model.graph.input] + [o for n in model.graph.node for o in n.output]
    activations = {t for t in computed if t and t not in initializers and t in shapes}
    if all(is_canonical(shapes[t]) for t in activations):
        return model
    rewrite = _Rewrite(model, shapes, activations)
    for node in model.graph.node:
        tensors = [t for t in list(node.input) + list(node.output) if t in activations]
        empty = any(0 in shapes[t] for t in tensors)          # its OpDef refuses it by name
        if empty or all(is_canonical(shapes[t]) for t in tensors):
            rewrite.nodes.append(node)
        else:
            _rewrite_or_explain(rewrite, node, _real_input(model).name, shapes)
    _input_batch_first(model, shapes)
    del model.graph.node[:]
    model.graph.node.extend(rewrite.nodes)
    model.graph.initializer.extend(rewrite.initializers)
    del model.graph.value_info[:]
    for value in model.graph.output:
        value.type.tensor_type.ClearField("shape")
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as exc:       # noqa: BLE001 - a rewrite this module got wrong
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MCUGenError(f"moving the batch axis first failed shape inference: {display_name(first, 160)}") from None
