"""Activation subgraphs exporters write instead of one op -> one node each, before nodes are
mapped, so that each becomes a single activation (a table or an encoder) rather than a chain
of elementwise ops mcugen cannot quantize one by one:

- SiLU: x * Sigmoid(x)                          -> SiLU(x)
- Mish: x * Tanh(Softplus(x))                   -> Mish(x)
- HardSwish: x * HardSigmoid(x), alpha 1/6, beta 1/2 -> HardSwish(x)
- GELU: x * 0.5 * (1 + Erf(x / sqrt 2))         -> Gelu(x, approximate="none")
        (the division may be a Mul by 1/sqrt 2)
- GELU, tanh approximation:
        x * 0.5 * (1 + Tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))  -> Gelu(x, approximate="tanh")
        (the cube a Pow(x, 3) or two Muls)

and two normalizations (frontend of ops/layernorm.py), the forms TorchScript writes before
opset 17 and T5 and Llama write at any opset:

- LayerNorm: d = x - ReduceMean(x), (d or a second x - ReduceMean(x)) / Sqrt(ReduceMean(d^2) + eps)
        [* gamma] [+ beta]   -> LayerNormalization(x, gamma, beta, axis, epsilon)
        (both means over the same trailing axes, keepdims; d^2 a Pow(d, 2) or Mul(d, d); the
        division may be a Mul by Reciprocal; gamma and beta constants along those axes)
- RMSNorm: x / Sqrt(ReduceMean(x^2) + eps) [* gamma] [+ beta]
        -> RMSNormalization(x, gamma, beta, axis, epsilon) (the opset-23 op, plus a bias)

Commutative operands may come in either order, and the two outer Muls of a GELU in any
grouping. A match needs every intermediate tensor read only inside the pattern (and no graph
output); anything else is left as it is. Runs on the shape-inferred, constant-folded node list.
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
from onnx import helper

# constants match to this relative tolerance: exporters write them as float32
RELATIVE_TOLERANCE = 1e-6
GELU_CUBIC = 0.044715


class _GraphView:
    """Who produces and how many nodes read each tensor of the node list."""

    def __init__(self, nodes, ctx):
        self.ctx = ctx
        self.producers = {out: node for node in nodes for out in node.output if out}
        self.readers = Counter(name for node in nodes for name in node.input if name)
        self.consumers = {}                 # tensor -> the nodes reading it (LayerNorm's checks)
        for node in nodes:
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)

    def made_by(self, tensor, op_type):
        """The node of type op_type (default domain) making `tensor`, when the tensor is private:
        read by one node only and not a graph output."""
        node = self.producers.get(tensor)
        if node is None or node.op_type != op_type or node.domain not in ("", "ai.onnx"):
            return None
        if self.readers[tensor] != 1 or self.ctx.is_graph_output(tensor):
            return None
        return node

    def is_scalar(self, tensor, value):
        """A constant holding one number close to value."""
        const = self.ctx.const(tensor)
        if const is None or const.size != 1 or const.dtype.kind not in "fiu":
            return False
        number = float(np.asarray(const, dtype=np.float64).reshape(-1)[0])
        return math.isclose(number, value, rel_tol=RELATIVE_TOLERANCE)


def _split(node, view, value):
    """A binary node with one operand the constant `value` -> the other operand, else None."""
    if len(node.input) != 2:
        return None
    for i in (0, 1):
        if view.is_scalar(node.input[i], value) and view.ctx.const(node.input[1 - i]) is None:
            return node.input[1 - i]
    return None


def _one_plus(tensor, view, op_type):
    """tensor = 1 + op_type(u) (Add in either order) -> (u, [nodes]), else None."""
    add = view.made_by(tensor, "Add")
    if add is None:
        return None
    inner = _split(add, view, 1.0)
    gate = view.made_by(inner, op_type) if inner else None
    return (gate.input[0], [add, gate]) if gate is not None else None


def _erf_bracket(tensor, view):
    """tensor = 1 + Erf(x / sqrt 2) -> (x, [nodes]), else None."""
    found = _one_plus(tensor, view, "Erf")
    if found is None:
        return None
    scaled, nodes = found
    div, mul = view.made_by(scaled, "Div"), view.made_by(scaled, "Mul")
    if div is not None and len(div.input) == 2 and view.is_scalar(div.input[1], math.sqrt(2.0)):
        return div.input[0], nodes + [div]
    x = _split(mul, view, math.sqrt(0.5)) if mul is not None else None
    return (x, nodes + [mul]) if x else None


def _cube_of(tensor, view):
    """tensor = x^3, as Pow(x, 3) or x * (x * x) in any grouping -> (x, [nodes]), else None."""
    power = view.made_by(tensor, "Pow")
    if power is not None:
        ok = len(power.input) == 2 and view.is_scalar(power.input[1], 3.0)
        return (power.input[0], [power]) if ok else None
    outer = view.made_by(tensor, "Mul")
    if outer is None or len(outer.input) != 2:
        return None
    for i in (0, 1):
        square = view.made_by(outer.input[i], "Mul")
        x = outer.input[1 - i]
        if square is not None and list(square.input) == [x, x]:
            return x, [outer, square]
    return None


def _tanh_bracket(tensor, view):
    """tensor = 1 + Tanh(sqrt(2/pi) * (x + 0.044715 * x^3)) -> (x, [nodes]), else None."""
    found = _one_plus(tensor, view, "Tanh")
    scale = view.made_by(found[0], "Mul") if found else None
    inner = _split(scale, view, math.sqrt(2.0 / math.pi)) if scale is not None else None
    add = view.made_by(inner, "Add") if inner else None
    if add is None or len(add.input) != 2:
        return None
    for i in (0, 1):
        term = view.made_by(add.input[i], "Mul")
        cube = _split(term, view, GELU_CUBIC) if term is not None else None
        x = add.input[1 - i]
        cubed = _cube_of(cube, view) if cube else None
        if cubed is not None and cubed[0] == x:
            return x, found[1] + [scale, add, term] + cubed[1]
    return None


def _gelu(last, view, bracket):
    """last = the product x * 0.5 * B as two Muls, B = bracket(x) -> (x, [nodes]), else None."""
    if last.op_type != "Mul" or len(last.input) != 2:
        return None
    for i in (0, 1):
        first = view.made_by(last.input[i], "Mul")
        if first is None or len(first.input) != 2:
            continue
        factors = list(first.input) + [last.input[1 - i]]
        halves = [f for f in factors if view.is_scalar(f, 0.5)]
        if len(halves) != 1:
            continue
        factors.remove(halves[0])
        for a, b in (factors, factors[::-1]):
            found = bracket(a, view)
            if found is not None and found[0] == b:
                return b, [last, first] + found[1]
    return None


def _gated(last, view, chain):
    """last = x * g, g made from x through the op types of `chain` (outermost first), each
    step's input the next -> (x, [nodes]), else None."""
    if last.op_type != "Mul" or len(last.input) != 2:
        return None
    for i in (0, 1):
        x, tensor, nodes = last.input[1 - i], last.input[i], [last]
        for op_type in chain:
            node = view.made_by(tensor, op_type)
            if node is None:
                break
            nodes.append(node)
            tensor = node.input[0]
        else:
            if tensor == x:
                return x, nodes
    return None


