"""Tensors whose batch axis is not first at batch 1 (frontend/batch_axis.py), on small hand-made
graphs: nn.MultiheadAttention's [T, 1, E] layout with its 5-D qkv permute, Gather on axis 0 and
a Gemm over 2-D tokens; heads folded into axis 0; Slice, Split, Concat, reductions, LayerNorm
and a constant operand in that layout; a sequence-first input [T, 1, E]. Each graph's float IR
against onnxruntime, the generated C against the reference bit for bit under ASan/UBSan, a
model already batch-first left as it was, and a Conv on a moved batch axis (or on a fixed batch
read as a sequence) refused in one line."""
import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import helper, numpy_helper

import mcugen
from mcugen.errors import MCUGenError
from mcugen.frontend.batch_axis import batch_axis_first, canonical
from mcugen.reference.float_ir import run_float
from mcugen.verify import compare, verify_inputs
from onnx_factory import conv_relu_gemm, float_ir_matches_onnxruntime, make_model, save, tensor

node = helper.make_node
RNG = np.random.default_rng(5)
T, E, H = 5, 8, 2


def with_ints(model, ints):
    for name, value in ints:
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=np.int64), name))
    return model


def attention_in_token_first_layout():
    """x [1, T, E] -> [T, 1, E] -> qkv Linear -> the 5-D permute -> q, k, v by Gather on axis 0
    -> heads folded into axis 0 -> softmax(q k^T) v -> Gemm over [T, E] -> back to [1, T, 6]."""
    d = E // H
    nodes = [node("Transpose", ["x"], ["tbe"], perm=[1, 0, 2], name="to_tbe"),
             node("MatMul", ["tbe", "w_in"], ["qkv0"], name="in_proj"),
             node("Add", ["qkv0", "b_in"], ["qkv"], name="in_bias"),
             node("Reshape", ["qkv", "s5"], ["qkv5"], name="split_qkv"),
             node("Unsqueeze", ["qkv5", "zero"], ["qkv6"], name="unsq"),
             node("Transpose", ["qkv6"], ["perm"], perm=[3, 1, 2, 0, 4], name="permute"),
             node("Squeeze", ["perm", "three"], ["sq"], name="squeeze")]
    for i, name in enumerate("qkv"):
        nodes += [node("Gather", ["sq", f"i{i}"], [f"{name}0"], axis=0, name=f"select_{name}"),
                  node("Reshape", [f"{name}0", "s_heads"], [f"{name}1"], name=f"heads_{name}")]
    nodes += [node("Transpose", ["q1"], ["q"], perm=[1, 0, 2], name="q_t"),
              node("Transpose", ["k1"], ["kt"], perm=[1, 2, 0], name="k_t"),
              node("Transpose", ["v1"], ["v"], perm=[1, 0, 2], name="v_t"),
              node("MatMul", ["q", "kt"], ["scores"], name="qk"),
              node("Softmax", ["scores"], ["attn"], axis=-1, name="softmax"),
              node("MatMul", ["attn", "v"], ["ctx"], name="av"),
              node("Transpose", ["ctx"], ["ctx_t"], perm=[1, 0, 2], name="merge"),
              node("Reshape", ["ctx_t", "s_tokens"], ["tokens"], name="tokens"),
              node("Gemm", ["tokens", "w_out", "b_out"], ["out"], transB=1, name="out_proj"),
              node("Reshape", ["out", "s_back"], ["out3"], name="unflatten"),
              node("Transpose", ["out3"], ["y"], perm=[1, 0, 2], name="to_bte")]
    inits = [("w_in", RNG.normal(size=(E, 3 * E)) * 0.4), ("b_in", RNG.normal(size=3 * E) * 0.1),
             ("w_out", RNG.normal(size=(6, E)) * 0.4), ("b_out", RNG.normal(size=6) * 0.1)]
    model = make_model(nodes, [tensor("x", [1, T, E])], [tensor("y", [1, T, 6])], inits, opset=17)
    return with_ints(model, [("s5", [T, 1, 3, E]), ("zero", [0]), ("three", [3]), ("i0", 0), ("i1", 1),
                             ("i2", 2), ("s_heads", [T, H, d]), ("s_tokens", [T, E]),
                             ("s_back", [T, 1, 6])])


