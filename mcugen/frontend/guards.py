"""NaN guards exporters put around a softmax: Where(IsNaN(p), c, p) keeps p wherever it is a
number. In the integer realization nothing is ever NaN (codes are integers; the float model's
softmax of finite values is finite too), so the guard is the identity and is dropped before
the nodes are mapped (torch's dynamo exporter writes one after every sdpa softmax)."""
from __future__ import annotations

from collections import Counter

from onnx import helper


def drop_nan_guards(nodes, ctx) -> list:
    """Every Where(IsNaN(p), constant, p) whose IsNaN only it reads becomes Identity(p)."""
    producers = {out: node for node in nodes for out in node.output if out}
    readers = Counter(name for node in nodes for name in node.input if name)
    replaced, dropped = {}, set()
    for where in nodes:
        if where.op_type != "Where" or len(where.input) != 3:
            continue
        test = producers.get(where.input[0])
        if test is None or test.op_type != "IsNaN" or readers[where.input[0]] != 1 \
                or ctx.is_graph_output(where.input[0]):
            continue
        if test.input[0] != where.input[2] or ctx.const(where.input[1]) is None:
            continue
        replaced[id(where)] = helper.make_node("Identity", [where.input[2]], list(where.output),
                                               name=where.name)
        dropped.add(id(test))
    return [replaced.get(id(node), node) for node in nodes if id(node) not in dropped]