def _hard_swish(last, view):
    """last = x * HardSigmoid(x) with HardSwish's alpha 1/6 and beta 1/2 (TorchScript's export
    of Hardswish before opset 14) -> (x, [nodes]), else None."""
    found = _gated(last, view, ("HardSigmoid",))
    if found is None:
        return None
    attrs = view.ctx.attrs(found[1][1])
    if not (math.isclose(float(attrs.get("alpha", 0.2)), 1.0 / 6.0, rel_tol=RELATIVE_TOLERANCE)
            and math.isclose(float(attrs.get("beta", 0.5)), 0.5, rel_tol=RELATIVE_TOLERANCE)):
        return None
    return found


def _made(view, tensor, op_type):
    """The node of type op_type (default domain) making `tensor`, private or not (LayerNorm
    checks privacy on the whole match: its centered value has two readers)."""
    node = view.producers.get(tensor)
    if node is None or node.op_type != op_type or node.domain not in ("", "ai.onnx"):
        return None
    return node


def _trailing_axes(node, view, rank):
    """A ReduceMean keeping its dims over the trailing axes [a, rank) -> a, else None."""
    attrs = view.ctx.attrs(node)
    if not attrs.get("keepdims", 1):
        return None
    axes = attrs.get("axes")
    if len(node.input) > 1 and node.input[1]:
        axes = view.ctx.const(node.input[1])
        if axes is None:
            return None
    if axes is None or np.size(axes) == 0:
        if attrs.get("noop_with_empty_axes", 0):
            return None
        axes = range(rank)
    axes = sorted({int(a) + rank if int(a) < 0 else int(a) for a in np.asarray(list(axes)).reshape(-1)})
    if not axes or axes != list(range(axes[0], rank)):
        return None
    return axes[0]


