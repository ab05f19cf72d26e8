"""Softmax inside the graph as the integer step `softmax` (mcugen/ops/softmax.py, DESIGN section
2): over the last axis of tokens [1, N, D], over the channels of [1, C, 1, 1] and [1, C, H, W],
over the trailing axes before opset 13; float IR against onnxruntime, generated C bit-exact
against the reference under ASan/UBSan (power W4A8, uniform W8A8, NUPES W8A8; GAP8 and HLS once),
the integer probabilities within the contract's bound of the float softmax of the decoded
inputs; a final Softmax stays the host-side transform. LogSoftmax inside the graph (issue 24):
the same step with the integer log of the row's sum, the same checks, rv32 under qemu too, its
log-probabilities within the stated bound of the float log-softmax of the decoded inputs."""
import functools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

import mcugen
from mcugen.frontend.onnx_reader import import_model
from mcugen.lower.encoders import encode
from mcugen.ops.softmax import RECIP_BITS, log_error_bound, log_probabilities, prob_bits, probabilities
from mcugen.passes import run_flow
from mcugen.reference.float_ir import run_float
from mcugen.reference.interpreter import quantize_input, run, run_codes
from mcugen.verify import compare, verify_inputs
from conftest import require_tool
from onnx_factory import conv_relu_gemm, make_model, save, tensor

IN_SHAPE = [1, 2, 4, 5]
CONFIGS = {"power_w4a8": dict(scheme="power", wbits=4, abits=8),
           "uniform_w8a8": dict(scheme="uniform", wbits=8, abits=8),
           "nupes_w8a8": dict(scheme="power", wbits=8, abits=8, method="nupes")}


def _weights(seed):
    rng = np.random.default_rng(seed)
    return lambda *shape: rng.normal(size=shape) * 0.7


def per_pixel_model(tmp_path, op):
    """x -> a 3x3 conv to 3 channels -> `op` (Softmax or LogSoftmax) over the channels of each
    pixel: a softmax inside the graph, not over its last axis."""
    w = _weights(6)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node(op, ["c"], ["y"], name="per_pixel", axis=1)]
    model = make_model(nodes, [tensor("x", IN_SHAPE)], [tensor("y", [1, 3, 4, 5])],
                       [("w1", w(3, 2, 3, 3)), ("b1", w(3) * 0.1)])
    return save(model, tmp_path / "per_pixel.onnx")


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


def tokens_model(path, op="Softmax"):
    """Conv -> Reshape to tokens [1, 2, 40] -> Softmax(-1) -> Reshape back -> Mul with the conv
    output (an attention-like product) -> Conv 1x1. Rows of 40: F > 15, int32 exponents."""
    w = _weights(1)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["c", "tokens"], ["t"], name="to_tokens"),
             helper.make_node(op, ["t"], ["p"], name="softmax", axis=-1),
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


def spatial_model(path, op="Softmax"):
    """Conv -> Softmax over W (the last axis of [1, 3, 4, 5]) -> Conv -> Softmax over the
    channels of [1, 3, 4, 5] (the middle axis: inner 20)."""
    w = _weights(3)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node(op, ["c"], ["s1"], name="softmax_w", axis=-1),
             helper.make_node("Conv", ["s1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             helper.make_node(op, ["c2"], ["sp_out"], name="softmax_c", axis=1)]
    inits = [("w1", w(3, 2, 3, 3)), ("b1", w(3) * 0.1), ("w2", w(3, 3, 3, 3) * 2), ("b2", w(3) * 0.1)]
    return _model(path, nodes, inits, 60)


def opset11_model(path, op="Softmax", opset=11):
    """Opset 11: Softmax(axis=2) of [1, 4, 4, 5] coerces to 2-D, over H and W together (from
    opset 13: over H alone, rows of 4 interleaved by 5)."""
    w = _weights(4)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node(op, ["c"], ["s"], name="softmax", axis=2),
             helper.make_node("Mul", ["c", "s"], ["o11"], name="weigh")]
    inits = [("w1", w(4, 2, 3, 3)), ("b1", w(4) * 0.1)]
    return _model(path, nodes, inits, 80, opset=opset)


MODELS = {"tokens": tokens_model, "channel_gate": channel_gate_model, "spatial": spatial_model,
          "opset11": opset11_model}
# (n, inner) of each model's softmax steps, in order
LAYOUTS = {"tokens": [(40, 1)], "channel_gate": [(4, 1)], "spatial": [(5, 1), (3, 20)],
           "opset11": [(20, 1)]}


LOG_MODELS = {"log_tokens": functools.partial(tokens_model, op="LogSoftmax"),
              "log_spatial": functools.partial(spatial_model, op="LogSoftmax"),
              "log_opset11": functools.partial(opset11_model, op="LogSoftmax"),
              "log_opset13": functools.partial(opset11_model, op="LogSoftmax", opset=13)}
LOG_LAYOUTS = {"log_tokens": [(40, 1)], "log_spatial": [(5, 1), (3, 20)], "log_opset11": [(20, 1)],
               "log_opset13": [(4, 5)]}


def inputs(n, seed=0):
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=(n, *IN_SHAPE[1:])).astype(np.float32)