def token_first_misc():
    """[T, 1, E] through an Add of a constant laid out like it, LayerNorm, Slice, Split, Concat on
    axis 0, ReduceMean over the tokens and ReduceMax over the features, into one output."""
    nodes = [node("Transpose", ["x"], ["tbe"], perm=[1, 0, 2], name="to_tbe"),
             node("Add", ["tbe", "pos"], ["a"], name="add_pos"),
             node("LayerNormalization", ["a", "gamma", "beta"], ["ln"], axis=-1, name="ln"),
             node("Slice", ["ln", "st", "en", "ax"], ["s"], name="slice"),
             node("Split", ["ln", "sizes"], ["p0", "p1"], axis=0, name="split"),
             node("Concat", ["s", "p1", "p0"], ["cat"], axis=0, name="cat"),
             node("ReduceMean", ["cat"], ["mean"], axes=[0], keepdims=0, name="mean"),
             node("ReduceMax", ["ln"], ["peak"], axes=[2], keepdims=1, name="peak"),
             node("Reshape", ["peak", "s_peak"], ["peak2"], name="peak_flat"),
             node("Concat", ["mean", "peak2"], ["feat"], axis=1, name="features"),
             node("Gemm", ["feat", "gw", "gb"], ["y"], transB=1, name="fc")]
    inits = [("pos", RNG.normal(size=(T, 1, E)) * 0.3), ("gamma", RNG.uniform(0.5, 1.5, size=E)),
             ("beta", RNG.normal(size=E) * 0.1), ("gw", RNG.normal(size=(3, E + T))), ("gb", RNG.normal(size=3))]
    model = make_model(nodes, [tensor("x", [1, T, E])], [tensor("y", [1, 3])], inits, opset=17)
    return with_ints(model, [("st", [1]), ("en", [4]), ("ax", [0]), ("sizes", [2, 3]), ("s_peak", [1, T])])


CASES = {"attention": attention_in_token_first_layout, "misc": token_first_misc}


def inputs(n):
    return RNG.uniform(-1, 1, size=(n, T, E))


@pytest.mark.parametrize("name", sorted(CASES))
def test_float_ir_matches_onnxruntime(name, tmp_path):
    path = save(CASES[name](), tmp_path / f"{name}.onnx")
    graph = float_ir_matches_onnxruntime(path, inputs(6), 1e-5)
    assert all(graph.shapes[t][0] == 1 for t in graph.shapes)


@pytest.mark.parametrize("name", sorted(CASES))
def test_generated_c_is_bit_exact(name, tmp_path, host_cc):
    path = save(CASES[name](), tmp_path / f"{name}.onnx")
    project = mcugen.build(path, out=tmp_path / "out", input_range=(-1.0, 1.0))
    if name == "attention":
        kinds = [s.kind for s in project.schedule.steps]
        assert kinds.count("matmul") == 2 and "softmax" in kinds and kinds.count("conv2d") == 2
    result = compare(tmp_path / "out", project.schedule, verify_inputs(project.schedule, 40, seed=2),
                     sanitize=True, on="host")
    assert result.n >= 40 and result.mismatches == 0, result.first


def test_canonical_shapes_move_the_first_size_one_axis_or_prepend_one():
    assert canonical([17, 1, 32]) == [1, 17, 32]
    assert canonical([3, 17, 1, 1, 32]) == [1, 3, 17, 1, 32]
    assert canonical([2, 17, 16]) == [1, 2, 17, 16]
    assert canonical([1, 4, 4]) == [1, 4, 4]
    assert canonical([]) == [1]


def test_a_batch_first_model_is_left_as_it_was():
    model = onnx.shape_inference.infer_shapes(conv_relu_gemm())
    before = model.SerializeToString()
    assert batch_axis_first(model).SerializeToString() == before