def _square_of(node, view):
    """node = d^2, as Pow(d, 2) or Mul(d, d) -> d, else None."""
    if node is None or node.domain not in ("", "ai.onnx") or len(node.input) != 2:
        return None
    if node.op_type == "Pow" and view.is_scalar(node.input[1], 2.0):
        return node.input[0]
    if node.op_type == "Mul" and node.input[0] == node.input[1]:
        return node.input[0]
    return None


def _inverse(view, tensor):
    """The node making `tensor` as 1 / s, Reciprocal(s) or Div(1, s) (T5's TorchScript), else None."""
    node = _made(view, tensor, "Reciprocal")
    if node is None:
        node = _made(view, tensor, "Div")
        if node is None or not view.is_scalar(node.input[0], 1.0):
            return None
    return node


def _normalization(node, view):
    """node = (x - mean) / sqrt(var + eps), var the mean of (x - mean)^2, both means over the same
    trailing axes of x -> (x, axis, eps, [nodes], True), or RMSNorm's x / sqrt(mean(x^2) + eps)
    -> (..., False), else None. The division may be a Mul by a Reciprocal; the numerator the
    centered value itself or a second Sub of the same operands."""
    ctx = view.ctx
    if len(node.input) != 2 or node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type == "Div":
        numerator, std, nodes = node.input[0], node.input[1], [node]
    elif node.op_type == "Mul":
        inverses = [(i, _inverse(view, node.input[i])) for i in (0, 1)]
        found = [(i, inv) for i, inv in inverses if inv is not None]
        if not found:
            return None
        i, inverse = found[0]
        numerator, std, nodes = node.input[1 - i], inverse.input[-1], [node, inverse]
    else:
        return None
    sqrt = _made(view, std, "Sqrt")
    add = _made(view, sqrt.input[0], "Add") if sqrt is not None else None
    if add is None or len(add.input) != 2:
        return None
    var = eps = None
    for i in (0, 1):
        value = ctx.const(add.input[i])
        if value is not None and value.size == 1 and value.dtype.kind == "f" and ctx.const(add.input[1 - i]) is None:
            eps, var = float(np.asarray(value).reshape(-1)[0]), add.input[1 - i]
    second = _made(view, var, "ReduceMean") if var is not None else None
    square = view.producers.get(second.input[0]) if second is not None else None
    centered = _square_of(square, view)
    sub = _made(view, centered, "Sub") if centered is not None else None
    if sub is None and centered is not None and numerator == centered:
        return _root_mean_square(centered, second, view, eps, nodes + [sqrt, add, second, square])
    if sub is None or len(sub.input) != 2:
        return None
    x, mean = sub.input
    first = _made(view, mean, "ReduceMean")
    shape = ctx.shapes.get(x)
    if first is None or first.input[0] != x or ctx.const(x) is not None or shape is None:
        return None
    axis = _trailing_axes(first, view, len(shape))
    if axis is None or _trailing_axes(second, view, len(shape)) != axis:
        return None
    nodes += [sqrt, add, second, square, sub, first]
    if numerator != centered:
        again = _made(view, numerator, "Sub")
        if again is None or list(again.input) != [x, mean]:
            return None
        nodes.append(again)
    return x, axis, eps, nodes, True


def _root_mean_square(x, mean_square, view, eps, nodes):
    """The RMSNorm form x / sqrt(mean(x^2) + eps) (T5, Llama) -> (x, axis, eps, nodes, False)."""
    shape = view.ctx.shapes.get(x)
    if view.ctx.const(x) is not None or shape is None:
        return None
    axis = _trailing_axes(mean_square, view, len(shape))
    return None if axis is None else (x, axis, eps, nodes, False)


def _along(value, shape, axis):
    """A constant multiplied or added after the normalization -> its values over the normalized
    axes shape[axis:], when it is constant along the others, else None."""
    value = np.asarray(value)
    if value.dtype.kind not in "fiu":
        return None
    while value.ndim > len(shape) - axis and value.shape[0] == 1:
        value = value.reshape(value.shape[1:])
    if value.ndim > len(shape) - axis:
        return None
    try:
        return np.array(np.broadcast_to(value, tuple(shape[axis:])), dtype=np.float32)
    except ValueError:
        return None


def _affine_after(tensor, view, op_type, shape, axis):
    """The sole reader of `tensor`, an op_type with a constant operand along the normalized
    axes -> (its values, the node), else None."""
    readers = view.consumers.get(tensor, [])
    if len(readers) != 1 or view.ctx.is_graph_output(tensor):
        return None
    node = readers[0]
    if node.op_type != op_type or node.domain not in ("", "ai.onnx") or len(node.input) != 2:
        return None
    for i in (0, 1):
        if node.input[1 - i] == tensor and view.ctx.const(node.input[i]) is not None:
            value = _along(view.ctx.const(node.input[i]), shape, axis)
            return (value, node) if value is not None else None
    return None


