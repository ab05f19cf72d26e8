"""Position ids computed from the token ids (RoBERTa, XLM-R, CamemBERT: transformers'
create_position_ids_from_input_ids): a padding token takes the padding row, the others count up
from it, pos_t = pad + #{s <= t : id_s != pad} where id_t != pad, else pad.

The exporters write it as Equal, Not, Cast, CumSum, Mul and Add, with Casts and their order
differing by exporter and version. Matching those ops would break with the next exporter, so
the subgraph from the ids to the indices of a constant table's Gather is run (node by node, as
the constant folder runs them) on probe sequences and compared with the rule, for each integer
constant of the subgraph as the padding id. Where every probe agrees, the Gather reads the ids themselves with
the padding id as an attribute (ops/embedding.py: a position lookup, still no arithmetic on
values) and the subgraph goes. Anything else stays, and is refused where it is mapped.
"""
from __future__ import annotations

import numpy as np
from onnx import helper

from mcugen.frontend.fold import _evaluate
from mcugen.frontend.patterns import live_nodes
from mcugen.ops.embedding import PAD_ATTR, position_rows

PROBES = 24                         # sequences, with pads at random places, all-pad and none


def computed_from_ids(nodes, ctx) -> set:
    """The tensors computed from an integer input (empty for a float input)."""
    derived = {ctx.input_name} if ctx.input_is_integer else set()
    for node in nodes:
        if derived & set(node.input):
            derived.update(name for name in node.output if name)
    return derived - {ctx.input_name}


def position_lookups(nodes, ctx) -> list:
    """The nodes, each Gather of a constant table by the rule's indices reading the ids instead
    (PAD_ATTR set), each by indices that come out the same for every probe (RoBERTa's token
    types: zeros gathered at the positions) folded into its constant rows, and the subgraphs
    that computed those indices left out."""
    if not ctx.input_is_integer:
        return nodes
    changed = True
    while changed:
        changed = False
        derived = computed_from_ids(nodes, ctx)
        for gather in [n for n in nodes if n.op_type == "Gather" and n.input[1] in derived
                       and ctx.const(n.input[0]) is not None]:
            rewritten = _rewrite(nodes, gather, ctx)
            if rewritten is not None:
                nodes, changed = rewritten, True
                break
    return nodes


def _rewrite(nodes, gather, ctx):
    """`nodes` with `gather` rewritten (a position lookup, or its constant rows), or None."""
    sub = _subgraph(nodes, gather.input[1], ctx)
    found = None if sub is None else _indices_rule(sub, gather.input[1], ctx)
    if found is None:
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in gather.attribute}
    kind, value = found
    if kind == "constant":
        table = np.asarray(ctx.const(gather.input[0]))
        ctx.constants[gather.output[0]] = np.take(table, value, axis=int(attrs.get("axis", 0)))
        return live_nodes([n for n in nodes if n is not gather], ctx.graph_outputs)
    rewritten = helper.make_node("Gather", [gather.input[0], ctx.input_name], list(gather.output),
                                 name=gather.name, **attrs, **{PAD_ATTR: value})
    return live_nodes([rewritten if n is gather else n for n in nodes], ctx.graph_outputs)


def _subgraph(nodes, tensor, ctx):
    """The nodes computing `tensor` from the ids and constants alone (in graph order), or None
    when it reads anything else."""
    producers = {out: n for n in nodes for out in n.output}
    wanted, stack = set(), [tensor]
    while stack:
        name = stack.pop()
        if name == ctx.input_name or not name or ctx.const(name) is not None:
            continue
        node = producers.get(name)
        if node is None:
            return None
        if id(node) not in wanted:
            wanted.add(id(node))
            stack.extend(node.input)
    return [n for n in nodes if id(n) in wanted]


def _indices_rule(sub, tensor, ctx):
    """What `sub` computes on the probes: ("constant", indices) when every probe gives the same
    indices; ("positions", pad) for the integer constant of `sub` for which every probe follows
    the rule; else None."""
    candidates = sorted({int(v) for n in sub for name in n.input
                         for v in _integer_scalar(ctx.const(name))})
    shape = ctx.shape(ctx.input_name)
    try:
        run = _evaluator(sub, tensor, ctx)
        first, *others = [np.asarray(run(ids)) for ids in _probes(shape, 0)]
        if all(np.array_equal(first, o) for o in others):
            return "constant", first.astype(np.int64)
        for pad in candidates:
            if all(np.array_equal(np.asarray(run(ids)).reshape(ids.shape), position_rows(ids, pad))
                   for ids in _probes(shape, pad)):
                return "positions", pad
    except Exception:                     # noqa: BLE001 - a subgraph the evaluator cannot run
        return None
    return None


def _integer_scalar(value):
    if value is None or np.size(value) != 1:
        return []
    number = float(np.ravel(value)[0])
    return [number] if number == int(number) and number >= 0 else []


def _evaluator(sub, tensor, ctx):
    """ids (the input's shape and type) -> `tensor`, node by node as the constant folder runs
    them (fold._evaluate: onnx's reference evaluator, numpy where it falls short)."""
    graph_input = next(i for i in ctx.model.graph.input if i.name == ctx.input_name)
    dtype = helper.tensor_dtype_to_np_dtype(graph_input.type.tensor_type.elem_type)
    consts = {name: np.asarray(ctx.const(name)) for n in sub for name in n.input
              if name and ctx.const(name) is not None}

    def run(ids):
        values = dict(consts, **{ctx.input_name: ids.astype(dtype)})
        for node in sub:
            values.update(zip(node.output, _evaluate(node, ctx.model.opset_import, values)))
        return values[tensor]
    return run


def _probes(shape, pad) -> list:
    """Id sequences of the input's shape: pads at random places, then all pads and none."""
    rng = np.random.default_rng(pad)
    others = np.array([v for v in range(pad + 8) if v != pad])
    batch = []
    for k in range(PROBES):
        ids = rng.choice(others, size=shape)
        ids[rng.random(shape) < k / PROBES] = pad
        batch.append(ids)
    return batch + [np.full(shape, pad), rng.choice(others, size=shape)]
