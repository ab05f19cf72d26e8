"""A transformer's Linear over tokens, MatMul([1, T, K], W[K, M]) + bias: lowered as a 1x1 Conv
over the features (ops/gemm.py token_linear), the bias fused in (frontend/linear.py), the
transposes between consecutive Linears cancelled and elementwise activations fused
(passes/rewrites.py): float IR against onnxruntime, the C bit for bit under ASan/UBSan, and the
steps it becomes."""
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import mcugen
from mcugen.frontend.onnx_reader import import_model
from mcugen.verify import compare, verify_inputs
from onnx_factory import float_ir_matches_onnxruntime, make_model, save, tensor

node = helper.make_node
RNG = np.random.default_rng(3)
IN_SHAPE = [1, 1, 6, 6]
T, D, HIDDEN = 9, 4, 8        # 3x3 patches of 4 features; the MLP's hidden width


def mlp_model(activation="Tanh", heads_axis=False):
    """Patches (a 2x2 stride-2 Conv) -> tokens [1, T, D] -> MatMul+bias -> activation ->
    MatMul+bias -> residual Add -> Flatten -> Gemm. `heads_axis`: the tokens as [1, 1, T, D]."""
    tokens = [1, 1, T, D] if heads_axis else [1, T, D]
    nodes = [node("Conv", ["x", "pw", "pb"], ["p"], name="patches", kernel_shape=[2, 2], strides=[2, 2]),
             node("Reshape", ["p", "flat_shape"], ["pf"], name="flatten_patches"),
             node("Transpose", ["pf"], ["tok"], name="to_tokens", perm=[0, 2, 1]),
             node("Reshape", ["tok", "tok_shape"], ["t0"], name="tokens"),
             node("MatMul", ["t0", "w1"], ["h1"], name="fc1"), node("Add", ["h1", "b1"], ["h2"], name="fc1_bias"),
             node(activation, ["h2"], ["h3"], name="act"),
             node("MatMul", ["h3", "w2"], ["h4"], name="fc2"), node("Add", ["b2", "h4"], ["h5"], name="fc2_bias"),
             node("Add", ["t0", "h5"], ["r"], name="residual"),
             node("Flatten", ["r"], ["f"], name="flat"),
             node("Gemm", ["f", "gw", "gb"], ["y"], name="head", transB=1)]
    inits = [("pw", RNG.normal(size=(D, 1, 2, 2))), ("pb", RNG.normal(size=D) * 0.1),
             ("w1", RNG.normal(size=(D, HIDDEN)) * 0.5), ("b1", RNG.normal(size=HIDDEN) * 0.1),
             ("w2", RNG.normal(size=(HIDDEN, D)) * 0.5), ("b2", RNG.normal(size=(1, D)) * 0.1),
             ("gw", RNG.normal(size=(3, T * D))), ("gb", RNG.normal(size=3))]
    model = make_model(nodes, [tensor("x", IN_SHAPE)], [tensor("y", [1, 3])], inits)
    model.graph.initializer.extend([numpy_helper.from_array(np.array([1, D, T]), "flat_shape"),
                                    numpy_helper.from_array(np.array(tokens), "tok_shape")])
    return model


def check_float_ir(path):
    float_ir_matches_onnxruntime(path, RNG.uniform(-1, 1, size=[4] + IN_SHAPE[1:]))


@pytest.mark.parametrize("activation", ["Tanh", "Relu"])
@pytest.mark.parametrize("heads_axis", [False, True])
def test_token_mlp_is_bit_exact_and_lowers_to_convs(activation, heads_axis, tmp_path, host_cc):
    path = save(mlp_model(activation, heads_axis), tmp_path / "mlp.onnx")
    check_float_ir(path)
    for scheme, wbits, abits in (("power", 4, 8), ("uniform", 8, 8)):
        out = tmp_path / f"{scheme}{wbits}"
        project = mcugen.build(path, out=out, scheme=scheme, wbits=wbits, abits=abits,
                               input_range=(-1.0, 1.0), first_last_bits="same")
        kinds = [s.kind for s in project.schedule.steps]
        # patches conv, to tokens, into features, fc1 (+bias, +activation), fc2, back to
        # tokens, residual add, head: one transpose each way around the MLP, none between
        assert kinds == ["conv2d", "transpose", "transpose", "conv2d", "conv2d", "transpose",
                         "add", "dense"], kinds
        result = compare(out, project.schedule, verify_inputs(project.schedule, 40, seed=2),
                         sanitize=True)
        assert result.mismatches == 0, result.first


def test_token_linear_runs_on_gap8_and_hls(tmp_path, host_cc):
    path = save(mlp_model(), tmp_path / "mlp.onnx")
    for target in ("gap8", "hls"):
        out = tmp_path / target
        project = mcugen.build(path, out=out, target=target, input_range=(-1.0, 1.0))
        result = compare(out, project.schedule, verify_inputs(project.schedule, 4, seed=2))
        assert result.mismatches == 0, f"{target}: {result.first}"


def test_a_bias_that_varies_by_token_is_not_a_linear_bias(tmp_path):
    """Add of a [T, M] constant after the MatMul is no bias: it stays an Add of a constant."""
    model = mlp_model()
    b1 = next(i for i in model.graph.initializer if i.name == "b1")
    b1.CopyFrom(numpy_helper.from_array(RNG.normal(size=(T, HIDDEN)).astype(np.float32), "b1"))
    path = save(model, tmp_path / "mlp.onnx")
    check_float_ir(path)
    project = mcugen.build(path, input_range=(-1.0, 1.0))
    assert "constant" in [s.kind for s in project.schedule.steps]