def float_ir_then_steps(path):
    """The float IR against onnxruntime (no host-side transform: the step is inside), then the
    build and its softmax steps."""
    x = inputs(6)
    session = ort.InferenceSession(str(path))
    want = np.concatenate([session.run(None, {"x": xi[None]})[0] for xi in x])
    graph = run_flow(import_model(onnx.load(str(path))))
    assert graph.output_transform is None
    np.testing.assert_allclose(run_float(graph, x.astype(np.float64))[graph.output], want,
                               rtol=1e-4, atol=1e-4)
    project = mcugen.build(path, input_range=(-1.0, 1.0))
    return project, [s for s in project.schedule.steps if s.kind == "softmax"]


@pytest.mark.parametrize("name", list(MODELS))
def test_float_ir_matches_onnxruntime_and_softmax_is_a_step(name, tmp_path):
    path = MODELS[name](tmp_path / f"{name}.onnx")
    project, steps = float_ir_then_steps(path)
    assert [(s.params["n"], s.params["inner"]) for s in steps] == LAYOUTS[name]
    for step in steps:
        assert step.info["acc_bound"] == (1 << RECIP_BITS) + (1 << (step.params["prob_bits"] - 1))
        assert step.info["exp_bits"] == 10
        assert step.info["prob_bits"] == prob_bits(step.params["n"], 10) == (18 if name == "tokens" else 15)
        assert step.consts["exp"].dtype == (np.int32 if name == "tokens" else np.uint16)
        assert step.info["table_bytes"] > 0 and "encoder_max_code_error" in step.info


def build_config(path, config, out):
    """The model built in configuration `config` of CONFIGS (NUPES calibrated on 64 inputs)."""
    options = dict(CONFIGS[config])
    if options.get("method") == "nupes":
        options["calib"] = inputs(64, seed=3)
    else:
        options["input_range"] = (-1.0, 1.0)
    return mcugen.build(path, out=out, **options)


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("name", list(MODELS))
def test_c_is_bit_exact_under_sanitizers(name, config, tmp_path, host_cc):
    out = tmp_path / "out"
    project = build_config(MODELS[name](tmp_path / f"{name}.onnx"), config, out)
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

    path = per_pixel_model(tmp_path, "Softmax")
    out = tmp_path / "per_pixel"
    project = mcugen.build(path, out=out, input_range=(-1.0, 1.0))
    assert project.schedule.output_transform is None
    assert [s.kind for s in project.schedule.steps] == ["conv2d", "softmax"]
    x = inputs(20)
    session = ort.InferenceSession(str(path))
    want = np.concatenate([session.run(None, {"x": xi[None]})[0] for xi in x])
    got = run(project.schedule, x)
    assert np.abs(got - want.reshape(got.shape)).max() < 0.05


