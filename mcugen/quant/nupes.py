"""NUPES: data-driven power quantization (Yvinec et al. 2023; DESIGN section 1).

Layer by layer in graph order, each MAC layer is fed what the already-quantized layers before it
produce on the calibration samples (simulated quantization), and its exponent, per-channel
scales and the rounding of every weight are chosen to minimize its output error against the
float layer fed the float inputs:

    E(V) = || X_q V^T + b' - (X_f W^T + b) ||^2      (the linear output, before the activation)

- One pass over the data per layer (mcugen/quant/layer_stats.py) gathers X_q^T X_q, X_q^T X_f,
  X_f^T X_f and the column means, per group of a grouped conv; E of any V is then closed form.
- Rounding: GPTQ's error feedback (mcugen/quant/gptq.py) on the power grid, aimed at the float
  weights that best map the quantized inputs onto the float outputs.
- The exponent is searched per layer on E (a coarse grid, then finer steps around the best);
  the per-channel scales are clipped where that lowers the (input-weighted) weight error.
- Bias correction: the mean output error of every channel is taken out of its bias.
- Activations: per tensor, the range (a clipping factor of the observed maximum) and, on
  grids under FINE_BITS, the exponent that minimize the squared error of the encoded values on
  the samples, weighted by how much the reading layers' weights amplify each channel.
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np

from mcugen.ops import get_op
from mcugen.quant.calibrate import CLIP_RANGE, tensor_ranges, value_subset, with_known_bounds
from mcugen.quant.gptq import (grouped, gptq_codes, inverse_factor, least_squares_target,
                               row_scales, ungrouped)
from mcugen.quant.layer_stats import layer_stats
from mcugen.quant.lanes import GridChoice, choose_grid, encoded_error, narrow_weights
from mcugen.quant.power import Encoding, constant_channels, quantize_weights, relative_error
from mcugen.quant.qgraph import (QGraph, QWeights, data_free_exponents, layer_weight_bits,
                                 mac_nodes, tensor_encodings, weight_grid, weight_scheme)
from mcugen.reference.float_ir import run_float

MAX_SAMPLES = 1024           # more adds time, not accuracy (a seeded subset is used)
COARSE = np.round(np.arange(0.40, 1.2001, 0.10), 4)     # exponents tried first
REFINE = (0.05, 0.025)       # then the best +- these steps, in turn
ACTIVATION_EXPONENTS = np.round(np.arange(0.40, 1.2001, 0.05), 4)
FINE_BITS = 7                # activation grids this fine keep the data-free exponent


def quantize_nupes(graph, options, progress=None) -> QGraph:
    samples = options.calib
    rng = np.random.default_rng(options.seed)
    if len(samples) > MAX_SAMPLES:
        samples = samples[np.sort(rng.choice(len(samples), MAX_SAMPLES, replace=False))]
    bits = layer_weight_bits(graph, options)
    data_free, _ = data_free_exponents(graph, bits, dataclasses.replace(options, exponent="auto")
                                       if options.exponent == "per-layer" else options, None)
    input_range = (float(samples.min()), float(samples.max()))
    float_values = run_float(graph, samples)
    ranges = with_known_bounds(graph, tensor_ranges(float_values, None))

    choices = {}

    def activation_encoding(root, abits, signed, value_range, clip):
        choices[root] = fit_activation(float_values[root], consumer_weights(graph, root), abits,
                                       signed, value_range, data_free, options, rng, clip)
        return choices[root].encoding
    encodings = tensor_encodings(graph, ranges, input_range, options, activation_encoding)
    weights = _quantize_layers(graph, options, bits, data_free, encodings, float_values,
                               samples, progress)
    notes = [f"NUPES on {len(samples)} calibration samples (seed {options.seed})"]
    layer_exponents = [qw.grid.exponent for qw in weights.values()]
    return QGraph(graph, encodings, weights, float(np.median(layer_exponents)),
                  input_range, options, notes, grid_choices=choices)


def _quantize_layers(graph, options, bits, data_free, encodings, float_values, samples, progress):
    """Each MAC layer in order, on the outputs of the quantized layers before it."""
    last_use = {t: i for i, node in enumerate(graph.nodes) for t in node.inputs}
    mac_inputs = {n.inputs[0] for n in mac_nodes(graph)}
    for tensor in [t for t in float_values if t not in mac_inputs]:
        del float_values[tensor]               # only the MAC layers' inputs are read from now on

    def encoded(tensor, value):
        enc = encodings.get(tensor)
        return enc.decode(enc.encode(value)) if enc is not None else value
    values = {graph.input: encoded(graph.input, samples)}
    weights, total = {}, len(mac_nodes(graph))
    for i, node in enumerate(graph.nodes):
        inputs = [values[t] for t in node.inputs]
        if node.name in bits:
            x_range = encodings[node.inputs[0]].range
            qw = quantize_layer(node, inputs[0], float_values[node.inputs[0]], x_range,
                                bits[node.name], data_free, options)
            weights[node.name] = qw
            node = copy.copy(node)
            node.params = dict(node.params, weight=qw.w_hat, bias=qw.bias)
            if progress:
                progress(len(weights), total)
        values[node.output] = encoded(node.output, get_op(node.op).run_float(node, inputs))
        for store in (values, float_values):
            for tensor in [t for t in store if last_use.get(t, -1) <= i and t != node.output]:
                del store[tensor]
    return weights


def candidate_exponents(options, data_free):
    """The exponents to try first, and whether to refine around the best: one exponent when the
    scheme or the user fixes it, else a coarse grid and the data-free exponent."""
    if options.scheme != "power" or options.exponent not in ("auto", "per-layer"):
        return [data_free], False
    return list(COARSE) + [data_free], True


def quantize_layer(node, x_q, x_f, x_range, bits, data_free, options) -> QWeights:
    """The layer's weights, scales and bias from its statistics (module docstring)."""
    w, bias = node.params["weight"], node.params["bias"]
    group = node.attrs.get("group", 1)
    stats = layer_stats(node, x_q, x_f)
    constant = constant_channels(w, bias, x_range)
    constant_rows = constant.reshape(group, -1)
    w_float = grouped(np.where(constant.reshape((-1,) + (1,) * (w.ndim - 1)), 0.0, w), group)
    target = least_squares_target(w_float, stats)
    factor = inverse_factor(stats.cqq)
    _, _, w_before = quantize_weights(w, weight_grid(bits, data_free, options), constant)
    error_before = stats.relative_error(grouped(w_before, group), w_float, bias, corrected=False)

    def attempt(exponent):
        grid = weight_grid(bits, exponent, options)
        scale = row_scales(target, grid, stats.input_energy, constant_rows)
        codes = gptq_codes(target, scale, grid, factor)
        codes[constant_rows] = 0
        w_hat = grid.dequantize(codes, scale[:, :, None])
        return stats.relative_error(w_hat, w_float, bias, corrected=True), grid, codes, scale
    error, grid, codes, scale = _search_exponent(attempt, *candidate_exponents(options, data_free))
    tried = {grid.exponent: (error, grid, codes, scale)}

    def error_of(g):                   # narrow_weights asks for the uniform twin's at most once
        if g.exponent not in tried:
            tried[g.exponent] = attempt(g.exponent)
        return tried[g.exponent][0]
    error, grid, codes, scale = tried[narrow_weights(grid, options.lanes, error_of).exponent]
    w_hat = grid.dequantize(codes, scale[:, :, None])
    corrected = bias - ungrouped(stats.mean_error(w_hat, w_float), None)
    w_hat = ungrouped(w_hat, w.shape)
    return QWeights(ungrouped(codes, w.shape), ungrouped(scale, None), grid, w_hat,
                    relative_error(w, w_hat), corrected,
                    int(constant.sum()), float(error), float(error_before))


