"""The squeeze-excitation examples (examples/make_se_digits.py: a MobileNetV3-style and an
EfficientNet-style network, each exported by torch's dynamo exporter and by TorchScript at
opsets 13 and 17) build from every export on every target and run bit-exact there: the host
(one under ASan/UBSan), RV32 under qemu, GAP8 (the PMSIS emulation) and the HLS C simulation.
Accuracy against float is bench/se_examples.py's."""
from pathlib import Path

import numpy as np
import onnx
import pytest

import mcugen
from mcugen.reference.float_ir import run_float
from conftest import require_tool
from mcugen.verify import compare

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FILES = sorted(EXAMPLES.glob("se_*.onnx"))
INPUTS = np.load(EXAMPLES / "se_digits_inputs.npy")
# target -> (where it runs, inputs, the tools it needs)
RUNS = {"host": ("host", 64, ()), "rv32": ("qemu", 16, ("riscv64-unknown-elf-gcc", "qemu-system-riscv32")),
        "gap8": ("host", 16, ()), "hls": ("host", 2, ("g++",))}


def test_every_network_has_three_exports():
    names = {path.stem for path in FILES}
    assert names == {f"se_{net}_{export}" for net in ("mbv3", "effnet")
                     for export in ("dynamo", "ts13", "ts17")}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_the_export_writes_what_the_example_is_about(path):
    """The dynamo exports hold the ReduceMean global pool, the opset-13 MobileNetV3 export
    the x * HardSigmoid(x) HardSwish, every export the broadcast Mul of the SE gates."""
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "Mul" in ops
    assert ("ReduceMean" in ops) == ("dynamo" in path.stem)
    if path.stem == "se_mbv3_ts13":
        assert "HardSwish" not in ops and "HardSigmoid" in ops


def broadcast_muls(path):
    """The ONNX Mul nodes of two tensors of different shapes (the SE gates), by onnx's own
    shape inference."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.value_info) + list(model.graph.input)}
    return [n for n in model.graph.node if n.op_type == "Mul" and
            all(i in shapes for i in n.input) and shapes[n.input[0]] != shapes[n.input[1]]]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_the_se_gates_lower_to_broadcast_muls(path):
    project = mcugen.build(path, calib=INPUTS)
    muls = [s for s in project.schedule.steps if s.kind == "mul"]
    assert len(muls) == len(broadcast_muls(path))
    for step in muls:
        assert 0 in step.params["b_strides"] or 0 in step.params["a_strides"]
    kinds = {s.kind for s in project.schedule.steps}
    assert "recode" not in kinds, "an activation stood alone: a pattern was not fused"
    float_ir = run_float(project.qgraph.graph, INPUTS)[project.qgraph.graph.output]
    labels = np.load(EXAMPLES / "se_digits_labels.npy")
    integer = np.asarray(project.run(INPUTS)).reshape(len(INPUTS), -1)
    assert np.mean(float_ir.reshape(len(INPUTS), -1).argmax(1) == labels) >= 0.95
    assert np.mean(integer.argmax(1) == float_ir.reshape(len(INPUTS), -1).argmax(1)) >= 0.95


@pytest.mark.parametrize("target", sorted(RUNS))
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_generated_code_is_bit_exact(path, target, tmp_path, host_cc):
    on, n, tools = RUNS[target]
    for tool in tools:
        require_tool(tool)
    project = mcugen.build(path, target=target, out=tmp_path / "p", calib=INPUTS)
    sanitize = target == "host" and path.stem == "se_mbv3_dynamo"
    result = compare(tmp_path / "p", project.schedule, INPUTS[:n], sanitize=sanitize, on=on)
    assert result.n == n and result.mismatches == 0, result.first
