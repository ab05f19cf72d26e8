"""Per op: a small ONNX model through the float IR (vs onnxruntime) and through the generated C
(bit-exact vs the reference), so every step template is compiled and checked. Which ops and step
kinds the cases must reach comes from the op registry (mcugen/ops): a new op fails the coverage
test until a case here lowers it."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

import mcugen
from mcugen.frontend.onnx_reader import import_model
from mcugen.ops import OpDef, all_ops
from mcugen.passes import run_flow
from mcugen.reference.float_ir import run_float
from mcugen.resources import data_dir
from mcugen.verify import compare, verify_inputs
from onnx_factory import make_model, save, tensor

RNG = np.random.default_rng(7)


def w(*shape):
    return RNG.normal(size=shape) * 0.5


def head(src, n_in):
    """Flatten + Gemm(4) so every case ends in a MAC layer like a real network."""
    return ([helper.make_node("Flatten", [src], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "hw", "hb"], ["y"], name="head", transB=1)],
            [("hw", w(4, n_in)), ("hb", w(4))])


def conv(name, src, dst, weight_name, **attrs):
    return helper.make_node("Conv", [src, weight_name], [dst], name=name, **attrs)


CASES = {
    "conv_dilated_strided": lambda: ([conv("c", "x", "a", "cw", pads=[2, 1, 2, 1], strides=[2, 1], dilations=[2, 1]),
                                      helper.make_node("Relu", ["a"], ["r"])], [("cw", w(3, 2, 3, 3))], [1, 2, 8, 6], (1, 3, 4, 6)),
    "conv_same_upper_depthwise": lambda: ([conv("c", "x", "a", "cw", auto_pad="SAME_UPPER", group=2, kernel_shape=[3, 3]),
                                           helper.make_node("Clip", ["a", "lo", "hi"], ["r"])],
                                          [("cw", w(2, 1, 3, 3)), ("lo", np.array(0.0)), ("hi", np.array(1.5))], [1, 2, 5, 5], (1, 2, 5, 5)),
    "leaky_then_maxpool_padded": lambda: ([conv("c", "x", "a", "cw", pads=[1, 1, 1, 1]),
                                           helper.make_node("LeakyRelu", ["a"], ["l"], alpha=0.1),
                                           helper.make_node("MaxPool", ["l"], ["r"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])],
                                          [("cw", w(3, 2, 3, 3))], [1, 2, 6, 6], (1, 3, 3, 3)),
    "avgpool_include_pad_and_relu_after_pool": lambda: ([conv("c", "x", "a", "cw"),
                                                         helper.make_node("AveragePool", ["a"], ["p"], kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1),
                                                         helper.make_node("Relu", ["p"], ["r"])],
                                                        [("cw", w(2, 2, 1, 1))], [1, 2, 4, 4], (1, 2, 3, 3)),
    "residual_sub_concat_gap": lambda: ([conv("c1", "x", "a", "w1", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["ra"]),
                                         conv("c2", "ra", "b", "w2", pads=[1, 1, 1, 1]),
                                         helper.make_node("Sub", ["ra", "b"], ["s"]),
                                         helper.make_node("Concat", ["s", "ra"], ["cat"], axis=1),
                                         helper.make_node("GlobalAveragePool", ["cat"], ["r"])],
                                        [("w1", w(3, 2, 3, 3)), ("w2", w(3, 3, 3, 3))], [1, 2, 4, 4], (1, 6, 1, 1)),
    "pad_folded_bn_unfolded_mul": lambda: ([helper.make_node("Pad", ["x", "pads"], ["p"], mode="constant"),
                                            conv("c", "p", "a", "cw"),
                                            helper.make_node("BatchNormalization", ["a", "g", "be", "m", "v"], ["bn"]),
                                            helper.make_node("Mul", ["bn", "k"], ["r"])],
                                           [("pads", None), ("cw", w(3, 2, 3, 3)), ("g", np.abs(w(3)) + 0.5), ("be", w(3)),
                                            ("m", w(3)), ("v", np.abs(w(3)) + 0.1), ("k", np.array([2.0]))], [1, 2, 4, 4], (1, 3, 4, 4)),
    "transpose_real_permutation": lambda: ([conv("c", "x", "a", "cw"), helper.make_node("Relu", ["a"], ["ra"]),
                                            helper.make_node("Transpose", ["ra"], ["r"], perm=[0, 2, 3, 1])],
                                           [("cw", w(3, 2, 1, 1))], [1, 2, 3, 4], (1, 3, 4, 3)),
    # issue 8: what used to be refused or wrong
    "pad_reflect_edge_and_crop": lambda: ([conv("c", "x", "a", "cw"), helper.make_node("Relu", ["a"], ["ra"]),
                                           helper.make_node("Pad", ["ra", "pr"], ["p1"], mode="reflect"),
                                           helper.make_node("Pad", ["p1", "pe"], ["p2"], mode="edge"),
                                           helper.make_node("Pad", ["p2", "pc"], ["r"], mode="constant")],
                                          [("cw", w(3, 2, 1, 1)), ("pr", np.array([0, 0, 1, 2, 0, 0, 2, 1])),
                                           ("pe", np.array([0, 1, 0, 1, 0, 0, 1, 0])),
                                           ("pc", np.array([0, 0, -1, 0, 0, -1, 0, -2]))], [1, 2, 4, 5], (1, 3, 7, 7)),
    "avgpool_exclude_pad_ceil_and_maxpool_ceil": lambda: ([conv("c", "x", "a", "cw"), helper.make_node("Relu", ["a"], ["ra"]),
                                                           helper.make_node("AveragePool", ["ra"], ["p"], kernel_shape=[3, 3], strides=[2, 2],
                                                                            pads=[1, 1, 1, 1], count_include_pad=0, ceil_mode=1),
                                                           helper.make_node("MaxPool", ["p"], ["r"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)],
                                                          [("cw", w(2, 2, 1, 1))], [1, 2, 6, 8], (1, 2, 2, 3)),
    "zero_pad_folded_into_avgpool": lambda: ([conv("c", "x", "a", "cw"), helper.make_node("Relu", ["a"], ["ra"]),
                                              helper.make_node("Pad", ["ra", "pz"], ["p"], mode="constant"),
                                              helper.make_node("AveragePool", ["p"], ["r"], kernel_shape=[2, 2], strides=[2, 2])],
                                             [("cw", w(2, 2, 1, 1)), ("pz", np.array([0, 0, 1, 0, 0, 0, 1, 2]))], [1, 2, 4, 4], (1, 2, 3, 3)),
    "batchnorm_on_input_and_after_relu": lambda: ([helper.make_node("BatchNormalization", ["x", "g", "be", "m", "v"], ["n0"]),
                                                   conv("c", "n0", "a", "cw"), helper.make_node("Relu", ["a"], ["ra"]),
                                                   helper.make_node("BatchNormalization", ["ra", "g3", "be3", "m3", "v3"], ["n1"]),
                                                   helper.make_node("Relu", ["n1"], ["r"])],
                                                  [("g", np.abs(w(2)) + 0.5), ("be", w(2)), ("m", w(2)), ("v", np.abs(w(2)) + 0.1),
                                                   ("cw", w(3, 2, 3, 3)), ("g3", w(3)), ("be3", w(3)), ("m3", w(3)),
                                                   ("v3", np.abs(w(3)) + 0.1)], [1, 2, 5, 5], (1, 3, 3, 3)),
    "leaky_relu_negative_slope": lambda: ([conv("c", "x", "a", "cw", pads=[1, 1, 1, 1]),
                                           helper.make_node("LeakyRelu", ["a"], ["r"], alpha=-0.6)],
                                          [("cw", w(3, 2, 3, 3))], [1, 2, 4, 4], (1, 3, 4, 4)),
    "maxpool_dilated_ceil": lambda: ([conv("c", "x", "a", "cw", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["ra"]),
                                      helper.make_node("MaxPool", ["ra"], ["r"], kernel_shape=[2, 3], strides=[2, 1],
                                                       dilations=[2, 2], pads=[1, 0, 0, 1], ceil_mode=1)],
                                     [("cw", w(3, 2, 3, 3))], [1, 2, 7, 6], (1, 3, 4, 3)),
    "conv1d_bn_relu_pool1d_depthwise": lambda: ([conv("c", "x", "a", "cw", pads=[2, 1], strides=[2], kernel_shape=[4]),
                                                 helper.make_node("BatchNormalization", ["a", "g", "be", "m", "v"], ["n"]),
                                                 helper.make_node("Relu", ["n"], ["ra"]),
                                                 helper.make_node("MaxPool", ["ra"], ["p"], kernel_shape=[3], strides=[2], pads=[1, 1]),
                                                 conv("d", "p", "b", "dw", group=4, kernel_shape=[3], auto_pad="SAME_UPPER"),
                                                 helper.make_node("Relu", ["b"], ["rb"]),
                                                 helper.make_node("AveragePool", ["rb"], ["r"], kernel_shape=[2], strides=[2])],
                                                [("cw", w(4, 3, 4)), ("g", np.abs(w(4)) + 0.5), ("be", w(4)), ("m", w(4)),
                                                 ("v", np.abs(w(4)) + 0.1), ("dw", w(4, 1, 3))], [1, 3, 21], (1, 4, 3)),
    "se_gate_reduce_mean_and_mul": lambda: ([conv("c", "x", "a", "cw", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["ra"]),
                                             helper.make_node("ReduceMean", ["ra"], ["m"], axes=[2, 3], keepdims=1),
                                             conv("s", "m", "g", "sw"), helper.make_node("Sigmoid", ["g"], ["sg"]),
                                             helper.make_node("Mul", ["ra", "sg"], ["r"])],
                                            [("cw", w(3, 2, 3, 3)), ("sw", w(3, 3, 1, 1))], [1, 2, 4, 5], (1, 3, 4, 5)),
    "reduce_sum_max_min_over_other_axes": lambda: ([conv("c", "x", "a", "cw", pads=[1, 1, 1, 1]), helper.make_node("Tanh", ["a"], ["t"]),
                                                    helper.make_node("ReduceSum", ["t", "ax1"], ["s"], keepdims=1),
                                                    helper.make_node("ReduceMax", ["t"], ["mx"], axes=[1, 3], keepdims=1),
                                                    helper.make_node("ReduceMin", ["t"], ["mn"], axes=[3], keepdims=1),
                                                    helper.make_node("Mul", ["s", "mx"], ["p"]),
                                                    helper.make_node("Mul", ["p", "mn"], ["r"])],
                                                   [("cw", w(3, 2, 3, 3)), ("ax1", np.array([1]))], [1, 2, 4, 5], (1, 3, 4, 5)),
    "expand_a_gate_then_add": lambda: ([conv("c", "x", "a", "cw", pads=[1, 1, 1, 1]), helper.make_node("Tanh", ["a"], ["t"]),
                                        helper.make_node("ReduceMax", ["t"], ["m"], axes=[3], keepdims=1),
                                        helper.make_node("Expand", ["m", "to"], ["e"]),
                                        helper.make_node("Add", ["t", "e"], ["r"])],
                                       [("cw", w(3, 2, 3, 3)), ("to", np.array([1, 3, 4, 5]))], [1, 2, 4, 5], (1, 3, 4, 5)),
    "attention_scores_and_mix": lambda: ([conv("c", "x", "a", "cw", pads=[1, 1, 1, 1]), helper.make_node("Tanh", ["a"], ["t"]),
                                          helper.make_node("Transpose", ["t"], ["tt"], perm=[0, 1, 3, 2]),
                                          helper.make_node("MatMul", ["t", "tt"], ["s"]),
                                          helper.make_node("Sigmoid", ["s"], ["g"]),
                                          helper.make_node("MatMul", ["g", "t"], ["r"])],
                                         [("cw", w(3, 2, 3, 3))], [1, 2, 4, 5], (1, 3, 4, 5)),
    # issue 24: slicing activations (ops/slice.py): a Split, a backwards slice to INT64_MIN, a
    # Gather through an index table with repeats; a Gather by a negative scalar (the class token)
    "split_slice_backwards_gather_table": lambda: ([conv("c", "x", "a", "cw", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["ra"]),
                                                    helper.make_node("Split", ["ra", "sizes"], ["s0", "s1"], axis=1),
                                                    helper.make_node("Slice", ["s1", "st", "en", "ax", "sp"], ["sl"]),
                                                    helper.make_node("Gather", ["s0", "gi"], ["g"], axis=2),
                                                    helper.make_node("Concat", ["g", "sl"], ["r"], axis=1)],
                                                   [("cw", w(4, 2, 3, 3)), ("sizes", np.array([1, 3])), ("st", np.array([-1])),
                                                    ("en", np.array([np.iinfo(np.int64).min])), ("ax", np.array([2])), ("sp", np.array([-2])),
                                                    ("gi", np.array([4, 0, 0]))], [1, 2, 5, 6], (1, 4, 3, 6)),
    "gather_negative_scalar_class_token": lambda: ([conv("c", "x", "a", "cw", pads=[1, 1, 1, 1]), helper.make_node("Tanh", ["a"], ["t"]),
                                                    helper.make_node("Gather", ["t", "gi"], ["r"], axis=1)],
                                                   [("cw", w(3, 2, 3, 3)), ("gi", np.array(-3))], [1, 2, 4, 5], (1, 4, 5)),
    # issue 24: LayerNorm over tokens, the exporters' decomposed form (one layernorm step)
    "layernorm_decomposed_over_tokens": lambda: ([conv("c", "x", "a", "cw", pads=[1, 1, 1, 1]),
                                                  helper.make_node("Reshape", ["a", "tokens"], ["t"]),
                                                  helper.make_node("ReduceMean", ["t"], ["mu"], axes=[-1]),
                                                  helper.make_node("Sub", ["t", "mu"], ["d"]),
                                                  helper.make_node("Pow", ["d", "two"], ["d2"]),
                                                  helper.make_node("ReduceMean", ["d2"], ["var"], axes=[-1]),
                                                  helper.make_node("Add", ["var", "eps"], ["ve"]),
                                                  helper.make_node("Sqrt", ["ve"], ["sd"]),
                                                  helper.make_node("Div", ["d", "sd"], ["nd"]),
                                                  helper.make_node("Mul", ["nd", "gamma"], ["ng"]),
                                                  helper.make_node("Add", ["ng", "beta"], ["r"])],
                                                 [("cw", w(3, 2, 3, 3)), ("tokens", np.array([1, 6, 10])),
                                                  ("two", np.array(2.0)), ("eps", np.array(1e-5)),
                                                  ("gamma", w(10)), ("beta", w(10))], [1, 2, 4, 5], (1, 6, 10)),
    "softmax_inside_over_last_axis_and_channels": lambda: ([conv("c", "x", "a", "cw", pads=[1, 1, 1, 1]),
                                                            helper.make_node("Softmax", ["a"], ["s1"], axis=-1),
                                                            helper.make_node("Softmax", ["a"], ["s2"], axis=1),
                                                            helper.make_node("Mul", ["s1", "s2"], ["r"])],
                                                           [("cw", w(3, 2, 3, 3))], [1, 2, 4, 5], (1, 3, 4, 5)),
    # issue 24: LogSoftmax inside the graph, the softmax step with the integer log of its sum
    "logsoftmax_inside_over_last_axis_and_channels": lambda: ([conv("c", "x", "a", "cw", pads=[1, 1, 1, 1]),
                                                               helper.make_node("LogSoftmax", ["a"], ["s1"], axis=-1),
                                                               helper.make_node("LogSoftmax", ["a"], ["s2"], axis=1),
                                                               helper.make_node("Add", ["s1", "s2"], ["r"])],
                                                              [("cw", w(3, 2, 3, 3))], [1, 2, 4, 5], (1, 3, 4, 5)),
    "class_token_and_position_constants": lambda: ([conv("c", "x", "a", "cw", pads=[1, 1, 1, 1]),
                                                    helper.make_node("Concat", ["tok", "a"], ["cat"], axis=2),
                                                    helper.make_node("Add", ["cat", "pos"], ["ap"]),
                                                    helper.make_node("Mul", ["ap", "mask"], ["r"])],
                                                   [("cw", w(3, 2, 3, 3)), ("tok", w(1, 3, 1, 5)), ("pos", w(1, 3, 5, 5)),
                                                    ("mask", np.abs(w(1, 1, 5, 1)))], [1, 2, 4, 5], (1, 3, 5, 5)),
    # token ids (an integer input, TOKEN_ROWS rows) looking up a table, then a position constant
    "embedding_lookup": lambda: ([helper.make_node("Gather", ["table", "x"], ["e"], axis=0),
                                  helper.make_node("Add", ["e", "pos"], ["r"])],
                                 [("table", w(TOKEN_ROWS, 3)), ("pos", w(1, 6, 3))], [1, 6], (1, 6, 3)),
}
TOKEN_ROWS = 11


def is_token_case(name):
    return name.startswith("embedding")


def case_inputs(name, n):
    """n inputs of the case: floats in [-2, 2], or token ids (some past the table's rows, which
    read its last row on every path but onnxruntime's)."""
    shape = (n,) + tuple(CASES[name]()[2][1:])
    if is_token_case(name):
        return RNG.integers(0, TOKEN_ROWS, size=shape)
    return RNG.uniform(-2, 2, size=shape).astype(np.float32)


def build_case(name, tmp_path):
    nodes, inits, in_shape, out_shape = CASES[name]()
    inits = [(k, np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64) if v is None else v) for k, v in inits]
    inits = [(k, v.astype(np.int64) if v.dtype.kind == "i" else v) for k, v in inits]
    n_in = int(np.prod(out_shape))
    tail, tail_inits = head("r", n_in)
    float_inits = [(k, v) for k, v in inits + tail_inits if v.dtype != np.int64]
    x = helper.make_tensor_value_info("x", onnx.TensorProto.INT64, in_shape) if is_token_case(name) \
        else tensor("x", in_shape)
    model = make_model(nodes + tail, [x], [tensor("y", [1, 4])], float_inits)
    for k, v in inits:
        if v.dtype == np.int64:
            model.graph.initializer.append(helper.make_tensor(k, 7, v.shape, v.tolist()))
    return save(model, tmp_path / f"{name}.onnx")


