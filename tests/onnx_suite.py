"""ONNX's own backend test data as golden data for mcugen.

The installed onnx wheel generates its node test cases (a one-node model, inputs and expected
outputs per case) and ships the "light" zoo models (real architectures with constant weights)
with one expected output each. This module turns them into cases mcugen can take: one float
input, one output, every other test input an initializer. Run it as a script for the summary
of what mcugen does with every case (`python3 tests/onnx_suite.py`).
"""
from __future__ import annotations

import collections
import functools
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mcugen.reference.float_ir import run_float

LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"

# Ops whose integer test cases are pure selection or data movement: the same values as float32
# give the same result (no integer overflow or integer division involved).
SELECTION_OPS = ("Pad", "MaxPool", "Clip")

# Cases whose expected values onnx writes by hand with 4 decimals: compare at that precision.
HAND_ROUNDED = {"test_averagepool_2d_ceil_last_window_starts_on_pad": 1e-4}


@dataclass
class NodeCase:
    name: str                 # the onnx test-case name (plus a suffix for a variant)
    op: str                   # the op type of the node that makes the output
    model: onnx.ModelProto    # one float input, the other test inputs as initializers
    x: np.ndarray
    y: np.ndarray

    @property
    def input_range(self):
        if self.x.size == 0:
            return (0.0, 1.0)
        lo, hi = float(self.x.min()), float(self.x.max())
        return (lo, hi) if hi > lo else (lo - 1.0, hi + 1.0)

    @property
    def tolerance(self):
        return HAND_ROUNDED.get(self.name.split("+")[0], 1e-5)


@functools.lru_cache(maxsize=1)
def _onnx_node_testcases():
    """All node test cases (generated once: collect_testcases fills a module-level list)."""
    from onnx.backend.test.case.node import collect_testcases
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the generators of unrelated ops warn on overflow
        return tuple(tc for tc in collect_testcases() if tc.kind == "node")


def supported_ops():
    from mcugen.ops import supported_onnx_ops
    return set(supported_onnx_ops())


def _exclusion(tc, supported):
    """Why mcugen cannot take this case at all (None when it can)."""
    graph = tc.model.graph
    ops = {n.op_type for n in graph.node} - {"Constant"}
    if ops - supported:
        return "tests ops mcugen does not import"
    if len(graph.output) != 1:
        return "more than one output"
    first = graph.input[0].type
    if not first.HasField("tensor_type"):
        return "the input is a sequence or optional, not a tensor"
    if first.tensor_type.elem_type != TensorProto.FLOAT and not ops <= set(SELECTION_OPS):
        return "integer or non-float32 data"
    if graph.output[0].type.tensor_type.elem_type not in (TensorProto.FLOAT, first.tensor_type.elem_type):
        return "the output is not float data"
    return None


def _output_op(graph):
    out = graph.output[0].name
    return next(n.op_type for n in graph.node if out in n.output)


def _as_single_input(tc) -> NodeCase:
    """Input 0 stays the run-time input; every other test input becomes an initializer (as a
    Conv weight, Pad pads or Clip bounds must be for mcugen). Integer data of a selection op
    becomes float32."""
    model = onnx.ModelProto()
    model.CopyFrom(tc.model)
    inputs, outputs = tc.data_sets[0]
    x, y = np.asarray(inputs[0]), np.asarray(outputs[0])
    name = tc.name
    if x.dtype != np.float32:
        name += "+as_float"
        inputs = [np.asarray(v).astype(np.float32) if np.asarray(v).dtype == x.dtype else v
                  for v in inputs]
        x, y = inputs[0], y.astype(np.float32)
        for value in (model.graph.input[0], model.graph.output[0]):
            value.type.tensor_type.elem_type = TensorProto.FLOAT
    for value, data in zip(list(model.graph.input)[1:], inputs[1:]):
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(data), value.name))
    del model.graph.input[1:]
    return NodeCase(name, _output_op(model.graph), model, x, y)


@functools.lru_cache(maxsize=1)
def node_cases_and_exclusions():
    """(the cases mcugen could take, {excluded case name: reason}) among the node test cases
    that use an op mcugen imports."""
    supported = supported_ops()
    cases, excluded = [], {}
    for tc in _onnx_node_testcases():
        if not any(n.op_type in supported for n in tc.model.graph.node):
            continue
        reason = _exclusion(tc, supported)
        if reason:
            excluded[tc.name] = reason
        else:
            cases.append(_as_single_input(tc))
    return cases, excluded


@functools.lru_cache(maxsize=1)
def node_cases():
    """The cases as onnx writes them, each followed by its per-sample reading when valid."""
    out = []
    for case in node_cases_and_exclusions()[0]:
        out.append(case)
        alone = per_sample(case)
        if alone is not None:
            out.append(alone)
    return tuple(out)


