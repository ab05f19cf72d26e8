"""Attention masks before a softmax (frontend/masks.py, ops/softmax.py's masked step): causal
masks as TorchScript writes them (-inf), as dynamo writes them (float32's lowest) and as older
exports do (-1e4), with a relative position bias left as an Add, a mask shared by the heads
(stored once per row of a head) or one per head; a row with nothing kept. Each: the float IR
against onnxruntime, the C against the reference bit for bit (host under ASan/UBSan; gap8,
hls and rv32 once each)."""
import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

import mcugen
from conftest import require_tool
from mcugen.verify import compare, verify_inputs
from onnx_factory import make_model, save, tensor

node = helper.make_node
RNG = np.random.default_rng(12)
T, E, H = 6, 8, 2
LOWEST = float(np.finfo(np.float32).min)


def causal(value, heads=1):
    """[1, heads, T, T]: 0 on and below the diagonal, `value` above."""
    mask = np.where(np.tril(np.ones((T, T))) > 0, 0.0, value)
    return np.broadcast_to(mask, (1, heads, T, T)).copy()


def attention(mask):
    """x [1, T, E] -> Q, K, V -> 2 heads -> softmax(Q K^T + mask) V -> a Linear."""
    d = E // H
    nodes = []
    for name, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
        nodes += [node("MatMul", ["x", f"w{name}"], [f"{name}0"], name=f"{name}_proj"),
                  node("Reshape", [f"{name}0", "split"], [f"{name}1"], name=f"{name}_split"),
                  node("Transpose", [f"{name}1"], [name], perm=perm, name=f"{name}_heads")]
    nodes += [node("MatMul", ["q", "k"], ["scores"], name="qk"),
              node("Add", ["scores", "mask"], ["masked"], name="add_mask"),
              node("Softmax", ["masked"], ["probs"], axis=-1, name="softmax"),
              node("MatMul", ["probs", "v"], ["ctx"], name="av"),
              node("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3], name="merge"),
              node("Reshape", ["ctx_t", "merged"], ["m"], name="merged"),
              node("MatMul", ["m", "wo"], ["y"], name="out_proj")]
    inits = [(f"w{n}", RNG.normal(size=(E, E)) * 0.5) for n in "qkvo"] + [("mask", mask)]
    model = make_model(nodes, [tensor("x", [1, T, E])], [tensor("y", [1, T, E])], inits)
    for name, value in (("split", [1, T, H, d]), ("merged", [1, T, E])):
        model.graph.initializer.append(numpy_helper.from_array(np.array(value, dtype=np.int64), name))
    return model


def relative_bias():
    """A causal mask (-inf) plus a finite bias per head (T5's relative positions)."""
    return causal(-np.inf, H) + RNG.normal(size=(1, H, T, T)) * 0.5


def per_head_mask():
    """Head 0 causal, head 1 every token but the last: the mask differs between the heads."""
    mask = causal(LOWEST, H)
    mask[0, 1] = 0.0
    mask[0, 1, :, -1] = LOWEST
    return mask


CASES = {"torchscript_inf": lambda: causal(-np.inf), "dynamo_lowest": lambda: causal(LOWEST),
         "older_1e4": lambda: causal(-1e4), "relative_bias": relative_bias,
         "per_head": per_head_mask}


@pytest.mark.parametrize("name", sorted(CASES))
def test_masked_attention_matches_onnxruntime_and_the_c_is_bit_exact(name, tmp_path, host_cc):
    path = save(attention(CASES[name]().astype(np.float32)), tmp_path / f"{name}.onnx")
    x = RNG.uniform(-1, 1, size=(4, T, E)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = np.concatenate([session.run(None, {"x": xi[None]})[0] for xi in x])
    project = mcugen.build(path, out=tmp_path / "out", input_range=(-1.0, 1.0))
    graph = project.qgraph.graph
    from mcugen.reference.float_ir import run_float
    np.testing.assert_allclose(run_float(graph, x.astype(np.float64))[graph.output], want,
                               rtol=1e-5, atol=1e-5)
    step = next(s for s in project.schedule.steps if s.kind == "softmax")
    assert step.params["masked"] == 1
    assert step.params["mask_rows"] == (H * T if name == "per_head" else T)
    assert ("add" in [s.kind for s in project.schedule.steps]) == (name == "relative_bias")
    result = compare(tmp_path / "out", project.schedule, verify_inputs(project.schedule, 30, seed=2),
                     sanitize=True, on="host")
    assert result.mismatches == 0, result.first


def test_a_row_with_nothing_kept_is_all_zero(tmp_path, host_cc):
    """onnxruntime's softmax of a row of -inf is NaN, which dynamo's guard turns into 0: the
    float IR and the integer step give 0."""
    mask = causal(-np.inf)
    mask[0, 0, 2, :] = -np.inf
    path = save(attention(mask.astype(np.float32)), tmp_path / "empty_row.onnx")
    project = mcugen.build(path, out=tmp_path / "out", input_range=(-1.0, 1.0))
    x = RNG.uniform(-1, 1, size=(3, T, E))
    graph = project.qgraph.graph
    from mcugen.reference.float_ir import run_float
    probs = run_float(graph, x)[next(n.output for n in graph.nodes if n.op == "Softmax")]
    assert np.all(probs[:, :, 2, :] == 0)
    result = compare(tmp_path / "out", project.schedule, verify_inputs(project.schedule, 20, seed=3),
                     sanitize=True, on="host")
    assert result.mismatches == 0, result.first


@pytest.mark.parametrize("target, on", [("gap8", "host"), ("hls", "host"), ("rv32", "qemu")])
def test_masked_softmax_on_every_target(target, on, tmp_path, host_cc):
    if target == "rv32":
        require_tool("riscv64-unknown-elf-gcc")
        require_tool("qemu-system-riscv32")
    path = save(attention(per_head_mask().astype(np.float32)), tmp_path / "m.onnx")
    project = mcugen.build(path, target=target, out=tmp_path / target, input_range=(-1.0, 1.0))
    result = compare(tmp_path / target, project.schedule, verify_inputs(project.schedule, 3, seed=5),
                     on=on)
    assert result.mismatches == 0, result.first