@pytest.mark.parametrize("name", list(LOG_MODELS))
def test_logsoftmax_inside_the_graph_is_the_step_with_its_log(name, tmp_path):
    """Float IR against onnxruntime; the step's layout (opset 11: H and W together, 13: H alone),
    its log table, its signed output and its stated bound."""
    path = LOG_MODELS[name](tmp_path / f"{name}.onnx")
    project, steps = float_ir_then_steps(path)
    assert [(s.params["n"], s.params["inner"]) for s in steps] == LOG_LAYOUTS[name]
    for step in steps:
        p, node = step.params, next(n for n in project.qgraph.graph.nodes if n.name == step.layer)
        assert p["log"] == 1 and step.onnx_op == "LogSoftmax" and "recip_one" not in p
        assert project.qgraph.encodings[node.output].signed
        assert p["log_bits"] == min(p["exp_bits"], p["prob_bits"]) and p["log_one"] == 1 << p["log_bits"]
        assert p["top_bit"] == p["prob_bits"] + p["n"].bit_length() - 1
        assert step.consts["log"].size == p["log_one"] + 1 and step.consts["log"][-1] == 1 << p["exp_bits"]
        assert step.info["acc_bound"] < (1 << 31) - 2
        bound = log_error_bound(p["exp_bits"], p["prob_bits"], p["n"])
        assert step.info["softmax_error_bound"] == round(bound, 7)


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("name", list(LOG_MODELS))
def test_logsoftmax_c_is_bit_exact_under_sanitizers(name, config, tmp_path, host_cc):
    out = tmp_path / "out"
    project = build_config(LOG_MODELS[name](tmp_path / f"{name}.onnx"), config, out)
    assert any(s.kind == "softmax" and s.params["log"] for s in project.schedule.steps)
    result = compare(out, project.schedule, verify_inputs(project.schedule, 40, seed=1), sanitize=True)
    assert result.mismatches == 0, f"{config}: {result.first}"


@pytest.mark.parametrize("target", ["rv32", "gap8", "hls"])
def test_logsoftmax_on_rv32_gap8_and_hls_is_bit_exact(target, tmp_path, host_cc):
    """rv32 under qemu; GAP8 in the PMSIS emulation, the step over W on the cluster (the softmax's
    cluster kernel renders the same C for one unit), the one over the channels (one unit: outer
    1) on the FC; HLS C simulation."""
    if target == "rv32":
        for tool in ("riscv64-unknown-elf-gcc", "qemu-system-riscv32"):
            require_tool(tool)
    path = LOG_MODELS["log_spatial"](tmp_path / "log_spatial.onnx")
    out = tmp_path / target
    abits = 4 if target == "gap8" else 8          # 4-bit log-probabilities: K = 6
    project = mcugen.build(path, out=out, target=target, input_range=(-1.0, 1.0), wbits=4, abits=abits)
    on = "qemu" if target == "rv32" else "host"
    result = compare(out, project.schedule, verify_inputs(project.schedule, 40, seed=1),
                     sanitize=target != "rv32", on=on)
    assert result.mismatches == 0, result.first
    if target == "gap8":
        model_c = (out / "model.c").read_text()
        on_cluster = {s.layer: f"{s.name}_unit_log_of" in model_c and f"{s.name}_worker" in model_c
                      for s in project.schedule.steps if s.kind == "softmax"}
        assert on_cluster == {"softmax_w": True, "softmax_c": False}


def _adversarial(step, enc, rows, rng):
    """Rows of codes whose sum's rounding is largest: one code at the top, the others where
    2^F exp(-d u) is nearest 1/2 (each exponential's rounding up to 1, the sum's n - 1)."""
    p, codes = step.params, enc.codes()
    dx = step.consts["dx"].astype(np.int64)[codes + p["x_offset"]]
    target = dx.max() - (p["prob_bits"] + 1) * (1 << p["exp_bits"])
    near = codes[np.argsort(np.abs(dx - target))[:3]]
    batch = rng.choice(near, size=(rows, p["outer"], p["n"], p["inner"]))
    batch[:, :, 0, :] = codes[np.argmax(dx)]
    return batch.reshape(rows, -1)


def _float_log_softmax(values, p):
    v = values.reshape(len(values), p["outer"], p["n"], p["inner"])
    z = v - v.max(axis=2, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=2, keepdims=True))


