"""NUPES (--method nupes): the closed-form layer error against outputs computed directly, GPTQ
against plain rounding, the whole method against PowerQuant on a small model's calibration set,
reproducibility, bias correction, clean errors on bad calibration data, and NUPES builds of the
shared models bit-exact on the host and on RV32 under qemu."""
import numpy as np
import pytest
from sklearn.datasets import load_digits

import mcugen
from conftest import MODELS, REPO, require_tool, shared_model
from mcugen.ir.graph import Node
from mcugen.quant.gptq import gptq_codes, inverse_factor
from mcugen.quant.layer_stats import layer_stats
from mcugen.quant.power import Grid
from mcugen.reference.float_ir import run_float
from mcugen.verify import compare, verify_inputs
from test_bad_inputs import assert_clean_failure, mcugen as run_cli

DIGITS_CNN = REPO / "examples" / "digits_cnn.onnx"


def digits(n, start=0):
    """scikit-learn's digits as the example models take them: pixels / 16, [N, 1, 8, 8]."""
    images = load_digits().images[start:start + n]
    return (images / 16.0).reshape(-1, 1, 8, 8)


def direct_conv(x, w, stride, pad, dilation, group):
    """A plain loop over output positions: the oracle for the im2col statistics."""
    n, c, h, wd = x.shape
    co, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh = (h + 2 * pad - dilation * (kh - 1) - 1) // stride + 1
    ow = (wd + 2 * pad - dilation * (kw - 1) - 1) // stride + 1
    y = np.zeros((n, co, oh, ow))
    per_group = co // group
    for o in range(co):
        g = o // per_group
        for i in range(oh):
            for j in range(ow):
                patch = xp[:, g * cg:(g + 1) * cg, i * stride:i * stride + dilation * (kh - 1) + 1:dilation,
                           j * stride:j * stride + dilation * (kw - 1) + 1:dilation]
                y[:, o, i, j] = (patch * w[o]).sum(axis=(1, 2, 3))
    return y


