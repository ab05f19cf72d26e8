"""Reductions over any axes, Mul of two activations with broadcasting, the HardSwish pattern
and constant folding before shape inference: the float IR against onnxruntime, the generated C
against the reference bit for bit (ASan/UBSan), on small hand-made graphs."""
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import mcugen
from mcugen.errors import MCUGenError
from mcugen.frontend.onnx_reader import import_model
from mcugen.verify import compare, verify_inputs
from onnx_factory import float_ir_matches_onnxruntime, make_model, save, tensor

node = helper.make_node
RNG = np.random.default_rng(7)
IN_SHAPE = [1, 2, 5, 6]


def conv_then(nodes, out_shape, tail_inputs="r", activation="Tanh", opset=13, extra=()):
    """x -> Conv 3x3 (4 channels) -> activation -> `nodes` (reading "h", writing "r") ->
    Flatten -> Gemm(3). `extra`: more initializers (name, array) the nodes read."""
    n_out = int(np.prod(out_shape))
    graph = [node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             node(activation, ["c1"], ["h"], name="act"), *nodes,
             node("Flatten", [tail_inputs], ["f"], name="flat"),
             node("Gemm", ["f", "gw", "gb"], ["y"], name="fc", transB=1)]
    inits = [("w1", RNG.normal(size=(4, 2, 3, 3))), ("b1", RNG.normal(size=4) * 0.1),
             ("gw", RNG.normal(size=(3, n_out))), ("gb", RNG.normal(size=3))]
    model = make_model(graph, [tensor("x", IN_SHAPE)], [tensor("y", [1, 3])], inits, opset=opset)
    for name, value in extra:
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    return model


def check_float_ir(model, path):
    """mcugen's float IR of the model equals onnxruntime's output."""
    float_ir_matches_onnxruntime(path, RNG.uniform(-1, 1, size=[4] + IN_SHAPE[1:]))


def check_bit_exact(path, tmp_path, n=40):
    for scheme, wbits, abits in (("power", 4, 8), ("uniform", 8, 8)):
        out = tmp_path / f"{scheme}{wbits}{abits}"
        project = mcugen.build(path, out=out, scheme=scheme, wbits=wbits, abits=abits,
                               input_range=(-1.0, 1.0), first_last_bits="same")
        result = compare(out, project.schedule, verify_inputs(project.schedule, n, seed=5),
                         sanitize=True)
        assert result.mismatches == 0, f"{scheme} W{wbits}A{abits}: {result.first}"
    return project


def reduce_model(op, axes, keepdims, opset=13):
    """A reduce over `axes` of the [1, 4, 5, 6] activation; from opset 18 the axes an input."""
    shape = [1, 4, 5, 6]
    kept = [1 if a in [x % 4 for x in axes] else d for a, d in enumerate(shape)]
    as_input = opset >= 18 or (op == "ReduceSum" and opset >= 13)
    inputs, attrs, extra = ["h"], {"keepdims": keepdims}, []
    if as_input:
        inputs.append("axes")
        extra.append(("axes", np.array(axes, dtype=np.int64)))
    else:
        attrs["axes"] = axes
    return conv_then([node(op, inputs, ["r"], name="reduce", **attrs)], kept, opset=opset,
                     extra=extra)


REDUCES = {
    "mean_channels": ("ReduceMean", [1], 1, "reduce_sum"),
    "sum_h_w_opset13_input_axes": ("ReduceSum", [2, 3], 0, "reduce_sum"),
    "mean_hw_is_the_global_pool": ("ReduceMean", [-1, -2], 1, "avgpool"),
    "mean_hw_no_keepdims_opset18": ("ReduceMean", [2, 3], 0, "avgpool"),
    "max_hw_is_the_global_pool": ("ReduceMax", [2, 3], 1, "maxpool"),
    "max_non_adjacent_axes": ("ReduceMax", [1, 3], 0, "reduce_minmax"),
    "min_last_axis": ("ReduceMin", [-1], 1, "reduce_minmax"),
    "mean_channels_and_width": ("ReduceMean", [1, 3], 1, "reduce_sum"),
}


