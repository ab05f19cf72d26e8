"""Every encoder, end to end: models with every activation (the torch-trained example and small
conv graphs through Add and AveragePool) build with threshold (where it applies), lut, pade and
auto, and the generated C is bit-exact on the host (under the sanitizers), on RV32 under qemu
and in the GAP8 emulation. An encoder may refuse a model only for an activation it declares it
cannot realize (Encoder.supports), and must then say so; lut and auto build every model."""
from pathlib import Path

import numpy as np
import pytest
from onnx import helper

import mcugen
from conftest import require_tool
from mcugen.errors import MCUGenError
from mcugen.lower.encoders import ENCODERS as REALIZATIONS
from mcugen.ops import get_op
from mcugen.verify import compare, verify_inputs
from onnx_factory import make_model, save, tensor

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "act_digits.onnx"
ENCODERS = ("threshold", "lut", "pade", "auto")
RNG = np.random.default_rng(11)


OPSET = {"HardSwish": 14, "Mish": 18}         # the first opset that has the op


def residual_model(tmp_path, activation, attrs=None):
    """conv -> act -> conv -> (+ skip) -> act -> AveragePool -> Gemm: every encoding step kind."""
    w = lambda *s: RNG.normal(scale=0.4, size=s).astype(np.float32)
    act = lambda src, dst: helper.make_node(activation, [src], [dst], **(attrs or {}))
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]), act("c1", "a1"),
             helper.make_node("Conv", ["a1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c2", "a1"], ["s"]), act("s", "a2"),
             helper.make_node("AveragePool", ["a2"], ["p"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                              strides=[2, 2], count_include_pad=0),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "w3"], ["y"], transB=1)]
    model = make_model(nodes, [tensor("x", [1, 2, 6, 6])], [tensor("y", [1, 3])],
                       [("w1", w(4, 2, 3, 3)), ("w2", w(4, 4, 3, 3)), ("w3", w(3, 36))],
                       opset=OPSET.get(activation, 13))
    return save(model, tmp_path / f"res_{activation}.onnx")


def build(path, out, encoder, target="host", **kw):
    options = dict(wbits=4, abits=8, input_range=(-2.0, 2.0))
    options.update(kw)
    return mcugen.build(str(path), out=out, target=target, encoder=encoder, **options)


def declined(encoder, reference):
    """The activations of a model that `encoder` declares it cannot realize (its supports()),
    read from `reference()`, a project of the same model built by an encoder that takes any."""
    if encoder not in REALIZATIONS:          # auto picks among the realizations per step
        return []
    specs = [node.attrs.get("activation") for node in reference().qgraph.graph.nodes
             if get_op(node.op).applies_activation]
    return [spec for spec in specs if not REALIZATIONS[encoder].supports(spec)]


def build_unless_declined(path, out, encoder, reference, **kw):
    """The project `encoder` builds, or None when it refuses an activation it declares it
    cannot realize (with the error saying so); any other refusal, or a build despite the
    declaration, fails."""
    unsupported = declined(encoder, reference)
    try:
        project = build(path, out, encoder, **kw)
    except MCUGenError as exc:
        message = str(exc)
        assert unsupported, f"{encoder} refuses a model whose activations it supports: {message}"
        assert any(f"the {encoder} encoder cannot realize activation {spec[0]} " in message
                   for spec in unsupported), (unsupported, message)
        assert REALIZATIONS[encoder].realizes in message, message
        return None
    assert not unsupported, f"{encoder} builds activations it declares unsupported: {unsupported}"
    return project


def built_projects(path, tmp_path):
    """encoder -> the project it builds in tmp_path/<encoder>, for every encoder but those that
    decline one of the model's activations (build_unless_declined)."""
    projects = {"lut": build(path, tmp_path / "lut", "lut")}
    for name in ENCODERS:
        if name not in projects:
            project = build_unless_declined(path, tmp_path / name, name, lambda: projects["lut"])
            if project is not None:
                projects[name] = project
    return projects


@pytest.mark.parametrize("activation, attrs", [("Tanh", None), ("Sigmoid", None), ("HardSwish", None),
                                               ("LeakyRelu", {"alpha": -0.2}), ("Relu", None),
                                               ("Softplus", None), ("Elu", {"alpha": 0.7}),
                                               ("Mish", None), ("Selu", None), ("HardSigmoid", None)])
def test_every_encoder_is_bit_exact_on_the_host_with_sanitizers(activation, attrs, tmp_path, host_cc):
    path = residual_model(tmp_path, activation, attrs)
    projects = built_projects(path, tmp_path)
    assert {"lut", "auto"} <= set(projects)
    for name, project in projects.items():
        used = {s.params["encoder"] for s in project.schedule.steps if "encoder" in s.params}
        assert used <= set(ENCODERS) - {"auto"} and (name == "auto" or used == {name}), (name, used)
        out = tmp_path / name
        result = compare(out, project.schedule, verify_inputs(project.schedule, 200, seed=3), sanitize=True)
        assert result.mismatches == 0, (name, result.first)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_the_activation_example_is_bit_exact_on_every_target(encoder, tmp_path, host_cc):
    for tool in ("riscv64-unknown-elf-gcc", "qemu-system-riscv32"):
        require_tool(tool)
    calib = np.load(EXAMPLE.with_name("act_digits_inputs.npy"))[:64]
    project = build_unless_declined(EXAMPLE, tmp_path / "host", encoder,
                                    lambda: build(EXAMPLE, None, "lut", calib=calib), calib=calib)
    if project is None:
        return
    x = verify_inputs(project.schedule, 100, seed=2)
    assert compare(tmp_path / "host", project.schedule, x).mismatches == 0
    rv = build(EXAMPLE, tmp_path / "rv32", encoder, target="rv32", calib=calib)
    assert compare(tmp_path / "rv32", rv.schedule, x[:12], on="qemu").mismatches == 0
    g8 = build(EXAMPLE, tmp_path / "gap8", encoder, target="gap8", calib=calib)
    assert compare(tmp_path / "gap8", g8.schedule, x[:20]).mismatches == 0


@pytest.mark.parametrize("encoder", ("lut", "pade", "auto"))
def test_the_residual_graph_is_bit_exact_in_the_gap8_emulation(encoder, tmp_path, host_cc):
    path = residual_model(tmp_path, "LeakyRelu", {"alpha": 0.1})
    project = build(path, tmp_path / "gap8", encoder, target="gap8")
    steps = [s for s in project.schedule.steps if "encoder" in s.params]
    assert {s.kind for s in steps} >= {"conv2d", "add", "avgpool"}
    result = compare(tmp_path / "gap8", project.schedule, verify_inputs(project.schedule, 30, seed=4))
    assert result.mismatches == 0, result.first
