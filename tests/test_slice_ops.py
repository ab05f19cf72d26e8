"""Slice, Split and Gather (a constant index) of an activation on small hand-made graphs
(Conv -> Tanh -> the op -> Flatten -> Gemm): negative steps and indices, INT64 bounds, the
batch kept, Slice at opset 9, Split at opsets 11, 13 and 18, scalar, listed and 2-D indices,
the last layer's output sliced. Each case's float IR against onnxruntime; the generated C
against the reference bit for bit under ASan/UBSan, every case of an opset in one model (one C
build); the three ops together on gap8 and hls; the refusals in one line."""
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import mcugen
from mcugen.errors import MCUGenError
from mcugen.verify import compare, verify_inputs
from onnx_factory import float_ir_matches_onnxruntime, make_model, save, tensor

node = helper.make_node
RNG = np.random.default_rng(11)
IN_SHAPE = [1, 2, 5, 6]
BIG, SMALL = np.iinfo(np.int64).max, np.iinfo(np.int64).min


def conv_then(nodes, out_shapes, opset=13, ints=(), outputs=("r",)):
    """x -> Conv 3x3 (4 channels, 5 x 6) -> Tanh "h" -> `nodes` (writing `outputs`, of
    `out_shapes`), each flattened, concatenated -> Gemm(3). `ints`: int64 initializers."""
    graph = [node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             node("Tanh", ["c1"], ["h"], name="act"), *nodes]
    graph += [node("Flatten", [t], [f"{t}/flat"], name=f"{t}/flatten") for t in outputs]
    graph.append(node("Concat", [f"{t}/flat" for t in outputs], ["f"], name="cat_all", axis=1))
    n_in = sum(int(np.prod(shape)) for shape in out_shapes)
    inits = [("w1", RNG.normal(size=(4, 2, 3, 3))), ("b1", RNG.normal(size=4) * 0.1),
             ("gw", RNG.normal(size=(3, n_in))), ("gb", RNG.normal(size=3))]
    graph.append(node("Gemm", ["f", "gw", "gb"], ["y"], name="fc", transB=1))
    model = make_model(graph, [tensor("x", IN_SHAPE)], [tensor("y", [1, 3])], inits, opset=opset)
    add_ints(model, ints)
    return model


def add_ints(model, ints):
    for name, value in ints:
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=np.int64), name))


def sliced(starts, ends, axes, steps=None):
    inputs, ints = ["h", "s", "e", "a"], [("s", starts), ("e", ends), ("a", axes)]
    if steps is not None:
        inputs.append("st")
        ints.append(("st", steps))
    return [node("Slice", inputs, ["r"], name="slice")], ints


def split_then_concat(axis, sizes, opset, order):
    """Split of h along `axis` (sizes: the split attribute before 13, an input from 13, a
    number of outputs at 18), its outputs concatenated again in `order`."""
    outs = [f"p{i}" for i in range(len(order))]
    attrs, inputs, ints = {"axis": axis}, ["h"], []
    if opset >= 18 and isinstance(sizes, int):
        attrs["num_outputs"] = sizes
    elif opset >= 13 and sizes is not None:
        inputs.append("sizes")
        ints.append(("sizes", sizes))
    elif sizes is not None:
        attrs["split"] = sizes
    nodes = [node("Split", inputs, outs, name="split", **attrs),
             node("Relu", ["p0"], ["q0"], name="relu0"),
             node("Concat", ["q0" if i == 0 else outs[i] for i in order], ["r"], name="cat", axis=axis)]
    return nodes, ints


def gathered(index, axis):
    return [node("Gather", ["h", "i"], ["r"], name="gather", axis=axis)], [("i", index)]


