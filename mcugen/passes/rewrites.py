"""The rewrites. Each returns True when it changed the graph (run again until it does not)."""
from __future__ import annotations

import numpy as np

from mcugen.ops import get_op
from mcugen.numerics import activation_is_monotone, activation_per_channel



def _sole_reader(graph, node):
    """The producer of node's first input, when node is its only reader and it is no output."""
    producer = graph.producer(node.inputs[0])
    if producer is None or producer.output == graph.output:
        return None
    return producer if len(graph.consumers(producer.output)) == 1 else None


def drop_dead_nodes(graph) -> bool:
    """A node whose result nothing reads (exporters leave some): drop it, so that it neither
    costs a step nor reads a tensor that is handed over unencoded."""
    for node in graph.nodes:
        if node.output != graph.output and not graph.consumers(node.output):
            graph.nodes.remove(node)
            return True
    return False


def sink_reshape(graph) -> bool:
    """Reshape -> per-channel Affine or activation: swap them when the reshape keeps the channel
    axis (as the 1-D views of frontend/lift_1d.py do), or whatever it does for an elementwise
    activation, so the affine can fold into the Conv before it and the activation fuse into it."""
    for node in graph.nodes:
        if node.op not in ("Affine", "Activation"):
            continue
        view = _sole_reader(graph, node)
        if view is None or view.op != "Reshape":
            continue
        before, after = graph.shapes[view.inputs[0]], graph.shapes[view.output]
        elementwise = node.op == "Activation" and not activation_per_channel(node.attrs["activation"])
        if not elementwise and (len(before) < 2 or len(after) < 2 or before[1] != after[1]):
            continue
        moved = f"{node.output}/before_reshape"
        graph.shapes[moved] = before
        node.inputs, node.output, view.inputs, view.output = \
            [view.inputs[0]], moved, [moved], node.output
        graph.toposort()
        return True
    return False


def sink_transpose(graph) -> bool:
    """Transpose -> elementwise activation: swap them (the same function on every element, so
    before or after a move is one), so that the activation can fuse into the MAC layer before
    the transpose (a token Linear's 1x1 Conv, ops/gemm.py)."""
    for node in graph.nodes:
        if node.op != "Activation" or activation_per_channel(node.attrs["activation"]):
            continue
        move = _sole_reader(graph, node)
        if move is None or move.op != "Transpose":
            continue
        moved = f"{node.output}/before_transpose"
        graph.shapes[moved] = graph.shapes[move.inputs[0]]
        node.inputs, node.output, move.inputs, move.output = \
            [move.inputs[0]], moved, [moved], node.output
        graph.toposort()
        return True
    return False


def cancel_transposes(graph) -> bool:
    """Two Transposes that undo each other, with only free Reshapes between that end where they
    began (a token Linear's way back, then the next one's way in): the whole chain becomes one
    free Reshape."""
    for node in graph.nodes:
        if node.op != "Transpose":
            continue
        chain, first = [], _sole_reader(graph, node)
        while first is not None and first.op == "Reshape":
            chain.append(first)
            first = _sole_reader(graph, first)
        if first is None or first.op != "Transpose" or \
                graph.shapes[first.output] != graph.shapes[node.inputs[0]]:
            continue
        if [first.attrs["perm"][p] for p in node.attrs["perm"]] != list(range(len(node.attrs["perm"]))):
            continue
        for dropped in chain + [first]:
            graph.nodes.remove(dropped)
        node.inputs = list(first.inputs)
        node.op, node.attrs = "Reshape", {"shape": list(graph.shapes[node.output])}
        return True
    return False


def sink_activations(graph) -> bool:
    """sink_reshape, then sink_transpose, until an activation has moved past every view."""
    return sink_reshape(graph) or sink_transpose(graph)


def fold_affine(graph) -> bool:
    """Affine (BatchNorm, Mul/Add by constants) after a Conv/Gemm -> into its weight and bias;
    after another Affine (a GroupNorm export's Mul and Add) -> into it: one recode table, one
    rounding, instead of two."""
    for node in graph.nodes:
        if node.op != "Affine":
            continue
        producer = _sole_reader(graph, node)
        if producer is None or producer.attrs.get("activation"):
            continue
        if producer.op == "Affine":
            factor, offset = "scale", "shift"
        elif get_op(producer.op).is_mac:
            factor, offset = "weight", "bias"
        else:
            continue
        scale, shift = node.params["scale"], node.params["shift"]
        w = producer.params[factor]          # per output channel, along its first axis
        producer.params[factor] = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
        producer.params[offset] = producer.params[offset] * scale + shift
        graph.remove_node(node, producer.output)
        return True
    return False


def fold_pad(graph) -> bool:
    """Zero Pad of H and W -> into the pads of the Conv or AveragePool that alone reads it (an
    average counts the padded zeros, as it would have read them)."""
    for node in graph.nodes:
        if node.op != "Pad":
            continue
        pads = get_op("Pad").spatial_zero_pads(node)
        readers = graph.consumers(node.output)
        if pads is None or len(readers) != 1 or node.output == graph.output:
            continue
        reader = readers[0]
        if reader.op not in ("Conv", "AveragePool") or reader.inputs[0] != node.output:
            continue
        reader.attrs["pads"] = [int(v) for v in np.add(reader.attrs["pads"], pads)]
        if reader.op == "AveragePool":
            reader.attrs["counted"] = [int(v) for v in np.add(reader.attrs["counted"], pads)]
        graph.remove_node(node, node.inputs[0])
        return True
    return False


def drop_noop_transpose(graph) -> bool:
    """A Transpose that only moves size-1 axes keeps memory order: make it a free Reshape."""
    for node in graph.nodes:
        if node.op != "Transpose":
            continue
        shape = graph.shapes[node.inputs[0]]
        moved = [p for p in node.attrs["perm"] if shape[p] != 1]
        if moved == sorted(moved):
            node.op = "Reshape"
            node.attrs = {"shape": [shape[p] for p in node.attrs["perm"]]}
            return True
    return False


def fuse_activation(graph, monotone_only=False) -> bool:
    """An activation after a Conv/Gemm/Add/Affine -> the producer's encoder (any function: the
    encoders in lower/encoders realize non-monotone ones with a table; with monotone_only, a
    non-monotone one stays a code-to-code table). A per-channel PRelu fuses only into a
    Conv/Gemm, whose encoder rows are its output channels."""
    for node in graph.nodes:
        if node.op != "Activation":
            continue
        if monotone_only and not activation_is_monotone(node.attrs["activation"]):
            continue
        producer = _sole_reader(graph, node)
        if producer is None or producer.attrs.get("activation"):
            continue
        takes = get_op(producer.op).fuses_activation
        if not takes or (activation_per_channel(node.attrs["activation"]) and takes != "per_channel"):
            continue
        producer.attrs["activation"] = node.attrs["activation"]
        out = node.output
        graph.remove_node(node, producer.output)
        # keep the activation's tensor name: shapes and messages refer to it
        _rename(graph, producer.output, out)
        return True
    return False


def _rename(graph, old, new):
    for n in graph.nodes:
        n.inputs = [new if t == old else t for t in n.inputs]
        if n.output == old:
            n.output = new
    if graph.output == old:
        graph.output = new