@pytest.mark.parametrize("name", list(REDUCES))
def test_reduce_is_bit_exact_and_matches_onnxruntime(name, tmp_path, host_cc):
    op, axes, keepdims, kind = REDUCES[name]
    opset = 18 if "opset18" in name else 13
    path = save(reduce_model(op, axes, keepdims, opset), tmp_path / f"{name}.onnx")
    check_float_ir(onnx.load(str(path)), path)
    project = check_bit_exact(path, tmp_path)
    assert kind in {s.kind for s in project.schedule.steps}


def test_max_across_the_last_layers_channels_encodes_that_layer(tmp_path, host_cc):
    """A max over channels after the last Conv cannot pass its int32 accumulators (each
    channel has its own scale): the Conv is encoded instead, and the max runs on codes."""
    graph = [node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             node("ReduceMax", ["c1"], ["y"], name="reduce", axes=[1], keepdims=1)]
    model = make_model(graph, [tensor("x", IN_SHAPE)], [tensor("y", [1, 1, 5, 6])],
                       [("w1", RNG.normal(size=(4, 2, 3, 3))), ("b1", RNG.normal(size=4))])
    path = save(model, tmp_path / "max_c.onnx")
    check_float_ir(model, path)
    project = check_bit_exact(path, tmp_path, n=20)
    assert project.schedule.buffers[project.schedule.steps[-1].output].dtype != "int32"


MULS = {   # name: (shape of a, shape of b); a and b come from two convs of the input
    "se_gate": ([1, 4, 5, 6], [1, 4, 1, 1]),
    "se_gate_swapped": ([1, 4, 1, 1], [1, 4, 5, 6]),
    "spatial_mask": ([1, 4, 5, 6], [1, 1, 5, 6]),
    "same_shape": ([1, 4, 5, 6], [1, 4, 5, 6]),
    "row_and_column": ([1, 4, 5, 1], [1, 1, 1, 6]),
}