@pytest.mark.parametrize("group", [1, 2, 6])
def test_layer_error_in_closed_form_equals_the_outputs_computed_directly(group):
    rng = np.random.default_rng(group)
    co, cg = 6, 6 // group
    w = rng.normal(size=(co, cg, 3, 3))
    v = w + rng.normal(scale=0.1, size=w.shape)
    bias = rng.normal(size=co)
    node = Node(name="c", op="Conv", inputs=["x"], output="y",
                attrs={"group": group, "strides": [2, 2], "pads": [1, 1, 1, 1], "dilations": [2, 2],
                       "activation": None}, params={"weight": w, "bias": bias})
    x_f = rng.normal(size=(5, 6, 9, 9)) + 0.5
    x_q = x_f + rng.normal(scale=0.05, size=x_f.shape)
    stats = layer_stats(node, x_q, x_f)
    y_f = direct_conv(x_f, w, 2, 1, 2, group) + bias.reshape(1, -1, 1, 1)
    y_q = direct_conv(x_q, v, 2, 1, 2, group) + bias.reshape(1, -1, 1, 1)
    grouped_v, grouped_w = v.reshape(group, co // group, -1), w.reshape(group, co // group, -1)
    raw = np.linalg.norm(y_q - y_f) / np.linalg.norm(y_f)
    assert stats.relative_error(grouped_v, grouped_w, bias, corrected=False) == pytest.approx(raw, rel=1e-9)
    shift = (y_q - y_f).mean(axis=(0, 2, 3)).reshape(1, -1, 1, 1)
    centred = np.linalg.norm(y_q - shift - y_f) / np.linalg.norm(y_f)
    assert stats.relative_error(grouped_v, grouped_w, bias, corrected=True) == pytest.approx(centred, rel=1e-9)


def gptq_case(seed, rows=16, k=24, samples=400):
    """Correlated inputs (a random mixing of independent ones) and random weights."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, k)) @ rng.normal(size=(k, k))
    node = Node(name="d", op="Gemm", inputs=["x"], output="y", attrs={"activation": None},
                params={"weight": np.zeros((rows, k)), "bias": np.zeros(rows)})
    return x, rng.normal(size=(1, rows, k)), layer_stats(node, x, x)


@pytest.mark.parametrize("exponent", [1.0, 0.6])
def test_gptq_rounding_lowers_the_output_error_against_rounding_to_nearest(exponent):
    grid = Grid(4, True, exponent)
    gains = []
    for seed in range(5):
        x, w, stats = gptq_case(seed)
        scale = np.abs(w).max(axis=2)
        nearest = grid.dequantize(grid.quantize(w, scale[:, :, None]), scale[:, :, None])
        codes = gptq_codes(w, scale, grid, inverse_factor(stats.cqq))
        fed_back = grid.dequantize(codes, scale[:, :, None])
        gains.append(np.linalg.norm(x @ (nearest - w)[0].T) / np.linalg.norm(x @ (fed_back - w)[0].T))
    assert min(gains) > 1.2, gains


def test_gptq_is_rounding_to_nearest_when_the_inputs_are_uncorrelated():
    rng = np.random.default_rng(3)
    k = 10
    x = np.eye(k) * rng.uniform(1, 3, size=k)              # orthogonal columns: a diagonal Hessian
    node = Node(name="d", op="Gemm", inputs=["x"], output="y", attrs={"activation": None},
                params={"weight": np.zeros((4, k)), "bias": np.zeros(4)})
    stats = layer_stats(node, x, x)
    stats.mean_q[:] = 0.0                                   # the raw second moments, not centred
    w = rng.normal(size=(1, 4, k))
    scale = np.abs(w).max(axis=2)
    grid = Grid(4, True, 0.7)
    codes = gptq_codes(w, scale, grid, inverse_factor(stats.cqq))
    assert np.array_equal(codes, grid.quantize(w, scale[:, :, None]))


@pytest.fixture(scope="module")
def digits_builds():
    calib = digits(200)
    return calib, {method: mcugen.build(DIGITS_CNN, method=method, calib=calib, wbits=4, abits=4)
                   for method in ("powerquant", "nupes")}


def test_nupes_lowers_the_output_error_on_the_calibration_set(digits_builds):
    calib, builds = digits_builds
    graph = builds["nupes"].qgraph.graph
    real = run_float(graph, calib)[graph.output]
    error = {m: np.linalg.norm(p.run_simulated(calib) - real) for m, p in builds.items()}
    assert error["nupes"] < 0.8 * error["powerquant"], error
    for name, qw in builds["nupes"].qgraph.weights.items():
        assert qw.output_error < qw.output_error_before, name


def test_bias_correction_leaves_no_mean_error_in_the_first_layer(digits_builds):
    from mcugen.ops._common import conv2d
    calib, builds = digits_builds
    qgraph = builds["nupes"].qgraph
    node = qgraph.graph.nodes[0]
    qw = qgraph.weights[node.name]
    a = node.attrs
    enc = qgraph.encodings[node.inputs[0]]
    x_q = enc.decode(enc.encode(calib))
    y_f = conv2d(calib, node.params["weight"], a["strides"], a["pads"], a["dilations"], a["group"])
    y_q = conv2d(x_q, qw.w_hat, a["strides"], a["pads"], a["dilations"], a["group"])
    mean_error = (y_q + qw.bias.reshape(1, -1, 1, 1) - y_f - node.params["bias"].reshape(1, -1, 1, 1)).mean(axis=(0, 2, 3))
    assert np.abs(mean_error).max() < 1e-9 * np.abs(y_f).max()
    assert not np.allclose(qw.bias, node.params["bias"])        # there was something to correct


def test_nupes_is_reproducible_with_a_seed(digits_builds):
    calib, builds = digits_builds
    again = mcugen.build(DIGITS_CNN, method="nupes", calib=calib, wbits=4, abits=4)
    for first, second in zip(builds["nupes"].schedule.steps, again.schedule.steps):
        assert first.consts.keys() == second.consts.keys()
        for key in first.consts:
            assert np.array_equal(first.consts[key], second.consts[key]), (first.name, key)


@pytest.mark.parametrize("calib, words", [
    (None, ["--method nupes", "--calib"]),
    (digits(10), ["at least 32", "got 10"]),
    (np.zeros((64, 3, 8, 8)), ["shape", "64, 3, 8, 8"]),
    (np.where(np.arange(64)[:, None, None, None] == 5, np.nan, digits(64)), ["NaN", "sample 5"]),
    (np.full((64, 1, 8, 8), 0.5), ["same"]),
])
def test_bad_calibration_data_is_one_line_and_writes_nothing(tmp_path, calib, words):
    extra = []
    if calib is not None:
        np.save(tmp_path / "calib.npy", calib)
        extra = ["--calib", tmp_path / "calib.npy"]
    out = tmp_path / "out"
    code, _, err = run_cli("build", DIGITS_CNN, "--method", "nupes", "-o", out, *extra)
    assert_clean_failure(code, err, *words)
    assert not out.exists()


def shared_calibration(name, n=64):
    """mnist8 gets real digits; the other shared models samples over their input ranges."""
    if name == "mnist8":
        return np.load(REPO / "examples" / "mnist8_digits.npy")
    lo, hi = MODELS[name]
    shape = {"mnist_mlp_bn": (784,), "sine": (1,), "resnet8": (3, 32, 32), "kws_dscnn": (49, 10, 1)}[name]
    return np.random.default_rng(0).uniform(lo, hi, size=(n,) + shape)


@pytest.mark.parametrize("name", list(MODELS))
def test_nupes_build_of_every_shared_model_is_bit_exact_on_host_and_rv32(name, tmp_path, host_cc):
    for tool in ("riscv64-unknown-elf-gcc", "qemu-system-riscv32"):
        require_tool(tool)
    options = dict(method="nupes", calib=shared_calibration(name), wbits=4, abits=4)
    host = mcugen.build(shared_model(name), target="host", out=tmp_path / "host", **options)
    assert all(qw.output_error is not None for qw in host.qgraph.weights.values())
    x = verify_inputs(host.schedule, 60, seed=4)
    assert compare(tmp_path / "host", host.schedule, x).mismatches == 0
    rv32 = mcugen.build(shared_model(name), target="rv32", out=tmp_path / "rv32", **options)
    result = compare(tmp_path / "rv32", rv32.schedule, x[:3], on="qemu")
    assert result.n == 3 and result.mismatches == 0, result.first


def test_nupes_build_is_bit_exact_on_gap8(tmp_path, host_cc, digits_builds):
    calib, _ = digits_builds
    project = mcugen.build(DIGITS_CNN, target="gap8", out=tmp_path / "gap8", method="nupes",
                           calib=calib, wbits=4, abits=4)
    x = np.concatenate([digits(20, start=1500), verify_inputs(project.schedule, 10, seed=2)])
    result = compare(tmp_path / "gap8", project.schedule, x)
    assert result.n == len(x) and result.mismatches == 0, result.first


def test_cli_nupes_build_reports_each_layer_and_verifies(tmp_path, host_cc):
    np.save(tmp_path / "calib.npy", digits(64, start=100))
    out = tmp_path / "out"
    code, stdout, err = run_cli("build", DIGITS_CNN, "--method", "nupes", "--calib", tmp_path / "calib.npy",
                                "--wbits", "4", "--abits", "4", "--seed", "3", "-o", out)
    assert code == 0, err
    assert "NUPES, layers done: 6/6" in err
    rows = [line for line in stdout.splitlines() if "Conv" in line or "Gemm" in line]
    assert len(rows) == 6 and all("->" in row for row in rows), stdout
    assert "NUPES on 64 calibration samples (seed 3)" in stdout
    code, stdout, err = run_cli("verify", out)
    assert code == 0 and "0 differences" in stdout, stdout + err
