"""Softmax inside the graph as the integer step `softmax` (mcugen/ops/softmax.py, DESIGN section
2): over the last axis of tokens [1, N, D], over the channels of [1, C, 1, 1] and [1, C, H, W],
over the trailing axes before opset 13; float IR against onnxruntime, generated C bit-exact
against the reference under ASan/UBSan (power W4A8, uniform W8A8, NUPES W8A8; GAP8 and HLS once),
the integer probabilities within the contract's bound of the float softmax of the decoded
inputs; a final Softmax stays the host-side transform."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

import mcugen
from mcugen.errors import MCUGenError
from mcugen.frontend.onnx_reader import import_model
from mcugen.lower.encoders import encode
from mcugen.ops.softmax import RECIP_BITS, prob_bits, probabilities
from mcugen.passes import run_flow
from mcugen.reference.float_ir import run_float
from mcugen.reference.interpreter import quantize_input, run, run_codes
from mcugen.verify import compare, verify_inputs
from onnx_factory import conv_relu_gemm, make_model, save, tensor

IN_SHAPE = [1, 2, 4, 5]
CONFIGS = {"power_w4a8": dict(scheme="power", wbits=4, abits=8),
           "uniform_w8a8": dict(scheme="uniform", wbits=8, abits=8),
           "nupes_w8a8": dict(scheme="power", wbits=8, abits=8, method="nupes")}


def _weights(seed):
    rng = np.random.default_rng(seed)
    return lambda *shape: rng.normal(size=shape) * 0.7


def _model(path, nodes, inits, n_in, ints=(), opset=13):
    """x [1, 2, 4, 5] -> nodes -> Flatten -> Gemm(3) on the last node's `n_in` values; `ints`
    are int64 initializers (shapes)."""
    w = _weights(len(nodes))
    nodes = nodes + [helper.make_node("Flatten", [nodes[-1].output[0]], ["flat"], name="flatten"),
                     helper.make_node("Gemm", ["flat", "gw", "gb"], ["y"], name="head", transB=1)]
    model = make_model(nodes, [tensor("x", IN_SHAPE)], [tensor("y", [1, 3])],
                       list(inits) + [("gw", w(3, n_in)), ("gb", w(3))], opset=opset)
    for name, value in ints:
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=np.int64), name))
    return save(model, path)


def tokens_model(path):
    """Conv -> Reshape to tokens [1, 2, 40] -> Softmax(-1) -> Reshape back -> Mul with the conv
    output (an attention-like product) -> Conv 1x1. Rows of 40: F > 15, int32 exponents."""
    w = _weights(1)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["c", "tokens"], ["t"], name="to_tokens"),
             helper.make_node("Softmax", ["t"], ["p"], name="softmax", axis=-1),
             helper.make_node("Reshape", ["p", "image"], ["pi"], name="to_image"),
             helper.make_node("Mul", ["pi", "c"], ["g"], name="weigh"),
             helper.make_node("Conv", ["g", "w2", "b2"], ["tok_out"], name="mix")]
    inits = [("w1", w(4, 2, 3, 3)), ("b1", w(4) * 0.1), ("w2", w(4, 4, 1, 1)), ("b2", w(4) * 0.1)]
    return _model(path, nodes, inits, 80, [("tokens", [1, 2, 40]), ("image", [1, 4, 4, 5])])


def channel_gate_model(path):
    """Conv -> Relu -> GlobalAveragePool [1, 4, 1, 1] -> Softmax over the channels -> Mul gate."""
    w = _weights(2)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["m"], name="gap"),
             helper.make_node("Softmax", ["m"], ["s"], name="softmax", axis=1),
             helper.make_node("Mul", ["r", "s"], ["gated"], name="gate")]
    inits = [("w1", w(4, 2, 3, 3)), ("b1", w(4) * 0.1)]
    return _model(path, nodes, inits, 80)


def spatial_model(path):
    """Conv -> Softmax over W (the last axis of [1, 3, 4, 5]) -> Conv -> Softmax over the
    channels of [1, 3, 4, 5] (the middle axis: inner 20)."""
    w = _weights(3)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Softmax", ["c"], ["s1"], name="softmax_w", axis=-1),
             helper.make_node("Conv", ["s1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             helper.make_node("Softmax", ["c2"], ["sp_out"], name="softmax_c", axis=1)]
    inits = [("w1", w(3, 2, 3, 3)), ("b1", w(3) * 0.1), ("w2", w(3, 3, 3, 3) * 2), ("b2", w(3) * 0.1)]
    return _model(path, nodes, inits, 60)


def opset11_model(path):
    """Opset 11: Softmax(axis=2) of [1, 4, 4, 5] coerces to 2-D, over H and W together."""
    w = _weights(4)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Softmax", ["c"], ["s"], name="softmax", axis=2),
             helper.make_node("Mul", ["c", "s"], ["o11"], name="weigh")]
    inits = [("w1", w(4, 2, 3, 3)), ("b1", w(4) * 0.1)]
    return _model(path, nodes, inits, 80, opset=11)


MODELS = {"tokens": tokens_model, "channel_gate": channel_gate_model, "spatial": spatial_model,
          "opset11": opset11_model}
# (n, inner) of each model's softmax steps, in order
LAYOUTS = {"tokens": [(40, 1)], "channel_gate": [(4, 1)], "spatial": [(5, 1), (3, 20)],
           "opset11": [(20, 1)]}


def inputs(n, seed=0):
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=(n, *IN_SHAPE[1:])).astype(np.float32)


@pytest.mark.parametrize("name", list(MODELS))
def test_float_ir_matches_onnxruntime_and_softmax_is_a_step(name, tmp_path):
    path = MODELS[name](tmp_path / f"{name}.onnx")
    x = inputs(6)
    session = ort.InferenceSession(str(path))
    want = np.concatenate([session.run(None, {"x": xi[None]})[0] for xi in x])
    graph = run_flow(import_model(onnx.load(str(path))))
    assert graph.output_transform is None
    np.testing.assert_allclose(run_float(graph, x.astype(np.float64))[graph.output], want,
                               rtol=1e-4, atol=1e-4)
    project = mcugen.build(path, input_range=(-1.0, 1.0))
    steps = [s for s in project.schedule.steps if s.kind == "softmax"]
    assert [(s.params["n"], s.params["inner"]) for s in steps] == LAYOUTS[name]
    for step in steps:
        assert step.info["acc_bound"] == (1 << RECIP_BITS) + (1 << (step.params["prob_bits"] - 1))
        assert step.info["exp_bits"] == 10
        assert step.info["prob_bits"] == prob_bits(step.params["n"], 10) == (18 if name == "tokens" else 15)
        assert step.consts["exp"].dtype == (np.int32 if name == "tokens" else np.uint16)
        assert step.info["table_bytes"] > 0 and "encoder_max_code_error" in step.info


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("name", list(MODELS))
def test_c_is_bit_exact_under_sanitizers(name, config, tmp_path, host_cc):
    path = MODELS[name](tmp_path / f"{name}.onnx")
    options = dict(CONFIGS[config])
    if options.get("method") == "nupes":
        options["calib"] = inputs(64, seed=3)
    else:
        options["input_range"] = (-1.0, 1.0)
    out = tmp_path / "out"
    project = mcugen.build(path, out=out, **options)
    assert "softmax" in {s.kind for s in project.schedule.steps}
    result = compare(out, project.schedule, verify_inputs(project.schedule, 40, seed=1), sanitize=True)
    assert result.mismatches == 0, f"{config}: {result.first}"


@pytest.mark.parametrize("target", ["gap8", "hls"])
def test_gap8_and_hls_are_bit_exact(target, tmp_path, host_cc):
    path = spatial_model(tmp_path / "spatial.onnx")
    out = tmp_path / target
    abits = 4 if target == "gap8" else 8          # 4-bit probabilities: K = 6
    project = mcugen.build(path, out=out, target=target, input_range=(-1.0, 1.0), wbits=4, abits=abits)
    result = compare(out, project.schedule, verify_inputs(project.schedule, 40, seed=1), sanitize=True)
    assert result.mismatches == 0, result.first


def _softmax_inputs(project, x):
    """(softmax step, its input codes, the decoded input values) for each softmax step on x."""
    schedule, qgraph = project.schedule, project.qgraph
    _, traced = run_codes(schedule, quantize_input(schedule, x), trace=True)
    by_buffer = {s.output: traced[s.name] for s in schedule.steps}
    by_buffer[schedule.input["buffer"]] = quantize_input(schedule, x).reshape(len(x), -1)
    for step in schedule.steps:
        if step.kind != "softmax":
            continue
        node = next(n for n in qgraph.graph.nodes if n.name == step.layer)
        codes = by_buffer[schedule.buffers[step.inputs[0]].alias_of or step.inputs[0]]
        yield step, node, codes, qgraph.encodings[node.inputs[0]]


def _float_softmax(values, p):
    v = values.reshape(len(values), p["outer"], p["n"], p["inner"])
    e = np.exp(v - v.max(axis=2, keepdims=True))
    return e / e.sum(axis=2, keepdims=True)


@pytest.mark.parametrize("config", ["power_w4a8", "uniform_w8a8", "power_w4a4"])
def test_integer_probabilities_within_the_stated_bound(config, tmp_path):
    """On the model's own inputs and on random and concentrated rows of every input code: the
    probabilities before encoding are within the contract's bound of the float softmax of the
    decoded inputs, far below an 8-bit step; the threshold-encoded codes within one code of
    the float softmax's own."""
    path = (tokens_model if config == "uniform_w8a8" else spatial_model)(tmp_path / "m.onnx")
    options = CONFIGS.get(config, dict(scheme="power", wbits=4, abits=4))
    project = mcugen.build(path, input_range=(-1.0, 1.0), encoder="threshold", **options)
    rng = np.random.default_rng(5)
    worst = 0.0
    for step, node, codes, enc in _softmax_inputs(project, inputs(40, seed=9)):
        p = step.params
        lo, hi = enc.codes()[0], enc.codes()[-1]
        spread = rng.integers(lo, hi + 1, size=(400, codes.shape[1]))
        narrow = np.clip(hi // 2 + rng.integers(-6, 7, size=(400, codes.shape[1])), lo, hi)
        for batch in (codes, spread, narrow):
            acc = probabilities(step, batch)
            y = _float_softmax(enc.decode(batch), p)
            got = acc / float(1 << RECIP_BITS)
            u = np.log(2.0) / (1 << p["exp_bits"])
            bound = y * np.expm1(u) + (1 + p["n"] * y * np.exp(u)) * 2.0 ** -p["prob_bits"] + \
                2.0 ** (p["prob_bits"] - 31)
            assert np.all(np.abs(got - y) <= bound), float(np.max(np.abs(got - y) - bound))
            worst = max(worst, float(np.abs(got - y).max()))
            out_enc = project.qgraph.encodings[node.output]
            from_step = encode(step, acc.reshape(len(batch), -1), 0)
            assert np.abs(from_step - out_enc.encode(y).reshape(len(batch), -1)).max() <= 1
    assert worst < 0.25 / ((1 << options["abits"]) - 1), worst
    print(f"{config}: worst |integer - float| probability {worst:.2e}")


def test_final_softmax_stays_a_host_transform(tmp_path):
    """A classifier's last Softmax is still removed and run on the host (generated code as
    before); a final Softmax over the channels of [1, C, H, W] (opset 13: per pixel) is the
    integer step instead of a refusal."""
    model = conv_relu_gemm()
    model.graph.node[-1].output[0] = "logits"
    model.graph.node.append(helper.make_node("Softmax", ["logits"], ["y"], name="sm", axis=-1))
    path = save(model, tmp_path / "classifier.onnx")
    project = mcugen.build(path, input_range=(-1.0, 1.0))
    assert project.schedule.output_transform == "Softmax"
    assert project.schedule.output["kind"] == "acc"
    assert "softmax" not in {s.kind for s in project.schedule.steps}

    w = _weights(6)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Softmax", ["c"], ["y"], name="per_pixel", axis=1)]
    model = make_model(nodes, [tensor("x", IN_SHAPE)], [tensor("y", [1, 3, 4, 5])],
                       [("w1", w(3, 2, 3, 3)), ("b1", w(3) * 0.1)])
    path = save(model, tmp_path / "per_pixel.onnx")
    out = tmp_path / "per_pixel"
    project = mcugen.build(path, out=out, input_range=(-1.0, 1.0))
    assert project.schedule.output_transform is None
    assert [s.kind for s in project.schedule.steps] == ["conv2d", "softmax"]
    x = inputs(20)
    session = ort.InferenceSession(str(path))
    want = np.concatenate([session.run(None, {"x": xi[None]})[0] for xi in x])
    got = run(project.schedule, x)
    assert np.abs(got - want.reshape(got.shape)).max() < 0.05


def test_logsoftmax_inside_the_graph_is_refused_in_one_line(tmp_path):
    w = _weights(7)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("LogSoftmax", ["c"], ["ls"], name="logsm", axis=-1),
             helper.make_node("Mul", ["c", "ls"], ["o11"], name="weigh")]
    path = _model(tmp_path / "logsoftmax.onnx", nodes, [("w1", w(4, 2, 3, 3)), ("b1", w(4) * 0.1)], 80)
    with pytest.raises(MCUGenError) as info:
        mcugen.build(path, input_range=(-1.0, 1.0))
    message = str(info.value)
    assert "\n" not in message and "(LogSoftmax)" in message and "last op" in message