@pytest.mark.parametrize("name", list(CASES))
def test_op_float_matches_onnxruntime_and_c_is_bit_exact(name, tmp_path, host_cc):
    path = build_case(name, tmp_path)
    x = case_inputs(name, 5)
    session = ort.InferenceSession(str(path))
    want = np.concatenate([session.run(None, {"x": xi[None]})[0] for xi in x])
    graph = run_flow(import_model(onnx.load(str(path))))
    np.testing.assert_allclose(run_float(graph, x.astype(np.float64))[graph.output], want, rtol=1e-4, atol=1e-4)
    for scheme, wbits, abits in (("power", 4, 4), ("uniform", 8, 8), ("log2", 4, 8)):
        out = tmp_path / f"out_{scheme}"
        project = mcugen.build(path, out=out, scheme=scheme, wbits=wbits, abits=abits,
                               input_range=(-2.0, 2.0), first_last_bits="same")
        result = compare(out, project.schedule, verify_inputs(project.schedule, 60, seed=1))
        assert result.mismatches == 0, f"{scheme}: {result.first}"


def lowering_ops():
    """The registered ops that lower to a step or an alias (their own OpDef.lower): every op but
    those the frontend removes or the host runs (Softmax)."""
    return {kind for kind, op in all_ops().items() if type(op).lower is not OpDef.lower}


