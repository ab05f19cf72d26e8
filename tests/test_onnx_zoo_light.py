"""The "light" zoo models shipped in the onnx wheel (AlexNet, DenseNet-121, Inception v1/v2,
ResNet-50, ShuffleNet, SqueezeNet, VGG-19, ZFNet-512: the real graphs with every weight one
constant) with their stored expected output.

Each model either imports, with the float IR equal to the stored output and, with its weights
redrawn at random (so channels differ), to onnxruntime; or is refused with one MCUGenError
line naming the node and op, for the reason tests/expected_refusals.toml pins for the model
([[onnx_zoo_light]]; `python3 tests/test_onnx_zoo_light.py` prints the current refusals in that
form): a refusal not listed, one whose message no longer matches its reason and a listed model
that now goes through all fail. The quantized build takes 30-60 s for the big models (224x224
inputs through numpy): CI builds SqueezeNet, MCUGEN_SLOW=1 builds every model.
"""
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest

import mcugen
from refusals import check_pinned, check_pinned_names, pinned_refusals, refusal_groups
from onnx_suite import (float_ir_output, light_expected, light_input, light_input_value,
                        light_models, light_with_random_weights, outcome)

MODELS = light_models()
SLOW = os.environ.get("MCUGEN_SLOW", "") == "1"
# onnx's own tolerances for these models (DenseNet sums more terms)
RTOL = {"light_densenet121": 2e-3}
REFUSAL = re.compile(r"^node '[^']+' \((\w+)\): \S")


def ids(paths):
    return [p.stem for p in paths]


# the quantized build takes 30-60 s for the big ones: CI builds the fast one, and
# `MCUGEN_SLOW=1 python3 -m pytest tests/test_onnx_zoo_light.py` (bench/README.md) builds all
QUANTIZED = MODELS if SLOW else [p for p in MODELS if p.stem == "light_squeezenet"]
# the models each test may run (the quantized one runs every model with MCUGEN_SLOW=1)
TESTS = {"float_ir": ids(MODELS), "quantized": ids(MODELS)}


PINNED, UNKNOWN = pinned_refusals("onnx_zoo_light", TESTS)


def test_pinned_refusals_name_light_models_with_valid_reasons():
    check_pinned_names(PINNED, UNKNOWN)


def assert_names_node_and_op(message, model):
    line = message.strip()
    assert "\n" not in line, f"not one line: {message!r}"
    match = REFUSAL.match(line)
    assert match, f"the refusal does not start with node '<name>' (<op>): {line}"
    assert match.group(1) in {n.op_type for n in model.graph.node}, line


def onnxruntime_outputs(model, x):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3        # unused shape initializers are only warnings
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    name = light_input_value(model).name
    return np.concatenate([session.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def random_inputs(model, n, seed):
    shape = light_input(model).shape
    return np.random.default_rng(seed).uniform(0.0, 1.0, (n,) + shape[1:]).astype(np.float32)


@pytest.mark.parametrize("path", MODELS, ids=ids(MODELS))
def test_light_model_float_ir_or_clean_refusal(path, record_property):
    model = onnx.load(str(path))
    x = light_input(model)
    kind, value = outcome(lambda: float_ir_output(model, x)[1])
    assert kind != "internal", f"{path.stem}: internal error, not an MCUGenError: {value}"
    check_pinned(PINNED, "float_ir", path.stem, kind, value)
    if kind == "refused":
        record_property("refused", value)
        assert_names_node_and_op(value, model)
        return
    expected = light_expected(path)
    assert value.size == expected.size, f"{value.shape} vs stored {expected.shape}"
    np.testing.assert_allclose(value.reshape(expected.shape), expected,
                               rtol=RTOL.get(path.stem, 1e-3), atol=1e-7)

    redrawn = light_with_random_weights(model)
    x = random_inputs(model, 2, seed=1)
    ours = float_ir_output(redrawn, x)[1]
    theirs = onnxruntime_outputs(redrawn, x)
    np.testing.assert_allclose(ours.reshape(theirs.shape), theirs, rtol=1e-4,
                               atol=1e-5 * float(np.abs(theirs).max()))


def quantized_build(path, tmp_path):
    """(the model with redrawn weights, outcome of its uniform W8A8 build calibrated on two
    random inputs)."""
    redrawn = light_with_random_weights(onnx.load(str(path)))
    onnx.save(redrawn, str(tmp_path / "m.onnx"))
    calib = random_inputs(redrawn, 2, seed=2)
    return (redrawn,) + outcome(lambda: mcugen.build(tmp_path / "m.onnx", scheme="uniform",
                                                     wbits=8, abits=8, calib=calib))


@pytest.mark.parametrize("path", QUANTIZED, ids=ids(QUANTIZED))
def test_light_model_quantized_agrees_with_float(path, tmp_path, record_property):
    """Uniform W8A8 of the model with redrawn weights, calibrated on two random inputs: the
    integer reference picks the float model's class on most of four other inputs."""
    redrawn, kind, project = quantized_build(path, tmp_path)
    assert kind != "internal", f"{path.stem}: internal error, not an MCUGenError: {project}"
    check_pinned(PINNED, "quantized", path.stem, kind, project)
    if kind == "refused":
        record_property("refused", project)
        assert_names_node_and_op(project, redrawn)
        return
    x = random_inputs(redrawn, 4, seed=3)
    ours = float_ir_output(redrawn, x)[1].reshape(len(x), -1)
    integer = project.run(x).reshape(len(x), -1)
    agreement = float((ours.argmax(1) == integer.argmax(1)).mean())
    error = float(np.abs(integer - ours).max() / np.abs(ours).max())
    record_property("top1_agreement", agreement)
    record_property("max_error_relative", error)
    print(f"{path.stem}: integer vs float top-1 agreement {agreement:.2f}, max error {error:.3g}")
    assert agreement >= 0.75, f"{path.stem}: top-1 agreement {agreement:.2f}, max error {error:.3g}"


def print_refusals():
    """Every model's refusals now (the quantized build of every model, as MCUGEN_SLOW=1 runs
    it), as the [[onnx_zoo_light]] groups of tests/expected_refusals.toml."""
    refused = {test: {} for test in TESTS}
    for path in MODELS:
        model = onnx.load(str(path))
        found = {"float_ir": outcome(lambda: float_ir_output(model, light_input(model))[1])}
        with tempfile.TemporaryDirectory() as tmp:
            found["quantized"] = quantized_build(path, Path(tmp))[1:]
        for test, (kind, value) in found.items():
            if kind == "refused":
                refused[test][path.stem] = value
    print(refusal_groups("onnx_zoo_light", refused, PINNED, TESTS))


if __name__ == "__main__":
    print_refusals()