CASES = {   # name: ((nodes reading "h" and writing "r", int64 initializers), r's shape, opset,
            #        a step kind the op lowers to, or None when it is free)
    "slice_channels": (sliced([1], [3], [1]), [1, 2, 5, 6], 13, "gather"),
    "slice_negative_steps_int64_min": (sliced([-1, 4], [SMALL, 0], [3, 2], [-1, -2]), [1, 4, 2, 6], 13, "gather"),
    "slice_int64_max_end_negative_start": (sliced([-3, 1], [BIG, 1000], [-1, 2], [2, 3]), [1, 4, 2, 2], 13, "gather"),
    "slice_from_zero_is_a_transpose_step": (sliced([0, 0], [3, BIG], [2, 3], [1, 2]), [1, 4, 3, 3], 13, "transpose"),
    "slice_batch_kept_whole": (sliced([0, 0], [BIG, 2], [0, 1]), [1, 2, 5, 6], 13, "transpose"),
    "slice_whole_tensor_is_free": (sliced([0], [BIG], [1]), [1, 4, 5, 6], 13, None),
    "slice_opset9_attributes": (([node("Slice", ["h"], ["r"], name="slice", starts=[0, 1, -2], ends=[2, 100, 1000],
                                       axes=[1, 2, 3])], []), [1, 2, 4, 2], 9, "gather"),
    "split_opset11_attribute": (split_then_concat(1, [1, 3], 11, [1, 0]), [1, 4, 5, 6], 11, "gather"),
    "split_opset13_input": (split_then_concat(2, [2, 3], 13, [1, 0]), [1, 4, 5, 6], 13, "gather"),
    "split_opset13_equal_parts": (split_then_concat(3, None, 13, [2, 0, 1]), [1, 4, 5, 6], 13, "gather"),
    "split_opset18_num_outputs_last_smaller": (split_then_concat(-2, 3, 18, [2, 1, 0]), [1, 4, 5, 6], 18, "gather"),
    "gather_scalar_removes_the_axis": (gathered(3, 2), [1, 4, 6], 13, "gather"),
    "gather_negative_scalar_class_token": (gathered(-1, 1), [1, 5, 6], 13, "gather"),
    "gather_list_with_repeats_is_a_table": (gathered([5, 0, 0, 2, -1], 3), [1, 4, 5, 5], 13, "gather"),
    "gather_progression_is_strided": (gathered([3, 1], -3), [1, 2, 5, 6], 13, "gather"),
    "gather_2d_indices": (gathered([[0, 2], [1, 1]], 3), [1, 4, 5, 2, 2], 13, "gather"),
}


def case_model(name):
    (nodes, ints), shape, opset, _ = CASES[name]
    return conv_then(nodes, [shape], opset=opset, ints=ints)


def bundle(opset):
    """Every case of an opset in one model (its tensors prefixed with its name): one C build."""
    nodes, ints, shapes, outputs = [], [], [], []
    for name, ((case_nodes, case_ints), shape, case_opset, _) in CASES.items():
        if case_opset != opset:
            continue
        rename = lambda t: t if t in ("h", "") else f"{name}/{t}"
        for n in case_nodes:
            copy = onnx.NodeProto()
            copy.CopyFrom(n)
            copy.name = rename(n.name)
            copy.input[:] = [rename(t) for t in n.input]
            copy.output[:] = [rename(t) for t in n.output]
            nodes.append(copy)
        ints += [(rename(k), v) for k, v in case_ints]
        shapes.append(shape)
        outputs.append(rename("r"))
    return conv_then(nodes, shapes, opset=opset, ints=ints, outputs=outputs)


def check_float_ir(path):
    """mcugen's float IR of the model equals onnxruntime's output."""
    float_ir_matches_onnxruntime(path, RNG.uniform(-1, 1, size=[4] + IN_SHAPE[1:]), 1e-5)


def check_bit_exact(path, out, **options):
    """Under ASan/UBSan, but for the HLS C simulation (g++ with ap_types: twice as slow)."""
    project = mcugen.build(path, out=out, input_range=(-1.0, 1.0), **options)
    result = compare(out, project.schedule, verify_inputs(project.schedule, 30, seed=1),
                     sanitize=options.get("target") != "hls", on="host")
    assert result.mismatches == 0, result.first
    return project


@pytest.mark.parametrize("name", list(CASES))
def test_slice_split_gather_match_onnxruntime(name, tmp_path):
    path = save(case_model(name), tmp_path / f"{name}.onnx")
    check_float_ir(path)
    kind = CASES[name][3]
    kinds = {s.kind for s in mcugen.build(path, input_range=(-1.0, 1.0)).schedule.steps}
    assert (kind in kinds) if kind else not kinds & {"gather", "transpose"}, kinds


@pytest.mark.parametrize("opset", sorted({case[2] for case in CASES.values()}))
def test_the_c_is_bit_exact(opset, tmp_path, host_cc):
    """Every case of the opset in one model, under ASan/UBSan."""
    path = save(bundle(opset), tmp_path / f"opset{opset}.onnx")
    check_float_ir(path)
    check_bit_exact(path, tmp_path / "out")


