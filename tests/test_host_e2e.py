"""Every shared model x {uniform W8A8, power W8A8, power W4A8, power W4A4}: the generated C,
built with the host cc, equals the reference bit for bit on >= 200 inputs."""
import numpy as np
import pytest

import mcugen
from conftest import MODELS, shared_model
from mcugen.reference.float_ir import run_float
from mcugen.verify import compare, verify_inputs

CONFIGS = {"uniform-W8A8": ("uniform", 8, 8), "power-W8A8": ("power", 8, 8),
           "power-W4A8": ("power", 4, 8), "power-W4A4": ("power", 4, 4)}
SANITIZED = {"mnist8": "power-W4A4", "mnist_mlp_bn": "power-W8A8", "sine": "uniform-W8A8",
             "resnet8": "power-W4A8", "kws_dscnn": "power-W4A4"}


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("name", list(MODELS))
def test_generated_c_is_bit_exact(name, config, tmp_path, host_cc):
    scheme, wbits, abits = CONFIGS[config]
    out = tmp_path / "proj"
    project = mcugen.build(shared_model(name), out=out, scheme=scheme, wbits=wbits, abits=abits,
                           input_range=MODELS[name])
    x = verify_inputs(project.schedule, 200, seed=3)
    result = compare(out, project.schedule, x)
    assert result.n == 202
    assert result.mismatches == 0, result.first
    if SANITIZED[name] == config:
        sanitized = compare(out, project.schedule, x[:40], sanitize=True)
        assert sanitized.mismatches == 0, sanitized.first


def test_integer_reference_tracks_simulated_quantization():
    """The integer realization costs little on top of quantization itself (mnist8, W8A8)."""
    project = mcugen.build(shared_model("mnist8"), input_range=(0, 255))
    x = np.random.default_rng(0).uniform(0, 255, size=(64, 1, 28, 28))
    integer, simulated = project.run(x), project.run_simulated(x)
    assert (integer.argmax(1) == simulated.argmax(1)).mean() >= 0.95
    float_out = run_float(project.qgraph.graph, x)[project.qgraph.graph.output]
    assert (integer.argmax(1) == float_out.argmax(1)).mean() >= 0.9


def test_verify_detects_a_tampered_constant_and_names_the_layer(tmp_path, host_cc):
    out = tmp_path / "proj"
    project = mcugen.build(shared_model("mnist8"), out=out, input_range=(0, 255))
    step = project.schedule.steps[2]                       # the second Conv
    source = (out / "model.c").read_text()
    marker = f"static const int32_t {step.name}_bias["
    start = source.index(marker)
    first_value = source.index("{", start) + 1
    end = source.index(",", first_value)
    value = int(source[first_value:end])
    (out / "model.c").write_text(source[:first_value] + f"\n    {value + 400000}" + source[end:])
    result = compare(out, project.schedule, verify_inputs(project.schedule, 20, seed=0))
    assert result.mismatches > 0
    assert step.layer in result.first and step.name in result.first


@pytest.mark.parametrize("config", list(CONFIGS))
def test_torch_exported_example_is_bit_exact_and_accurate(config, tmp_path, host_cc):
    """examples/digits_cnn.onnx: a real torch.onnx export (Clip, LeakyRelu, Concat, residual Add,
    depthwise Conv, GlobalAveragePool), calibrated on real digits."""
    from conftest import REPO
    scheme, wbits, abits = CONFIGS[config]
    examples = REPO / "examples"
    x = np.load(examples / "digits_cnn_inputs.npy")
    labels = np.load(examples / "digits_cnn_labels.npy")
    out = tmp_path / "proj"
    project = mcugen.build(examples / "digits_cnn.onnx", out=out, scheme=scheme, wbits=wbits,
                           abits=abits, calib=x)
    result = compare(out, project.schedule, verify_inputs(project.schedule, 200, seed=2, extra=x))
    assert result.mismatches == 0, result.first
    accuracy = (project.run(x).argmax(1) == labels).mean()
    assert accuracy >= (0.9 if abits == 8 else 0.8), accuracy