def _ort_per_sample(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 4      # a model it rejects is an expected outcome here
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = model.graph.input[0].name
    return np.concatenate([session.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def per_sample(case: NodeCase) -> NodeCase | None:
    """The case read as a batch of single samples: onnx's cases often lead with a dimension
    of 2 or 3 that is not a batch, where mcugen takes the first axis as the batch. With that
    dimension made symbolic (mcugen fixes it to 1), the case is still onnx's golden data
    exactly when onnxruntime, run on each sample alone, gives the expected output. None when
    it does not (the op mixes samples: a Reshape of the first axis, a Softmax over it, ...)."""
    x, y = case.x, case.y
    if x.ndim < 2 or x.shape[0] == 1 or y.ndim < 2 or y.shape[0] != x.shape[0]:
        return None
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    del model.graph.value_info[:]
    try:
        alone = _ort_per_sample(model, x)
    except Exception:  # onnxruntime rejects the model with a free first axis
        return None
    if alone.shape != y.shape or not np.allclose(alone, y, rtol=1e-5, atol=1e-6):
        return None
    return NodeCase(case.name + "+per_sample", case.op, model, x, y)


def with_identity_conv(case: NodeCase) -> NodeCase | None:
    """The case behind a 1x1 Conv with identity weights (x -> x exactly in float), so a model
    of one non-MAC op has the MAC layer a quantized build needs; inputs of rank 2..3 are
    reshaped to 4-D around it. None for rank 1 or above 4 (no channel axis to carry)."""
    shape = list(case.x.shape)
    if not 2 <= len(shape) <= 4:
        return None
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    graph = model.graph
    src, carried = graph.input[0].name, "identity_conv_out"
    for node in graph.node:
        node.input[:] = [carried if name == src else name for name in node.input]
    shape4 = shape + [1] * (4 - len(shape))
    # 0 in a Reshape shape copies the input's dimension: the first axis may be symbolic
    inits = [numpy_helper.from_array(np.eye(shape[1], dtype=np.float32)[:, :, None, None], "identity_w"),
             numpy_helper.from_array(np.array([0] + shape4[1:], np.int64), "shape4"),
             numpy_helper.from_array(np.array([0] + shape[1:], np.int64), "shape_in")]
    nodes = [helper.make_node("Reshape", [src, "shape4"], ["x4"], name="to_4d"),
             helper.make_node("Conv", ["x4", "identity_w"], ["c4"], name="identity_conv"),
             helper.make_node("Reshape", ["c4", "shape_in"], [carried], name="from_4d")]
    if len(shape) == 4:
        nodes = [helper.make_node("Conv", [src, "identity_w"], [carried], name="identity_conv")]
        inits = inits[:1]
    graph.initializer.extend(inits)
    old = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + old)
    return NodeCase(case.name + "+identity_conv", case.op, model, case.x, case.y)


@functools.lru_cache(maxsize=1)
def quantized_cases():
    """Every case as it is, and behind an identity Conv when it has no MAC layer."""
    out = []
    for case in node_cases():
        out.append(case)
        if case.op not in ("Conv", "Gemm", "MatMul"):
            carried = with_identity_conv(case)
            if carried is not None:
                out.append(carried)
    return tuple(out)


def float_ir_output(model: onnx.ModelProto, x):
    """mcugen's float IR on x, with the host-side Softmax/LogSoftmax applied. x is one sample
    in the ONNX input's shape, which mcugen may read batch first (a sequence-first [T, 1, ...]
    input: frontend/batch_axis.py): the same values in the graph's input shape."""
    from mcugen.frontend.onnx_reader import import_model
    from mcugen.ops.softmax import apply_output_transform
    from mcugen.passes import run_flow
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = run_flow(import_model(copy))
    x = np.asarray(x).reshape((-1,) + tuple(graph.shapes[graph.input][1:]))
    return graph, apply_output_transform(graph.output_transform, run_float(graph, x)[graph.output])


def outcome(fn):
    """("ok", value) | ("refused", message) | ("internal", "Type: message") for fn()."""
    from mcugen.errors import MCUGenError
    try:
        return "ok", fn()
    except MCUGenError as exc:
        return "refused", str(exc)
    except Exception as exc:  # anything else is an internal error: the point of the suite
        return "internal", f"{type(exc).__name__}: {exc}"


def refusal_reason(message: str) -> str:
    """A refusal without its node name and shapes: the key that groups refusals."""
    if message.startswith("node '") and "): " in message:
        op = message.split("(", 1)[1].split(")", 1)[0]
        message = f"{op}: {message.split('): ', 1)[1]}"
    message = re.sub(r"\[[^\]]*\]", "[...]", message)
    return message.split("; mcugen lowers:")[0][:140]


def label(kind, value) -> str:
    if kind == "refused":
        return f"refused: {refusal_reason(value)}"
    if kind == "internal":
        return f"internal: {value.splitlines()[0][:100]}"
    return kind


# ---- the light zoo ------------------------------------------------------------------------

def light_models():
    return sorted(LIGHT_DIR.glob("light_*.onnx"))


def light_input_value(model: onnx.ModelProto):
    """The run-time input (these old models list their initializers as inputs too)."""
    constants = {i.name for i in model.graph.initializer}
    return next(v for v in model.graph.input if v.name not in constants)


def light_input(model: onnx.ModelProto) -> np.ndarray:
    """The input onnx's backend runner pairs with the stored output of a light model: the
    values 0, 1/n, ..., (n-1)/n in the input's shape (float32)."""
    shape = [d.dim_value or 1 for d in light_input_value(model).type.tensor_type.shape.dim]
    n = int(np.prod(shape))
    return (np.arange(n).reshape(shape) / n).astype(np.float32)


def _random_like(value: np.ndarray, rng) -> np.ndarray:
    """A weight (rank >= 2) drawn with He scaling, so activations keep their scale through
    the depth and classes differ; a vector (bias, BatchNorm scale, shift, mean, variance)
    drawn in [0.5, 1.5]: a variance stays positive and a BatchNorm stays near unit gain, so
    the input still matters after a hundred layers."""
    if value.ndim >= 2:
        fan_in = int(np.prod(value.shape[1:]))
        return rng.normal(0.0, np.sqrt(2.0 / fan_in), value.shape).astype(np.float32)
    return rng.uniform(0.5, 1.5, value.shape).astype(np.float32)


def light_with_random_weights(model: onnx.ModelProto, seed=0) -> onnx.ModelProto:
    """The light model with every float constant redrawn (its weights are all one value, so
    every channel computes the same thing and the stored output cannot see a channel mix-up).
    ConstantOfShape weight generators become initializers."""
    rng = np.random.default_rng(seed)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    weights = {}
    for node in graph.node:
        if node.op_type == "ConstantOfShape":
            fill = numpy_helper.to_array(helper.get_attribute_value(node.attribute[0]))
            weights[node.output[0]] = np.full(consts[node.input[0]], fill.reshape(-1)[0])
    weights.update({k: v for k, v in consts.items() if v.dtype == np.float32})
    kept = [n for n in graph.node if n.op_type != "ConstantOfShape"]
    used = {name for n in kept for name in n.input}
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(numpy_helper.from_array(_random_like(v, rng), k)
                             for k, v in weights.items() if k in used)
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items()
                             if k in used and k not in weights)     # shapes stay
    # IR version 3 lists every initializer as a graph input too
    real = light_input_value(model)
    del graph.input[:]
    graph.input.append(real)
    graph.input.extend(helper.make_tensor_value_info(i.name, i.data_type, i.dims)
                       for i in graph.initializer)
    return out


def light_expected(path: Path) -> np.ndarray:
    stored = path.with_name(path.stem + "_output_0.pb")
    return numpy_helper.to_array(onnx.load_tensor(str(stored)))


def float_outcomes():
    """{outcome label: [case names]} of every node case through the float IR."""
    groups = collections.defaultdict(list)
    for case in node_cases():
        kind, value = outcome(lambda: float_ir_output(case.model, case.x)[1])
        if kind == "ok" and (value.shape != case.y.shape or not np.allclose(
                value, case.y, rtol=case.tolerance, atol=case.tolerance)):
            kind = "MISMATCH"
        groups[label(kind, value)].append(case.name)
    return groups


def quantized_outcomes():
    """{outcome label: [case names]} of every case through the uniform W8A8 build."""
    import tempfile

    import mcugen
    groups = collections.defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "case.onnx"
        for case in quantized_cases():
            onnx.save(case.model, str(path))
            kind, value = outcome(lambda: mcugen.build(path, scheme="uniform", wbits=8, abits=8,
                                                       input_range=case.input_range))
            groups["lowers" if kind == "ok" else label(kind, value)].append(case.name)
    return groups


def _print_groups(title, groups):
    print(f"\n{title}:")
    for key, names in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        print(f"  {len(names):4d}  {key}")
        if key not in ("ok", "lowers"):
            print("        " + " ".join(names))


def _summary():
    excluded = node_cases_and_exclusions()[1]
    print(f"{len(node_cases())} node cases (with per-sample readings); {len(excluded)} excluded:")
    for reason, count in collections.Counter(excluded.values()).most_common():
        print(f"  {count:4d}  {reason}")
    _print_groups("float IR", float_outcomes())
    _print_groups("uniform W8A8 build", quantized_outcomes())


if __name__ == "__main__":
    _summary()