def _layer_norm(node, view):
    """node = the normalization of a decomposed LayerNorm (or RMSNorm), then its Mul(gamma) and
    Add(beta) when they follow -> (op type, inputs, output, attrs, [nodes]) of one
    LayerNormalization (RMSNormalization, with the bias a third input), else None.
    Every tensor made inside the match is read only inside it and is no graph output."""
    found = _normalization(node, view)
    if found is None:
        return None
    x, axis, eps, matched, centered = found
    ctx = view.ctx
    shape = tuple(ctx.shapes[x])
    out, gamma, beta = node.output[0], np.ones(shape[axis:], np.float32), np.zeros(shape[axis:], np.float32)
    scaled = _affine_after(out, view, "Mul", shape, axis)
    if scaled is not None:
        gamma, last = scaled
        matched.append(last)
        out = last.output[0]
    shifted = _affine_after(out, view, "Add", shape, axis)
    if shifted is not None:
        beta, last = shifted
        matched.append(last)
        out = last.output[0]
    ids = {id(n) for n in matched}
    for made in matched:
        for tensor in made.output:
            if tensor != out and (ctx.is_graph_output(tensor) or
                                  any(id(r) not in ids for r in view.consumers.get(tensor, []))):
                return None
    if tuple(ctx.shapes.get(out, ())) != shape:
        return None
    names = []
    for what, value in (("scale", gamma), ("bias", beta)):
        name, k = f"{out}/layernorm_{what}", 1
        while name in ctx.constants:
            k += 1
            name = f"{out}/layernorm_{what}#{k}"
        ctx.constants[name] = value
        names.append(name)
    op_type = "LayerNormalization" if centered else "RMSNormalization"
    return op_type, [x] + names, out, {"axis": axis, "epsilon": eps}, matched


PATTERNS = [
    ("Gelu", {"approximate": "none"}, lambda node, view: _gelu(node, view, _erf_bracket)),
    ("Gelu", {"approximate": "tanh"}, lambda node, view: _gelu(node, view, _tanh_bracket)),
    ("Mish", {}, lambda node, view: _gated(node, view, ("Tanh", "Softplus"))),
    ("SiLU", {}, lambda node, view: _gated(node, view, ("Sigmoid",))),
    ("HardSwish", {}, _hard_swish),
]


def _fuse_one(nodes, ctx):
    """The node list with the first match replaced by one node, or None when nothing matches."""
    view = _GraphView(nodes, ctx)
    for index, node in enumerate(nodes):
        for op_type, attrs, match in PATTERNS:
            found = match(node, view)
            if found is None:
                continue
            x, matched = found
            out = node.output[0]
            if ctx.shapes.get(x) != ctx.shapes.get(out):     # a constant of higher rank broadcast
                continue
            fused = helper.make_node(op_type, [x], [out], name=out, **attrs)
            dropped = {id(n) for n in matched}
            before = [n for n in nodes[:index] if id(n) not in dropped]
            return before + [fused] + [n for n in nodes[index + 1:] if id(n) not in dropped]
        found = _layer_norm(node, view)
        if found is not None:
            op_type, inputs, out, attrs, matched = found
            fused = helper.make_node(op_type, inputs, [out], name=out, **attrs)
            dropped = {id(n) for n in matched}
            before = [n for n in nodes[:index] if id(n) not in dropped]
            return before + [fused] + [n for n in nodes[index + 1:] if id(n) not in dropped]
    return None


def live_nodes(nodes, outputs):
    """The nodes whose results reach a graph output (the IR drops the others anyway): a dead
    reader of a pattern's inner tensor must not keep the pattern from fusing."""
    needed, live = set(outputs), []
    for node in reversed(nodes):
        if any(out in needed for out in node.output):
            live.append(node)
            needed.update(name for name in node.input if name)
    return live[::-1]


def fuse_activation_patterns(nodes, ctx):
    """Rewrite every SiLU, Mish, HardSwish and GELU subgraph of `nodes` (topologically ordered NodeProtos)
    into one node named after its output, and every decomposed LayerNorm into a LayerNormalization;
    returns the new list, without dead nodes."""
    nodes = live_nodes(nodes, ctx.graph_outputs)
    while True:
        fused = _fuse_one(nodes, ctx)
        if fused is None:
            return nodes
        nodes = fused