def covered_by_cases(tmp_path):
    """(IR ops, step kinds) the cases reach: the nodes their builds lower and the steps those
    become."""
    ops, kinds = set(), set()
    for name in CASES:
        project = mcugen.build(build_case(name, tmp_path), scheme="uniform", wbits=8, abits=8,
                               input_range=(-2.0, 2.0), first_last_bits="same")
        ops |= {node.op for node in project.qgraph.graph.nodes}
        kinds |= {step.kind for step in project.schedule.steps}
    return ops, kinds


def test_every_op_and_step_kind_has_a_host_template_and_a_conformance_case(tmp_path):
    kinds = {k for op in all_ops().values() for k in op.step_kinds}
    templates = {p.name.split(".")[0] for target in ("host", "common")
                 for p in (data_dir("templates") / target / "ops").glob("*.c.j2")}
    assert kinds <= templates, f"step kinds without a host template: {kinds - templates}"
    ops, covered = covered_by_cases(tmp_path)
    assert kinds <= covered, f"step kinds without a conformance case: {kinds - covered}"
    assert lowering_ops() <= ops, f"ops without a conformance case: {lowering_ops() - ops}"


GAP8_CASES = ["maxpool_dilated_ceil", "avgpool_exclude_pad_ceil_and_maxpool_ceil",
              "pad_reflect_edge_and_crop", "batchnorm_on_input_and_after_relu",
              "conv1d_bn_relu_pool1d_depthwise"]


@pytest.mark.parametrize("name", GAP8_CASES)
def test_gap8_emulation_is_bit_exact_on_the_newer_ops(name, tmp_path, host_cc):
    """The GAP8 kernels (tiled pools, FC-side pad and recode) on the same cases."""
    path = build_case(name, tmp_path)
    out = tmp_path / "gap8"
    project = mcugen.build(path, out=out, target="gap8", wbits=4, abits=4, input_range=(-2.0, 2.0),
                           first_last_bits="same")
    result = compare(out, project.schedule, verify_inputs(project.schedule, 30, seed=4))
    assert result.mismatches == 0, result.first