def test_gather_table_and_strides_in_the_schedule(tmp_path):
    """An index list that is no progression reads through a table on its loop; the others are
    strided (negative strides when running backwards), with the start in the offset."""
    table = mcugen.build(save(case_model("gather_list_with_repeats_is_a_table"), tmp_path / "t.onnx"),
                         input_range=(-1.0, 1.0))
    step = next(s for s in table.schedule.steps if s.kind == "gather")
    assert step.params["table_loop"] == 3 and step.consts["index"].tolist() == [5, 0, 0, 2, 5]
    back = mcugen.build(save(case_model("slice_negative_steps_int64_min"), tmp_path / "b.onnx"),
                        input_range=(-1.0, 1.0))
    step = next(s for s in back.schedule.steps if s.kind == "gather")
    assert step.params["in_strides"][-2:] == [-12, -1] and step.params["in_offset"] == 4 * 6 + 5
    assert "index" not in step.consts and step.params["table_loop"] == -1


def last_layer_then(nodes, out_shape, ints):
    """x -> Conv "c1" (the last MAC layer) -> `nodes` writing "y"."""
    graph = [node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]), *nodes]
    model = make_model(graph, [tensor("x", IN_SHAPE)], [tensor("y", out_shape)],
                       [("w1", RNG.normal(size=(4, 2, 3, 3))), ("b1", RNG.normal(size=4) * 0.1)])
    add_ints(model, ints)
    return model


@pytest.mark.parametrize("name, nodes, out_shape, ints, kind", [
    ("rows_keep_the_accumulators", [node("Slice", ["c1", "s", "e", "a"], ["y"], name="slice")], [1, 4, 2, 6],
     [("s", [1]), ("e", [3]), ("a", [2])], "acc"),
    ("gather_across_channels_encodes", [node("Gather", ["c1", "i"], ["y"], name="gather", axis=1)], [1, 3, 5, 6],
     [("i", [3, 0, 3])], "codes"),
])
def test_slicing_the_last_layers_output(name, nodes, out_shape, ints, kind, tmp_path, host_cc):
    """Axis 1 read whole: the int32 accumulators pass (each keeps its channel's scale); channels
    picked: the last layer is encoded and the op moves codes."""
    path = save(last_layer_then(nodes, out_shape, ints), tmp_path / f"{name}.onnx")
    check_float_ir(path)
    project = check_bit_exact(path, tmp_path / "out")
    assert project.schedule.output["kind"] == kind


def all_three(opset=13):
    """Split of the channels, a slice of one half, a Gather of the other's rows, concatenated."""
    nodes = [node("Split", ["h", "sizes"], ["p0", "p1"], name="split", axis=1),
             node("Slice", ["p0", "s", "e", "a", "st"], ["q0"], name="slice"),
             node("Gather", ["p1", "i"], ["q1"], name="gather", axis=2),
             node("Concat", ["q0", "q1"], ["r"], name="cat", axis=1)]
    return conv_then(nodes, [[1, 4, 3, 6]], opset=opset,
                     ints=[("sizes", [2, 2]), ("s", [-1]), ("e", [SMALL]), ("a", [2]), ("st", [-2]),
                           ("i", [4, 0, 2])])


@pytest.mark.parametrize("target", ["gap8", "hls"])
def test_all_three_on_gap8_and_hls(target, tmp_path, host_cc):
    path = save(all_three(), tmp_path / "all.onnx")
    check_float_ir(path)
    project = check_bit_exact(path, tmp_path / target, target=target)
    assert {"gather", "transpose"} <= {s.kind for s in project.schedule.steps}


@pytest.mark.parametrize("name, nodes, ints, message", [
    ("gather_batch", [node("Gather", ["c1", "i"], ["y"], name="gather", axis=0)], [("i", [0, 0])],
     r"\(Gather\): gathers along the batch axis"),
    ("slice_batch_away", [node("Slice", ["c1", "s", "e", "a"], ["y"], name="slice")],
     [("s", [1]), ("e", [2]), ("a", [0])], r"\(Slice\): the batch axis or an output is empty"),
    ("gather_out_of_range", [node("Gather", ["c1", "i"], ["y"], name="gather", axis=2)], [("i", [5])],
     r"\(Gather\): indices \[5\] outside an axis of 5"),
])
def test_refusals_are_one_line(name, nodes, ints, message, tmp_path):
    model = last_layer_then(nodes, [1, 4, 5, 6], ints)
    with pytest.raises(MCUGenError, match=message) as info:
        mcugen.build(save(model, tmp_path / f"{name}.onnx"), input_range=(-1.0, 1.0))
    assert "\n" not in str(info.value)