@pytest.mark.parametrize("config", ["power_w4a8", "uniform_w8a8", "power_w4a4"])
def test_integer_log_probabilities_within_the_stated_bound(config, tmp_path):
    """On the model's own inputs, random and concentrated rows of every input code and rows
    that maximize the sum's rounding: u * acc is within the stated bound of the float
    log-softmax of the decoded inputs, far below an output step; the threshold-encoded code
    lies between the float encoder's codes at the bound's two ends."""
    model = LOG_MODELS["log_tokens" if config == "uniform_w8a8" else "log_spatial"]
    options = CONFIGS.get(config, dict(scheme="power", wbits=4, abits=4))
    project = mcugen.build(model(tmp_path / "m.onnx"), input_range=(-1.0, 1.0), encoder="threshold",
                           **options)
    rng = np.random.default_rng(5)
    worst, ratio, steps = 0.0, 0.0, 0
    for step, node, codes, enc in _softmax_inputs(project, inputs(40, seed=9)):
        p, out_enc = step.params, project.qgraph.encodings[node.output]
        bound = log_error_bound(p["exp_bits"], p["prob_bits"], p["n"])
        lo, hi = enc.codes()[0], enc.codes()[-1]
        spread = rng.integers(lo, hi + 1, size=(400, codes.shape[1]))
        narrow = np.clip(hi // 2 + rng.integers(-6, 7, size=(400, codes.shape[1])), lo, hi)
        for batch in (codes, spread, narrow, _adversarial(step, enc, 400, rng)):
            acc = log_probabilities(step, batch)
            y = _float_log_softmax(enc.decode(batch), p)
            got = acc * (np.log(2.0) / (1 << p["exp_bits"]))
            error = float(np.abs(got - y).max())
            assert error <= bound, (error, bound)
            worst, ratio = max(worst, error), max(ratio, error / bound)
            from_step = encode(step, acc.reshape(len(batch), -1), 0)
            below, above = (out_enc.encode(v).reshape(len(batch), -1) for v in (y - bound, y + bound))
            assert np.all((below <= from_step) & (from_step <= above))
        assert worst < 0.25 * out_enc.range / out_enc.B, (worst, out_enc.range / out_enc.B)
        steps += 1
    assert steps == (1 if config == "uniform_w8a8" else 2)
    print(f"{config}: worst |integer - float| log-probability {worst:.2e} nats, {ratio:.0%} of the bound")


def test_final_logsoftmax_stays_a_host_transform(tmp_path):
    """A classifier's last LogSoftmax is still removed and run on the host, over the last axis
    and (before opset 13) over axis 1: the schedule is the one without it; over the channels of
    [1, C, H, W] from opset 13 (per pixel), the integer step where it was refused."""
    plain = mcugen.build(save(conv_relu_gemm(), tmp_path / "plain.onnx"), input_range=(-1.0, 1.0))
    for opset, axis in ((13, -1), (11, 1)):
        model = conv_relu_gemm()
        model.opset_import[0].version = opset
        model.graph.node[-1].output[0] = "logits"
        model.graph.node.append(helper.make_node("LogSoftmax", ["logits"], ["y"], name="lsm", axis=axis))
        project = mcugen.build(save(model, tmp_path / f"classifier{opset}.onnx"), input_range=(-1.0, 1.0))
        assert project.schedule.output_transform == "LogSoftmax"
        assert project.schedule.output["kind"] == "acc"
        assert [(s.kind, s.params) for s in project.schedule.steps] == \
            [(s.kind, s.params) for s in plain.schedule.steps]

    path = per_pixel_model(tmp_path, "LogSoftmax")
    project = mcugen.build(path, input_range=(-1.0, 1.0))
    assert project.schedule.output_transform is None
    assert [s.kind for s in project.schedule.steps] == ["conv2d", "softmax"]
    x = inputs(20)
    session = ort.InferenceSession(str(path))
    want = np.concatenate([session.run(None, {"x": xi[None]})[0] for xi in x])
    got = run(project.schedule, x)
    # the conv's 4-bit weights and the output grid's step out at ~9 nats (power, 8 bits): 0.08
    assert np.abs(got - want.reshape(got.shape)).max() < 0.1
