"""Valid models that used to build into a wrong result or crash (issue 8): each builds, its
integer output stays close to the float model (onnxruntime) and to simulated quantization, and
its generated C is bit-exact against the reference."""
import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

import mcugen
from mcugen.verify import compare, verify_inputs
from onnx_factory import make_model, save, tensor

RNG = np.random.default_rng(11)


@pytest.fixture(autouse=True)
def fresh_rng():
    """Each test draws the same weights and inputs whichever tests ran before it (xdist moves
    them between workers)."""
    RNG.bit_generator.state = np.random.default_rng(11).bit_generator.state


def w(*shape, scale=0.5):
    return RNG.normal(size=shape) * scale


def onnxruntime_outputs(path, x):
    session = ort.InferenceSession(str(path))
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: xi[None]})[0] for xi in x.astype(np.float32)])


def check_model(path, tmp_path, in_shape, tolerance=0.1, lo=-1.0, hi=1.0, compile_c=True, **options):
    """Build uniform W8A8 (unless told otherwise); integer vs float and vs simulated within
    `tolerance` of the float output's range; C bit-exact. Returns the project."""
    options = {"scheme": "uniform", "wbits": 8, "abits": 8, **options}
    out = tmp_path / "out" if compile_c else None
    project = mcugen.build(path, out=out, input_range=(lo, hi), **options)
    x = RNG.uniform(lo, hi, size=(24,) + tuple(in_shape[1:]))
    want = onnxruntime_outputs(path, x).reshape(len(x), -1)
    integer = project.run(x).reshape(len(x), -1)
    simulated = project.run_simulated(x).reshape(len(x), -1)
    span = float(np.abs(want).max()) or 1.0
    assert np.abs(integer - want).max() <= tolerance * span, np.abs(integer - want).max() / span
    assert np.abs(integer - simulated).max() <= tolerance * span
    if compile_c:
        result = compare(out, project.schedule, verify_inputs(project.schedule, 30, seed=2))
        assert result.mismatches == 0, result.first
    return project


def conv(src, dst, weight, name="", **attrs):
    return helper.make_node("Conv", [src, weight], [dst], name=name, **attrs)


def test_unnamed_convs_keep_their_own_weights(tmp_path, host_cc):
    """Two unnamed Convs with the same weight shape used to share one set of weights."""
    nodes = [conv("x", "a", "w1", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["ra"]),
             conv("ra", "b", "w2", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["b"], ["rb"]),
             conv("rb", "c", "w3"), helper.make_node("Flatten", ["c"], ["f"]),
             helper.make_node("Gemm", ["f", "gw", "gb"], ["y"], transB=1)]
    inits = [("w1", w(3, 3, 3, 3)), ("w2", w(3, 3, 3, 3)), ("w3", w(2, 3, 1, 1)),
             ("gw", w(4, 2 * 5 * 5)), ("gb", w(4))]
    path = save(make_model(nodes, [tensor("x", [1, 3, 5, 5])], [tensor("y", [1, 4])], inits),
                tmp_path / "unnamed.onnx")
    project = check_model(path, tmp_path, [1, 3, 5, 5])
    assert len({layer["name"] for layer in project.report["layers"]}) == len(project.report["layers"])