def mul_model(a_shape, b_shape, gate="Sigmoid"):
    """a: Tanh(Conv(x)) reduced to a_shape by a mean; b: gate(Conv(x)) reduced to b_shape."""
    def make(shape, src, name):
        axes = [a for a in (1, 2, 3) if shape[a] == 1]
        nodes = [node("ReduceMean", [src], [name + "_m"], name=name + "_mean", axes=axes)] if axes else []
        out = name + "_m" if axes else src
        return nodes, out
    a_nodes, a = make(a_shape, "h", "a")
    b_nodes, b = make(b_shape, "g", "b")
    out = list(np.broadcast_shapes(tuple(a_shape), tuple(b_shape)))
    nodes = [node("Conv", ["x", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             node(gate, ["c2"], ["g"], name="gate"), *a_nodes, *b_nodes,
             node("Mul", [a, b], ["r"], name="mul")]
    extra = [("w2", RNG.normal(size=(4, 2, 3, 3)).astype(np.float32)),
             ("b2", (RNG.normal(size=4) * 0.1).astype(np.float32))]
    return conv_then(nodes, out, extra=extra)


@pytest.mark.parametrize("name", list(MULS))
def test_mul_of_two_activations_is_bit_exact_and_matches_onnxruntime(name, tmp_path, host_cc):
    path = save(mul_model(*MULS[name]), tmp_path / f"{name}.onnx")
    check_float_ir(onnx.load(str(path)), path)
    project = check_bit_exact(path, tmp_path)
    step = next(s for s in project.schedule.steps if s.kind == "mul")
    assert len(step.params["dims"]) == 4


@pytest.mark.parametrize("gate, signed", [("Tanh", True), ("Sigmoid", False)])
def test_mul_output_is_signed_only_when_a_factor_is(gate, signed, tmp_path):
    """Tanh x Tanh has either sign (a signed output grid); Sigmoid x Sigmoid is >= 0."""
    model = mul_model([1, 4, 5, 6], [1, 4, 1, 1], gate=gate)
    model.graph.node[1].op_type = gate          # the first operand's activation too
    project = mcugen.build(save(model, tmp_path / "m.onnx"), input_range=(-1.0, 1.0))
    step = next(s for s in project.schedule.steps if s.kind == "mul")
    assert (step.params["code_min"] < 0) == signed


def test_div_of_two_activations_is_refused_in_one_line(tmp_path):
    model = mul_model([1, 4, 5, 6], [1, 4, 5, 6])
    next(n for n in model.graph.node if n.op_type == "Mul").op_type = "Div"
    with pytest.raises(MCUGenError, match=r"\(Div\): Div of two activations is not supported") as info:
        mcugen.build(save(model, tmp_path / "div.onnx"), input_range=(-1.0, 1.0))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("alpha, fused", [(1.0 / 6.0, True), (0.2, False)])
def test_x_times_hardsigmoid_of_x_is_hardswish_only_with_its_constants(alpha, fused, tmp_path):
    nodes = [node("HardSigmoid", ["h"], ["s"], name="hs", alpha=alpha),
             node("Mul", ["h", "s"], ["r"], name="mul")]
    model = conv_then(nodes, [1, 4, 5, 6], activation="Identity")
    path = save(model, tmp_path / "hswish.onnx")
    check_float_ir(model, path)
    project = mcugen.build(path, input_range=(-1.0, 1.0))
    kinds = [s.kind for s in project.schedule.steps]
    assert ("mul" not in kinds) == fused, kinds


def torchscript_flatten_chain():
    """The flatten TorchScript writes: Shape -> Gather -> Unsqueeze -> Concat -> Reshape, and a
    broadcast through ConstantOfShape -> Equal -> Where -> Expand of a constant, all constant
    once the input's shape is static."""
    i64 = lambda name, values: numpy_helper.from_array(np.array(values, dtype=np.int64), name)
    nodes = [node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             node("Relu", ["c1"], ["h"], name="relu"),
             node("Shape", ["h"], ["shape"], name="/Shape"),
             node("Gather", ["shape", "zero"], ["batch"], name="/Gather", axis=0),
             node("Unsqueeze", ["batch", "zero_axes"], ["batch1"], name="/Unsqueeze"),
             node("Concat", ["batch1", "minus_one"], ["target"], name="/Concat", axis=0),
             node("ConstantOfShape", ["two"], ["ones"], name="/ConstantOfShape",
                  value=numpy_helper.from_array(np.array([1], dtype=np.int64))),
             node("Equal", ["target", "minus_ones"], ["is_free"], name="/Equal"),
             node("Where", ["is_free", "ones", "target"], ["target2"], name="/Where"),
             node("Expand", ["target", "target2"], ["target3"], name="/Expand"),
             node("Reshape", ["h", "target3"], ["f"], name="/Reshape"),
             node("Gemm", ["f", "gw", "gb"], ["y"], name="fc", transB=1)]
    inits = [("w1", RNG.normal(size=(4, 2, 3, 3))), ("b1", RNG.normal(size=4) * 0.1),
             ("gw", RNG.normal(size=(3, 120))), ("gb", RNG.normal(size=3))]
    model = make_model(nodes, [tensor("x", ["batch", 2, 5, 6])], [tensor("y", ["batch", 3])], inits)
    model.graph.initializer.extend([i64("zero", 0), i64("zero_axes", [0]), i64("minus_one", [-1]),
                                    i64("two", [2]), i64("minus_ones", [-1, -1])])
    return model


def test_shape_chains_fold_before_shape_inference(tmp_path, host_cc):
    model = torchscript_flatten_chain()
    onnx.checker.check_model(model)
    path = save(model, tmp_path / "chain.onnx")
    graph = import_model(onnx.load(str(path)))
    assert [n.op for n in graph.nodes] == ["Conv", "Activation", "Reshape", "Gemm"]
    project = mcugen.build(path, out=tmp_path / "p", input_range=(-1.0, 1.0))
    result = compare(tmp_path / "p", project.schedule, verify_inputs(project.schedule, 20, seed=2),
                     sanitize=True)
    assert result.mismatches == 0, result.first


def test_a_shape_of_a_dynamic_tensor_is_not_folded(tmp_path):
    """Only static shapes fold: a Shape whose input keeps an unknown dimension stays, and the
    error names what is really unsupported."""
    model = torchscript_flatten_chain()
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
    with pytest.raises(MCUGenError, match="dynamic dimension 2 \\('height'\\)"):
        mcugen.build(save(model, tmp_path / "dyn.onnx"), input_range=(-1.0, 1.0))