def test_a_conv_on_a_moved_batch_axis_is_refused_in_one_line(tmp_path):
    nodes = [node("Transpose", ["x"], ["t"], perm=[1, 0, 2, 3], name="swap"),
             node("Conv", ["t", "w"], ["c"], name="conv"),
             node("Flatten", ["c"], ["f"], axis=0, name="flat"),
             node("Gemm", ["f", "gw"], ["y"], transB=1, name="fc")]
    model = make_model(nodes, [tensor("x", [1, 3, 4, 4])], [tensor("y", [1, 2])],
                       [("w", RNG.normal(size=(2, 1, 3, 3))), ("gw", RNG.normal(size=(2, 24)))])
    with pytest.raises(MCUGenError, match=r"node 'conv' \(Conv\): reads or writes \[3, 1, 4, 4\], "
                                          r"whose batch axis is not first") as info:
        mcugen.build(save(model, tmp_path / "conv.onnx"), out=tmp_path / "p", input_range=(0.0, 1.0))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "p").exists()


def sequence_first_model():
    """nn.Transformer's default layout: the input [T, 1, E] (batch on axis 1) -> a Linear ->
    Softmax over the features -> Neg (rotate_half's spelling of -x) -> a float-to-float Cast ->
    a Linear -> the output [T, 1, 3]."""
    nodes = [node("MatMul", ["x", "w1"], ["h"], name="linear1"),
             node("Softmax", ["h"], ["p"], axis=-1, name="softmax"),
             node("Neg", ["p"], ["n"], name="negate"),
             node("Cast", ["n"], ["c"], to=onnx.TensorProto.FLOAT, name="same_type"),
             node("MatMul", ["c", "w2"], ["y"], name="linear2")]
    return make_model(nodes, [tensor("x", [T, 1, E])], [tensor("y", [T, 1, 3])],
                      [("w1", RNG.normal(size=(E, 6))), ("w2", RNG.normal(size=(6, 3)))], opset=17)


def test_a_sequence_first_input_runs_with_its_batch_on_axis_1(tmp_path, host_cc):
    path = save(sequence_first_model(), tmp_path / "seq.onnx")
    x = inputs(5).astype(np.float32)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = np.stack([session.run(None, {"x": xi[:, None, :]})[0] for xi in x]).reshape(5, -1)
    project = mcugen.build(path, out=tmp_path / "out", input_range=(-1.0, 1.0))
    assert project.schedule.input["shape"] == [1, T, E]
    graph = project.qgraph.graph
    np.testing.assert_allclose(run_float(graph, x.astype(np.float64))[graph.output].reshape(5, -1),
                               want, rtol=1e-5, atol=1e-5)
    result = compare(tmp_path / "out", project.schedule, verify_inputs(project.schedule, 20, seed=4),
                     sanitize=True, on="host")
    assert result.mismatches == 0, result.first


def test_a_fixed_batch_that_is_not_a_sequence_is_refused_in_one_line(tmp_path):
    """[4, 1, 4, 4] read sequence first meets a Conv: the message offers both readings."""
    nodes = [node("Conv", ["x", "w"], ["c"], name="conv"), node("Flatten", ["c"], ["f"], name="flat"),
             node("Gemm", ["f", "gw"], ["y"], transB=1, name="fc")]
    model = make_model(nodes, [tensor("x", [4, 1, 4, 4])], [tensor("y", [4, 2])],
                       [("w", RNG.normal(size=(2, 1, 3, 3))), ("gw", RNG.normal(size=(2, 8)))])
    with pytest.raises(MCUGenError, match=r"input 'x' is \[4, 1, 4, 4\], read with its batch on a "
                                          r"size-1 axis .*node 'conv' \(Conv\).* if axis 0 is a "
                                          r"batch of 4, re-export with batch 1") as info:
        mcugen.build(save(model, tmp_path / "b4.onnx"), out=tmp_path / "p", input_range=(0.0, 1.0))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "p").exists()


def test_samples_in_the_sequence_first_layout_are_taken_as_they_come(tmp_path):
    """Calibration samples [N, T, 1, E] (the model's own input per sample) or [N, T, E]."""
    path = save(sequence_first_model(), tmp_path / "seq.onnx")
    x = inputs(8)
    a = mcugen.build(path, calib=x[:, :, None, :])
    b = mcugen.build(path, calib=x)
    np.testing.assert_array_equal(a.run(x[:, :, None, :]), b.run(x))
    with pytest.raises(MCUGenError, match=r"calibration samples have shape \[8, 5, 2, 4\]"):
        mcugen.build(path, calib=x.reshape(8, T, 2, 4))