def test_duplicate_node_names_build_like_distinct_ones(tmp_path):
    """onnxruntime refuses repeated names, other tools export them: same result as unique names."""
    def model(names):
        nodes = [conv("x", "a", "w1", name=names[0]), helper.make_node("Relu", ["a"], ["ra"], name=names[1]),
                 conv("ra", "b", "w2", name=names[2]), helper.make_node("Flatten", ["b"], ["f"], name=names[3]),
                 helper.make_node("Gemm", ["f", "gw", "gb"], ["y"], name=names[4], transB=1)]
        inits = [("w1", w1), ("w2", w2), ("gw", gw), ("gb", gb)]
        return make_model(nodes, [tensor("x", [1, 2, 4, 4])], [tensor("y", [1, 3])], inits)
    w1, w2, gw, gb = w(2, 2, 1, 1), w(4, 2, 3, 3), w(3, 4 * 2 * 2), w(3)
    x = RNG.uniform(-1, 1, size=(8, 2, 4, 4))
    outputs = [mcugen.build(save(model(names), tmp_path / f"{i}.onnx"), input_range=(-1.0, 1.0)).run(x)
               for i, names in enumerate((["same"] * 5, ["a", "b", "c", "d", "e"]))]
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_leaky_relu_with_negative_slope_is_not_thresholded(tmp_path, host_cc):
    """A negative slope makes LeakyRelu non-monotone: a threshold encoder got it wrong."""
    nodes = [conv("x", "a", "w1", pads=[1, 1, 1, 1]), helper.make_node("LeakyRelu", ["a"], ["l"], alpha=-0.7),
             conv("l", "b", "w2"), helper.make_node("Relu", ["b"], ["rb"]),
             helper.make_node("Flatten", ["rb"], ["f"]), helper.make_node("Gemm", ["f", "gw", "gb"], ["y"], transB=1)]
    inits = [("w1", w(3, 2, 3, 3)), ("w2", w(3, 3, 1, 1)), ("gw", w(4, 3 * 4 * 4)), ("gb", w(4))]
    path = save(make_model(nodes, [tensor("x", [1, 2, 4, 4])], [tensor("y", [1, 4])], inits),
                tmp_path / "leaky.onnx")
    check_model(path, tmp_path, [1, 2, 4, 4])


def test_global_average_of_a_large_plane_stays_within_int32(tmp_path, host_cc):
    """264 x 264 decoded values summed used to overflow int32 in C."""
    nodes = [conv("x", "a", "w1", name="c"), helper.make_node("Relu", ["a"], ["ra"], name="r"),
             helper.make_node("GlobalAveragePool", ["ra"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "gw", "gb"], ["y"], name="fc", transB=1)]
    inits = [("w1", np.abs(w(2, 1, 1, 1)) + 0.5), ("gw", w(3, 2)), ("gb", w(3))]
    path = save(make_model(nodes, [tensor("x", [1, 1, 264, 264])], [tensor("y", [1, 3])], inits),
                tmp_path / "gap.onnx")
    out = tmp_path / "out"
    project = mcugen.build(path, out=out, input_range=(0.0, 1.0), wbits=4, abits=8)
    ones = np.ones((3, 1, 264, 264), dtype=np.float32)        # every input at its maximum
    result = compare(out, project.schedule, np.concatenate([ones, verify_inputs(project.schedule, 3, seed=3)]))
    assert result.mismatches == 0, result.first
    x = RNG.uniform(0, 1, size=(2, 1, 264, 264))       # (all-ones clips: beyond the calibrated range)
    np.testing.assert_allclose(project.run(x), onnxruntime_outputs(path, x), atol=0.05, rtol=0.05)


def test_small_bias_of_a_weightless_output_channel_survives(tmp_path):
    gw = w(3, 8)
    gw[1] = 0.0
    gb = np.array([0.3, 7e-6, -0.2])
    nodes = [helper.make_node("Gemm", ["x", "gw", "gb"], ["y"], transB=1)]
    path = save(make_model(nodes, [tensor("x", [1, 8])], [tensor("y", [1, 3])], [("gw", gw), ("gb", gb)]),
                tmp_path / "bias.onnx")
    project = mcugen.build(path, input_range=(-1.0, 1.0), scheme="uniform")
    y = project.run(RNG.uniform(-1, 1, size=(4, 8)))
    np.testing.assert_allclose(y[:, 1], 7e-6, rtol=1e-5)


def test_near_zero_channels_with_a_bias_are_constants(tmp_path, host_cc):
    """Folded BatchNorm leaves channels of 1e-30 weights and a real bias: they used to be
    refused for an accumulator that could reach 1e31."""
    w1 = w(4, 2, 3, 3)
    w1[2] = 1e-30 * np.sign(w1[2])
    nodes = [conv("x", "a", "w1", "b1", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["ra"]),
             helper.make_node("Flatten", ["ra"], ["f"]), helper.make_node("Gemm", ["f", "gw", "gb"], ["y"], transB=1)]
    nodes[0].input.append("b1")
    inits = [("w1", w1), ("b1", np.array([0.1, -0.2, 0.8, 0.05])), ("gw", w(3, 4 * 4 * 4)), ("gb", w(3))]
    path = save(make_model(nodes, [tensor("x", [1, 2, 4, 4])], [tensor("y", [1, 3])], inits),
                tmp_path / "dead.onnx")
    project = check_model(path, tmp_path, [1, 2, 4, 4], wbits=4, scheme="power", tolerance=0.25)
    counts = [layer["constant_channels"] for layer in project.report["layers"] if layer["kind"] == "conv2d"]
    assert counts == [1]


