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
    into one node named after its output; returns the new list, without dead nodes."""
    nodes = live_nodes(nodes, ctx.graph_outputs)
    while True:
        fused = _fuse_one(nodes, ctx)
        if fused is None:
            return nodes
        nodes = fused