def _search_exponent(attempt, exponents, refine):
    """The attempt with the least output error over `exponents`, then (refine) over the best's
    neighbours at each REFINE step in turn."""
    tried = {}

    def run(a):
        a = round(float(a), 4)
        if a > 0 and a not in tried:
            tried[a] = attempt(a)

    def best():
        return min(tried, key=lambda a: tried[a][0])
    for a in exponents:
        run(a)
    for step in REFINE if refine else ():
        centre = best()
        run(centre - step)
        run(centre + step)
    return tried[best()]


def consumer_weights(graph, tensor):
    """How much an error in each channel of `tensor` weighs in the layers that read it: the sum
    of the squared weights that read the channel, shaped to broadcast against the tensor; None
    when a reader is not a MAC layer (an Add, a pool: every channel weighs the same there)."""
    total = None
    for node in graph.consumers(tensor):
        if not get_op(node.op).is_mac:
            return None
        w = node.params["weight"]
        group = node.attrs.get("group", 1)
        energy = (w.reshape(group, w.shape[0] // group, w.shape[1], -1) ** 2).sum(axis=(1, 3))
        energy = energy.reshape(-1)                      # (input channels,) in group order
        shape = (1, -1) + (1,) * (len(graph.shapes[tensor]) - 2)
        energy = energy.reshape(shape)
        total = energy if total is None else total + energy
    return total


def fit_activation(values, weights, bits, signed, value_range, data_free, options, rng,
                   clip=True) -> GridChoice:
    """The range (clipped) and exponent of one activation tensor that minimize the squared error
    of its encoded values on the calibration samples, weighted per channel by `weights`
    (consumer_weights; None: every value alike); with lanes, `--act-grid` weighs that against
    the best grid in 8-bit lanes (quant/lanes.py). Grids of FINE_BITS or more keep the
    data-free exponent: their rounding error is small already, and an exponent far below the
    weights' one makes every index encoder's table outgrow 2^16 entries, leaving 255 thresholds
    per channel (docs/nupes.md)."""
    flat, weight = value_subset(values, rng, weights)
    scheme = weight_scheme(options)
    exponents = [data_free]
    if options.scheme == "power" and options.exponent in ("auto", "per-layer") and bits < FINE_BITS:
        exponents = ACTIVATION_EXPONENTS
    candidates = [Encoding(bits, signed, float(exponent), scheme, value_range * float(factor))
                  for exponent in exponents for factor in (CLIP_RANGE if clip else (1.0,))]
    return choose_grid(candidates, options.lanes, options.act_grid,
                       lambda enc: encoded_error(enc, flat, weight))