def attention_model(heads=2, shared_v=False):
    """Tokens [1, T, D] -> Q, K, V Linears -> heads [1, H, T, D/H] -> Q K^T (K transposed by a
    Transpose, as exporters write it) * scale -> Sigmoid (a stand-in for softmax) -> A V ->
    tokens -> Flatten -> Gemm. `shared_v`: V is one head shared by all ([1, 1, T, D/H])."""
    dh = D // heads
    nodes = [node("Conv", ["x", "pw", "pb"], ["p"], name="patches", kernel_shape=[2, 2], strides=[2, 2]),
             node("Reshape", ["p", "flat_shape"], ["pf"], name="flatten_patches"),
             node("Transpose", ["pf"], ["t0"], name="to_tokens", perm=[0, 2, 1])]
    for name in ("q", "k", "v"):
        nodes += [node("MatMul", ["t0", f"w{name}"], [f"{name}0"], name=f"{name}_proj"),
                  node("Reshape", [f"{name}0", "v_heads_shape" if shared_v and name == "v" else "heads_shape"],
                       [f"{name}1"], name=f"{name}_heads"),
                  node("Transpose", [f"{name}1"], [f"{name}2"], name=f"{name}_perm", perm=[0, 2, 1, 3])]
    nodes += [node("Transpose", ["k2"], ["kt"], name="k_transposed", perm=[0, 1, 3, 2]),
              node("MatMul", ["q2", "kt"], ["s0"], name="scores"),
              node("Mul", ["s0", "scale"], ["s1"], name="scaled"),
              node("Sigmoid", ["s1"], ["att"], name="weights"),
              node("MatMul", ["att", "v2"], ["o0"], name="mix"),
              node("Transpose", ["o0"], ["o1"], name="o_perm", perm=[0, 2, 1, 3]),
              node("Reshape", ["o1", "tok_shape"], ["o2"], name="merge_heads"),
              node("Flatten", ["o2"], ["f"], name="flat"),
              node("Gemm", ["f", "gw", "gb"], ["y"], name="head", transB=1)]
    v_out = dh if shared_v else D
    inits = [("pw", RNG.normal(size=(D, 1, 2, 2))), ("pb", RNG.normal(size=D) * 0.1),
             ("wq", RNG.normal(size=(D, D)) * 0.5), ("wk", RNG.normal(size=(D, D)) * 0.5),
             ("wv", RNG.normal(size=(D, v_out)) * 0.5), ("scale", np.array(1.0 / np.sqrt(dh))),
             ("gw", RNG.normal(size=(3, T * D))), ("gb", RNG.normal(size=3))]
    model = make_model(nodes, [tensor("x", IN_SHAPE)], [tensor("y", [1, 3])], inits)
    model.graph.initializer.extend([
        numpy_helper.from_array(np.array([1, D, T]), "flat_shape"),
        numpy_helper.from_array(np.array([1, T, heads, dh]), "heads_shape"),
        numpy_helper.from_array(np.array([1, T, 1, dh]), "v_heads_shape"),
        numpy_helper.from_array(np.array([1, T, D]), "tok_shape")])
    return model


@pytest.mark.parametrize("shared_v", [False, True])
def test_attention_matmuls_of_two_activations_are_bit_exact(shared_v, tmp_path, host_cc):
    path = save(attention_model(shared_v=shared_v), tmp_path / "att.onnx")
    check_float_ir(path)
    for scheme, wbits, abits in (("power", 4, 8), ("uniform", 8, 8)):
        out = tmp_path / f"{scheme}{wbits}"
        project = mcugen.build(path, out=out, scheme=scheme, wbits=wbits, abits=abits,
                               input_range=(-1.0, 1.0), first_last_bits="same")
        matmuls = [s for s in project.schedule.steps if s.kind == "matmul"]
        assert len(matmuls) == 2 and matmuls[0].params["heads"] == 2
        assert (matmuls[1].params["b_head"] == 0) == shared_v
        result = compare(out, project.schedule, verify_inputs(project.schedule, 30, seed=2),
                         sanitize=True)
        assert result.mismatches == 0, result.first


def test_attention_runs_on_gap8_and_hls(tmp_path, host_cc):
    path = save(attention_model(), tmp_path / "att.onnx")
    for target in ("gap8", "hls"):
        out = tmp_path / target
        project = mcugen.build(path, out=out, target=target, input_range=(-1.0, 1.0))
        result = compare(out, project.schedule, verify_inputs(project.schedule, 4, seed=2))
        assert result.mismatches == 0, f"{target}: {result.first}"


def test_the_nan_guard_around_attention_weights_is_dropped(tmp_path, host_cc):
    """dynamo's sdpa writes Where(IsNaN(p), 0, p) after the softmax: nothing is NaN in
    integers, so the guard goes (the float IR still equals onnxruntime) and the rest builds."""
    model = attention_model()
    graph = model.graph
    at = next(i for i, n in enumerate(graph.node) if n.output[0] == "att")
    graph.node[at].output[0] = "att_raw"
    graph.node.insert(at + 1, node("IsNaN", ["att_raw"], ["nan"], name="isnan"))
    graph.node.insert(at + 2, node("Where", ["nan", "zero", "att_raw"], ["att"], name="guard"))
    graph.initializer.append(numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"))
    path = save(model, tmp_path / "guarded.onnx")
    check_float_ir(path)
    ops = [n.op for n in import_model(onnx.load(str(path))).nodes]
    assert "Where" not in ops and "IsNaN" not in ops
    out = tmp_path / "p"
    project = mcugen.build(path, out=out, input_range=(-1.0, 1.0))
    assert compare(out, project.schedule, verify_inputs(project.schedule, 10, seed=2)).mismatches == 0
