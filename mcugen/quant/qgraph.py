"""Quantize a float Graph: weight codes per MAC layer, an Encoding per activation tensor.

Policy (DESIGN section 1 and its measurements): the network input is uniform 8-bit; with
first_last_bits=8 the first and last MAC layers keep 8-bit weights and the last layer reads
8-bit activations; every other tensor uses the scheme's grid at abits. Ops that only move codes
(MaxPool, Reshape, Transpose) share their input's encoding.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from mcugen.errors import MCUGenError
from mcugen.ops import get_op
from mcugen.quant.calibrate import (clipped_ranges, synthetic_inputs, tensor_ranges,
                                    token_calibration, value_subset, with_known_bounds)
from mcugen.quant.lanes import choose_grid, encoded_error, narrow_weights, uniform_twin, weight_lanes
from mcugen.quant.power import (Encoding, Grid, constant_channels, quantize_weights,
                                reconstruction_error)
from mcugen.quant.search import search_exponent
from mcugen.reference.float_ir import run_float


METHODS = ("powerquant", "nupes")


@dataclass
class QuantOptions:
    scheme: str = "power"              # power | uniform | log2
    wbits: int = 8
    abits: int = 8
    exponent: object = "auto"          # "auto" | "per-layer" | float
    first_last_bits: object = 8        # 8 | "same"
    objective: str = "normalized"      # exponent search objective: normalized | sum
    method: str = "powerquant"         # powerquant (data-free) | nupes (data-driven, needs calib)
    calib: np.ndarray | None = None
    percentile: float | None = None
    input_range: tuple | None = None
    seed: int = 0
    lanes: int = 0                     # 8: decoded values fit 8-bit lanes where they can (lanes.py)
    act_grid: str = "auto"             # auto | power | uniform: each activation's grid (lanes.py)
    act_storage: str = "auto"          # levels | codes (auto: codes until the board resolves it,
                                       # pipeline.resolve_act_storage): lanes.stored_encodings


@dataclass
class QWeights:
    codes: np.ndarray
    scale: np.ndarray          # M_c
    grid: Grid
    w_hat: np.ndarray
    recon_error: float
    bias: np.ndarray               # the float bias the lowering realizes (NUPES corrects it)
    constant_channels: int = 0     # channels lowered as their bias alone (power.constant_channels)
    output_error: float | None = None          # NUPES: ||y^ - y|| / ||y|| on the calibration set
    output_error_before: float | None = None   # the same for PowerQuant's rounding


@dataclass
class QGraph:
    graph: object
    encodings: dict
    weights: dict
    exponent: float
    input_range: tuple
    options: QuantOptions
    notes: list = field(default_factory=list)
    grid_choices: dict = field(default_factory=dict)   # activation root -> lanes.GridChoice


def mac_nodes(graph):
    return [n for n in graph.nodes if getattr(get_op(n.op), "is_mac", False)]


def code_root(graph, tensor):
    """Follow ops that only move codes back to the tensor that owns the encoding."""
    producer = graph.producer(tensor)
    while producer is not None and getattr(get_op(producer.op), "preserves_codes", False):
        tensor = producer.inputs[0]
        producer = graph.producer(tensor)
    return tensor


def output_is_accumulator(graph):
    """The last MAC layer's int32 accumulators reach the output: only code-moving ops that keep
    each value in its channel (its scale) lie between them."""
    tensor = graph.output
    producer = graph.producer(tensor)
    while producer is not None and getattr(get_op(producer.op), "preserves_codes", False):
        if not get_op(producer.op).keeps_channel_scales(producer):
            return False
        producer = graph.producer(producer.inputs[0])
    return producer is not None and getattr(get_op(producer.op), "is_mac", False)


def layer_weight_bits(graph, options):
    macs = mac_nodes(graph)
    if not macs:
        raise MCUGenError("the model has no Conv, Gemm or MatMul layer: nothing to quantize")
    edge = {macs[0].name, macs[-1].name} if options.first_last_bits == 8 else set()
    return {n.name: 8 if n.name in edge else options.wbits for n in macs}


def data_free_exponents(graph, bits, options, progress):
    """(global exponent, per-layer exponent dict)."""
    if options.scheme in ("uniform", "log2"):
        return 1.0, {name: 1.0 for name in bits}
    if options.exponent not in ("auto", "per-layer"):
        a = float(options.exponent)
        return a, {name: a for name in bits}
    layers = [(n.params["weight"], bits[n.name], weight_grid(bits[n.name], 1.0, options).lanes)
              for n in mac_nodes(graph)]
    a = search_exponent(layers, options.objective, progress)
    if options.exponent == "auto":
        return a, {name: a for name in bits}
    return a, {n.name: search_exponent([layer], options.objective)
               for n, layer in zip(mac_nodes(graph), layers)}


def weight_grid(bits, exponent, options) -> Grid:
    """A MAC layer's weight grid: the scheme's, its levels in the lanes where they apply."""
    scheme = weight_scheme(options)
    return Grid(bits, True, exponent, scheme, lanes=weight_lanes(bits, scheme, options.lanes))


def _nonnegative(graph, tensor, input_lo):
    producer = graph.producer(tensor)
    if producer is None:
        return input_lo >= 0
    # lazily: an op that knows from its activation never walks up its inputs
    return get_op(producer.op).output_nonnegative(
        producer, (_nonnegative(graph, t, input_lo) for t in producer.inputs))


def _calibration(graph, options):
    if graph.input_rows:
        return token_calibration(graph, options.calib, options.seed)
    if options.calib is not None:
        samples = options.calib
        input_range = (float(samples.min()), float(samples.max()))
        return samples, input_range, []
    notes = []
    input_range = options.input_range
    if input_range is None:
        input_range = (0.0, 1.0)
        notes.append("no --calib or --input-range given: assumed inputs in [0, 1]")
    return synthetic_inputs(graph.shapes[graph.input], input_range, options.seed), input_range, notes


def quantize_powerquant(graph, options: QuantOptions, progress=None) -> QGraph:
    """PowerQuant: data-free exponents, weights rounded to the grid, activation ranges from
    the calibration samples, a uniform grid's clipped where that lowers the squared error of
    its encoded values on real samples (calibrate.clipped_ranges; mcugen/quant/methods.py
    chooses between PowerQuant and NUPES)."""
    bits = layer_weight_bits(graph, options)
    exponent, layer_exponents = data_free_exponents(graph, bits, options, progress)
    samples, input_range, notes = _calibration(graph, options)
    values = run_float(graph, samples)
    ranges = with_known_bounds(graph, tensor_ranges(values, options.percentile))
    weights = {}
    for node in mac_nodes(graph):
        w, bias = node.params["weight"], node.params["bias"]
        grid = narrow_weights(weight_grid(bits[node.name], layer_exponents[node.name], options),
                              options.lanes, lambda g: reconstruction_error(w, g))
        constant = constant_channels(w, bias, ranges[node.inputs[0]][0])
        codes, scale, w_hat = quantize_weights(w, grid, constant)
        weights[node.name] = QWeights(codes, scale, grid, w_hat, reconstruction_error(w, grid),
                                      bias, int(constant.sum()))

    choices, rng = {}, np.random.default_rng(options.seed)

    def activation_encoding(root, bits, signed, value_range, clip):
        enc = Encoding(bits, signed, exponent, weight_scheme(options), value_range)
        # only on real samples (--calib): inputs drawn over a declared range say nothing of
        # which values are rare; and a --percentile given is the range the user chose
        searched = clip and options.calib is not None and not options.percentile
        search = clipped_ranges if searched else (lambda e: [e])
        sample = value_subset(values[root], rng)[0]
        choices[root] = choose_grid(search(enc), options.lanes, options.act_grid,
                                    lambda e: encoded_error(e, sample), search(uniform_twin(enc)))
        return choices[root].encoding
    encodings = tensor_encodings(graph, ranges, input_range, options, activation_encoding)
    return QGraph(graph, encodings, weights, exponent, tuple(input_range), options, notes,
                  grid_choices=choices)


def weight_scheme(options) -> str:
    return "log2" if options.scheme == "log2" else "power"


def input_encoding(graph, input_range, below, wider) -> Encoding:
    """Uniform 8-bit codes over the input's range; for token ids, one code per id (8-bit when
    the tables have at most 256 rows, else 16-bit)."""
    if graph.input_rows:
        bits = 8 if graph.input_rows <= 256 else 16
        return Encoding(bits, False, 1.0, "power", float((1 << bits) - 1))
    lo, hi = input_range
    return Encoding(8, lo < 0 or below, 1.0, "power", max(abs(lo), abs(hi), wider) or 1.0)


def _fills(node) -> bool:
    """Whether `node` writes values of its own into its input's codes: a constant Pad's fill."""
    return node is not None and node.op == "Pad" and node.attrs["mode"] == "constant" and \
        node.attrs["value"] != 0.0


def tensor_encodings(graph, ranges, input_range, options, activation_encoding) -> dict:
    """An Encoding per tensor: the input uniform 8-bit over its range; every other code root
    gets `activation_encoding(root, bits, signed, range, clip)`, shared by the tensors that only
    move its codes (`clip`: whether its range may be clipped below their largest value); the
    int32 output of a last MAC layer gets none."""
    last_input = code_root(graph, mac_nodes(graph)[-1].inputs[0])
    tensors = [graph.input] + [n.output for n in graph.nodes]
    groups = {}                        # code root -> every tensor sharing its codes
    for tensor in tensors:
        groups.setdefault(code_root(graph, tensor), []).append(tensor)
    encodings = {}
    for root, members in groups.items():
        # a Pad's fill shares its input's codes: the grid must cover it too
        others = members[1:]
        wider = max([ranges[m][0] for m in others], default=0.0)
        below = any(ranges[m][1] < 0 for m in others)
        # a clipped range could cut a Pad's non-zero fill, which every padded pixel then reads
        filled = any(_fills(graph.producer(m)) for m in others)
        if root == graph.input:
            enc = input_encoding(graph, input_range, below, wider)
        else:
            wider = max(wider, ranges[root][0])
            abits = 8 if (root == last_input and options.first_last_bits == 8) else options.abits
            enc = activation_encoding(root, abits, below or not _nonnegative(graph, root, input_range[0]),
                                      wider, not filled)
        for member in members:
            encodings[member] = enc
    if output_is_accumulator(graph):        # the last layer hands int32 accumulators over
        out_root = code_root(graph, graph.output)
        for tensor in [t for t in encodings if code_root(graph, t) == out_root]:
            del encodings[tensor]
    return encodings


def simulated_run(qgraph, x):
    """The float model with dequantized weights and activations (simulated quantization)."""
    graph = copy.copy(qgraph.graph)
    graph.nodes = []
    for node in qgraph.graph.nodes:
        node = copy.copy(node)
        if node.name in qgraph.weights:
            qw = qgraph.weights[node.name]
            node.params = dict(node.params, weight=qw.w_hat, bias=qw.bias)
        graph.nodes.append(node)

    def hook(tensor, value):
        enc = qgraph.encodings.get(tensor)
        return enc.decode(enc.encode(value)) if enc is not None else value
    return run_float(graph, np.asarray(x, dtype=np.float64), hook)[graph.output]