ENDINGS = {
    "maxpool": ([helper.make_node("MaxPool", ["c"], ["y"], kernel_shape=[2, 2], strides=[2, 2])], [1, 3, 2, 2]),
    "transpose": ([helper.make_node("Transpose", ["c"], ["y"], perm=[0, 2, 3, 1])], [1, 4, 4, 3]),
    "reshape": ([helper.make_node("Reshape", ["c", "shape"], ["y"])], [1, 6, 8]),
    "flatten_softmax": ([helper.make_node("Flatten", ["c"], ["f"]), helper.make_node("Softmax", ["f"], ["y"], axis=1)], [1, 48]),
    "pad_then_maxpool": ([helper.make_node("Pad", ["c", "pads"], ["p"], mode="edge"),
                          helper.make_node("MaxPool", ["p"], ["y"], kernel_shape=[3, 3], strides=[2, 2])], [1, 3, 2, 2]),
}


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_last_layer_followed_by_shape_ops(ending, tmp_path, host_cc):
    """The last MAC layer's per-channel scales follow the data through pools and shape ops."""
    tail, out_shape = ENDINGS[ending]
    nodes = [conv("x", "a", "w1", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["ra"]),
             conv("ra", "c", "w2", pads=[1, 1, 1, 1])] + tail
    inits = [("w1", w(4, 2, 3, 3)), ("w2", w(3, 4, 3, 3) * np.array([1, 10, 0.1]).reshape(3, 1, 1, 1))]
    model = make_model(nodes, [tensor("x", [1, 2, 4, 4])], [tensor("y", out_shape)], inits)
    model.graph.initializer.append(helper.make_tensor("shape", 7, [3], [1, 6, 8]))
    model.graph.initializer.append(helper.make_tensor("pads", 7, [8], [0, 0, 1, 0, 0, 0, 0, 1]))
    check_model(save(model, tmp_path / f"{ending}.onnx"), tmp_path, [1, 2, 4, 4])


def test_a_node_nothing_reads_is_dropped(tmp_path, host_cc):
    """Exporters leave dead nodes; one reading the last layer's accumulators used to crash."""
    nodes = [conv("x", "a", "w1", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["dead"]),
             helper.make_node("Flatten", ["a"], ["y"])]
    path = save(make_model(nodes, [tensor("x", [1, 2, 3, 3])], [tensor("y", [1, 27])], [("w1", w(3, 2, 3, 3))]),
                tmp_path / "dead.onnx")
    project = check_model(path, tmp_path, [1, 2, 3, 3])
    assert [step.kind for step in project.schedule.steps] == ["conv2d"]


def test_a_pad_value_outside_its_input_range_is_kept(tmp_path, host_cc):
    """The fill shares its input's codes, so the grid must reach it (here: below a ReLU's 0)."""
    nodes = [conv("x", "a", "w1"), helper.make_node("Relu", ["a"], ["ra"]),
             helper.make_node("Pad", ["ra", "pads", "value"], ["p"], mode="constant"),
             conv("p", "y", "w2")]
    model = make_model(nodes, [tensor("x", [1, 2, 4, 4])], [tensor("y", [1, 2, 4, 4])],
                       [("w1", w(2, 2, 1, 1)), ("w2", w(2, 2, 3, 3)), ("value", np.array(-1.5))])
    model.graph.initializer.append(helper.make_tensor("pads", 7, [8], [0, 0, 1, 1, 0, 0, 1, 1]))
    check_model(save(model, tmp_path / "padv.onnx"), tmp_path, [1, 2, 4, 4])
