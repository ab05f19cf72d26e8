"""Activations (issue 9): every ONNX activation and every fused exporter pattern imported and
run on the float path against onnxruntime; the near misses left alone or refused by name; the
properties the encoders rely on (monotone, non-negative, turning points) checked against the
functions themselves."""
import itertools
import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper
from scipy.special import erf

import mcugen
from mcugen.errors import MCUGenError
from mcugen.frontend.onnx_reader import ImportContext, import_model, read_model
from mcugen.frontend.patterns import fuse_activation_patterns
from mcugen.numerics import (activation_fn, activation_is_monotone, activation_is_nonnegative,
                             activation_per_channel, activation_turning_points)
from mcugen.passes import run_flow
from mcugen.verify import compare, verify_inputs
from mcugen.reference.float_ir import run_float
from onnx_factory import make_model, save, tensor

RNG = np.random.default_rng(9)
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
IN_SHAPE = [1, 3, 4, 4]
SELU = (1.67326319217681884765625, 1.05070102214813232421875)   # ONNX's defaults


def conv_then(act_nodes, inits=(), opset=17):
    """x [1,3,4,4] -> Conv 3x3 pad 1 -> 'a' -> act_nodes -> 'y'."""
    nodes = [helper.make_node("Conv", ["x", "cw"], ["a"], name="conv", pads=[1, 1, 1, 1])] + act_nodes
    model = make_model(nodes, [tensor("x", IN_SHAPE)], [tensor("y", IN_SHAPE)],
                       [("cw", RNG.normal(size=(3, 3, 3, 3)) * 0.5)] + list(inits), opset=opset)
    if opset >= 20:
        model.ir_version = 10
    return model


def float_matches_onnxruntime(model, tmp_path, in_shape=IN_SHAPE):
    """The float IR after the normalize flow (activations fused) against onnxruntime, 1e-5."""
    path = save(model, tmp_path / "m.onnx")
    x = RNG.uniform(-3, 3, size=(6,) + tuple(in_shape[1:])).astype(np.float32)
    session = ort.InferenceSession(str(path))
    want = np.concatenate([session.run(None, {"x": xi[None]})[0] for xi in x])
    graph = run_flow(import_model(onnx.load(str(path))))
    got = run_float(graph, x.astype(np.float64))[graph.output]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    return graph


def specs_of(graph):
    return [n.attrs["activation"] for n in graph.nodes if n.attrs.get("activation")]


# ---------------------------------------------------------------- single ONNX ops

SINGLE = {   # name: (op_type, attributes, the spec it imports to)
    "sigmoid": ("Sigmoid", {}, ("Sigmoid",)),
    "tanh": ("Tanh", {}, ("Tanh",)),
    "hardsigmoid_default": ("HardSigmoid", {}, ("HardSigmoid", 0.2, 0.5)),
    "hardsigmoid": ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, ("HardSigmoid", 0.3, 0.4)),
    "hardsigmoid_falling": ("HardSigmoid", {"alpha": -0.25, "beta": 0.6}, ("HardSigmoid", -0.25, 0.6)),
    "hardswish": ("HardSwish", {}, ("HardSwish",)),
    "elu_default": ("Elu", {}, ("Elu", 1.0)),
    "elu": ("Elu", {"alpha": 0.5}, ("Elu", 0.5)),
    "selu_default": ("Selu", {}, ("Selu",) + SELU),
    "selu": ("Selu", {"alpha": 1.5, "gamma": 2.0}, ("Selu", 1.5, 2.0)),
    "softplus": ("Softplus", {}, ("Softplus",)),
    "leakyrelu_default": ("LeakyRelu", {}, ("LeakyRelu", 0.01)),
    "leakyrelu_negative": ("LeakyRelu", {"alpha": -0.3}, ("LeakyRelu", -0.3)),
    "leakyrelu_steep": ("LeakyRelu", {"alpha": 1.7}, ("LeakyRelu", 1.7)),
}


def close_specs(got, want):
    return got[0] == want[0] and len(got) == len(want) and \
        np.allclose(np.asarray(got[1:], dtype=float), np.asarray(want[1:], dtype=float), rtol=1e-6)


@pytest.mark.parametrize("where", ["after_conv", "on_input"])
@pytest.mark.parametrize("name", list(SINGLE))
def test_single_op_float_matches_onnxruntime(name, where, tmp_path):
    op_type, attrs, spec = SINGLE[name]
    if where == "after_conv":
        model = conv_then([helper.make_node(op_type, ["a"], ["y"], name="act", **attrs)])
    else:
        model = make_model([helper.make_node(op_type, ["x"], ["y"], name="act", **attrs)],
                           [tensor("x", IN_SHAPE)], [tensor("y", IN_SHAPE)], opset=17)
    graph = float_matches_onnxruntime(model, tmp_path)
    assert len(specs_of(graph)) == 1 and close_specs(specs_of(graph)[0], spec), specs_of(graph)


@pytest.mark.parametrize("approximate, spec", [("none", ("Gelu",)), ("tanh", ("GeluTanh",))])
def test_opset20_gelu_op(approximate, spec, tmp_path):
    model = conv_then([helper.make_node("Gelu", ["a"], ["y"], approximate=approximate)], opset=20)
    assert specs_of(float_matches_onnxruntime(model, tmp_path)) == [spec]


def test_gelu_with_an_unknown_mode_is_refused(tmp_path):
    model = conv_then([helper.make_node("Gelu", ["a"], ["y"], name="g", approximate="erf")], opset=20)
    with pytest.raises(MCUGenError, match="'g'.*approximate='erf'"):
        import_model(model)


PRELU_SLOPES = {   # name: (slope tensor, the slopes of the spec)
    "per_channel_c11": (np.array([0.25, -0.5, 1.5]).reshape(3, 1, 1), (0.25, -0.5, 1.5)),
    "per_channel_1c11": (np.array([-0.1, 0.2, 0.3]).reshape(1, 3, 1, 1), (-0.1, 0.2, 0.3)),
    "single_1": (np.array([-0.75]), (-0.75,)),
    "single_111": (np.array([0.3]).reshape(1, 1, 1), (0.3,)),
    "equal_per_channel": (np.full((3, 1, 1), 0.2), (0.2,)),
}


@pytest.mark.parametrize("name", list(PRELU_SLOPES))
def test_prelu_slopes_float_matches_onnxruntime(name, tmp_path):
    slope, slopes = PRELU_SLOPES[name]
    model = conv_then([helper.make_node("PRelu", ["a", "slope"], ["y"])], [("slope", slope)])
    (spec,) = specs_of(float_matches_onnxruntime(model, tmp_path))
    assert spec[0] == "PRelu" and np.allclose(spec[1], slopes, rtol=1e-6)
    assert activation_per_channel(spec) == (len(slopes) if len(slopes) > 1 else 0)


def test_prelu_slope_per_feature_of_a_gemm(tmp_path):
    """slope (C,) on a Gemm output [1, C], as torch exports nn.PReLU(C) after a Linear."""
    slopes = np.array([0.1, -0.4, 0.7, 0.0])
    nodes = [helper.make_node("Gemm", ["x", "gw", "gb"], ["a"], transB=1),
             helper.make_node("PRelu", ["a", "slope"], ["y"])]
    model = make_model(nodes, [tensor("x", [1, 5])], [tensor("y", [1, 4])],
                       [("gw", RNG.normal(size=(4, 5))), ("gb", RNG.normal(size=4)), ("slope", slopes)])
    (spec,) = specs_of(float_matches_onnxruntime(model, tmp_path, in_shape=[1, 5]))
    assert np.allclose(spec[1], slopes, rtol=1e-6)


def test_prelu_slope_along_width_is_refused():
    """slope (4,) broadcasts along W of [1,3,4,4]: a slope per column, not per channel."""
    model = conv_then([helper.make_node("PRelu", ["a", "slope"], ["y"], name="p")],
                      [("slope", np.array([0.1, 0.2, 0.3, 0.4]))])
    with pytest.raises(MCUGenError, match="'p'.*channels"):
        import_model(model)


def test_prelu_slope_computed_at_run_time_is_refused():
    model = conv_then([helper.make_node("Relu", ["a"], ["r"]),
                       helper.make_node("PRelu", ["a", "r"], ["y"], name="p")])
    with pytest.raises(MCUGenError, match="'p'.*constant"):
        import_model(model)


def test_standalone_per_channel_prelu_is_one_table_per_channel(tmp_path, host_cc):
    """A PRelu after a MaxPool stands alone: a code-to-code table per channel, close to
    onnxruntime, and its C bit-exact against the reference."""
    slopes = np.array([0.5, -0.8, 2.0])
    nodes = [helper.make_node("Conv", ["x", "cw"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("MaxPool", ["a"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("PRelu", ["p", "slope"], ["s"], name="prelu"),
             helper.make_node("Flatten", ["s"], ["f"]),
             helper.make_node("Gemm", ["f", "gw", "gb"], ["y"], transB=1)]
    inits = [("cw", RNG.normal(size=(3, 2, 3, 3)) * 0.5), ("slope", slopes.reshape(3, 1, 1)),
             ("gw", RNG.normal(size=(4, 12))), ("gb", RNG.normal(size=4))]
    path = save(make_model(nodes, [tensor("x", [1, 2, 4, 4])], [tensor("y", [1, 4])], inits, opset=17),
                tmp_path / "prelu.onnx")
    out = tmp_path / "out"
    project = mcugen.build(path, out=out, scheme="uniform", wbits=8, abits=8, input_range=(-2.0, 2.0))
    (step,) = [s for s in project.schedule.steps if s.kind == "recode"]
    assert step.params["channels"] == 3 and step.consts["lut"].shape[0] == 3
    assert len({row.tobytes() for row in step.consts["lut"]}) == 3
    x = RNG.uniform(-2, 2, size=(20, 2, 4, 4))
    session = ort.InferenceSession(str(path))
    want = np.concatenate([session.run(None, {"x": xi[None].astype(np.float32)})[0] for xi in x])
    assert np.abs(project.run(x) - want).max() <= 0.1 * np.abs(want).max()
    result = compare(out, project.schedule, verify_inputs(project.schedule, 30, seed=3))
    assert result.mismatches == 0, result.first


# ---------------------------------------------------------------- fused patterns

def mul(a, b, out):
    return helper.make_node("Mul", [a, b], [out])


def gelu_erf_nodes(scaled, add_order, grouping):
    """x = 'a': 0.5 * x * (1 + erf(x / sqrt 2)) in one of the forms exporters write."""
    scale = {"div": helper.make_node("Div", ["a", "sqrt2"], ["d"]),
             "mul": mul("a", "inv_sqrt2", "d"), "mul_r": mul("inv_sqrt2", "a", "d")}[scaled]
    add = helper.make_node("Add", ["e", "one"] if add_order else ["one", "e"], ["p"])
    return [scale, helper.make_node("Erf", ["d"], ["e"]), add] + product_nodes("p", grouping)


GROUPINGS = ["(x*B)*h", "h*(B*x)", "(h*x)*B", "B*(x*h)", "(h*B)*x", "x*(B*h)"]


def product_nodes(bracket, grouping):
    """x * 0.5 * bracket as two Muls, grouped and ordered as `grouping` says ('a' = x)."""
    names = {"x": "a", "B": bracket, "h": "half"}
    if grouping.startswith("("):
        inner, outer = grouping[1:4], grouping[6]
        first = mul(names[inner[0]], names[inner[2]], "m")
        return [first, mul("m", names[outer], "y")]
    outer, inner = grouping[0], grouping[3:6]
    return [mul(names[inner[0]], names[inner[2]], "m"), mul(names[outer], "m", "y")]


GELU_CONSTANTS = [("sqrt2", np.sqrt(2.0)), ("inv_sqrt2", np.sqrt(0.5)), ("one", 1.0), ("half", 0.5)]


@pytest.mark.parametrize("scaled, add_order, grouping",
                         list(itertools.product(["div", "mul", "mul_r"], [0, 1], GROUPINGS)))
def test_gelu_erf_pattern_fuses_into_one_node(scaled, add_order, grouping, tmp_path):
    model = conv_then(gelu_erf_nodes(scaled, add_order, grouping), GELU_CONSTANTS)
    graph = import_model(model)
    assert [(n.op, n.attrs.get("activation")) for n in graph.nodes][1:] == [("Activation", ("Gelu",))]
    assert graph.nodes[1].name == "y"
    assert specs_of(float_matches_onnxruntime(model, tmp_path)) == [("Gelu",)]


def gelu_tanh_nodes(cube, inner_order, grouping, cubic="k"):
    """x = 'a': 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))), 0.044715 named `cubic`."""
    cubes = {"pow": [helper.make_node("Pow", ["a", "three"], ["x3"])],
             "x*(x*x)": [mul("a", "a", "sq"), mul("a", "sq", "x3")],
             "(x*x)*x": [mul("a", "a", "sq"), mul("sq", "a", "x3")]}[cube]
    k_term = mul("x3", cubic, "kx3") if inner_order else mul(cubic, "x3", "kx3")
    inner = helper.make_node("Add", ["a", "kx3"] if inner_order else ["kx3", "a"], ["s"])
    scaled = mul("c", "s", "z") if inner_order else mul("s", "c", "z")
    tail = [helper.make_node("Tanh", ["z"], ["t"]),
            helper.make_node("Add", ["one", "t"] if inner_order else ["t", "one"], ["p"])]
    return cubes + [k_term, inner, scaled] + tail + product_nodes("p", grouping)


GELU_TANH_CONSTANTS = [("three", 3.0), ("k", 0.044715), ("c", math.sqrt(2 / math.pi)),
                       ("one", 1.0), ("half", 0.5)]


@pytest.mark.parametrize("cube, inner_order, grouping",
                         list(itertools.product(["pow", "x*(x*x)", "(x*x)*x"], [0, 1],
                                                ["(x*B)*h", "(h*x)*B", "x*(B*h)"])))
def test_gelu_tanh_pattern_fuses_into_one_node(cube, inner_order, grouping, tmp_path):
    model = conv_then(gelu_tanh_nodes(cube, inner_order, grouping), GELU_TANH_CONSTANTS)
    assert [n.op for n in import_model(model).nodes] == ["Conv", "Activation"]
    assert specs_of(float_matches_onnxruntime(model, tmp_path)) == [("GeluTanh",)]


@pytest.mark.parametrize("x_first", [True, False])
def test_silu_and_mish_patterns_fuse(x_first, tmp_path):
    def times_x(gate):
        return mul("a", gate, "y") if x_first else mul(gate, "a", "y")
    silu = [helper.make_node("Sigmoid", ["a"], ["s"]), times_x("s")]
    model = conv_then(silu)
    graph = import_model(model)
    assert [n.op for n in graph.nodes] == ["Conv", "Activation"] and graph.nodes[1].name == "y"
    assert specs_of(float_matches_onnxruntime(model, tmp_path)) == [("SiLU",)]
    mish = [helper.make_node("Softplus", ["a"], ["sp"]), helper.make_node("Tanh", ["sp"], ["t"]),
            times_x("t")]
    model = conv_then(mish)
    assert [n.op for n in import_model(model).nodes] == ["Conv", "Activation"]
    assert specs_of(float_matches_onnxruntime(model, tmp_path)) == [("Mish",)]


def patterns_applied(model):
    """The pattern pass alone on a model whose constants are initializers."""
    model = onnx.shape_inference.infer_shapes(model)
    return [n.op_type for n in fuse_activation_patterns(list(model.graph.node), ImportContext(model))]


def second_conv(src, dst):
    return helper.make_node("Conv", [src, "cw2"], [dst], pads=[1, 1, 1, 1])


CW2 = ("cw2", np.eye(3).reshape(3, 3, 1, 1).repeat(3, axis=2).repeat(3, axis=3) * 0.1)

GELU = gelu_erf_nodes("div", 1, "(x*B)*h")          # Div, Erf, Add, Mul, Mul
GELU_TANH = gelu_tanh_nodes("pow", 1, "(x*B)*h")    # Pow, Mul, Add, Mul, Tanh, Add, Mul, Mul


def node(op_type, inputs, output):
    return helper.make_node(op_type, inputs, [output])


NEAR_MISSES = {   # name: (nodes after the Conv that writes 'a', extra initializers)
    "silu_of_another_tensor": ([second_conv("a", "b"), node("Sigmoid", ["b"], "s"),
                                mul("a", "s", "y")], [CW2]),
    "silu_gate_read_twice": ([node("Sigmoid", ["a"], "s"), mul("a", "s", "m"),
                              node("Add", ["m", "s"], "y")], []),
    "mish_of_another_tensor": ([second_conv("a", "b"), node("Softplus", ["b"], "sp"),
                                node("Tanh", ["sp"], "t"), mul("a", "t", "y")], [CW2]),
    "gelu_wrong_divisor": ([node("Div", ["a", "wrong"], "d")] + GELU[1:], [("wrong", 1.5)]),
    "gelu_wrong_half": (GELU[:-1] + [mul("m", "wrong", "y")], [("wrong", 0.4)]),
    "gelu_erf_of_another_tensor": ([second_conv("a", "b"), node("Div", ["b", "sqrt2"], "d")]
                                   + GELU[1:], [CW2]),
    "gelu_erf_read_twice": (GELU[:-1] + [mul("m", "half", "h"), node("Add", ["h", "e"], "y")], []),
    "gelu_tanh_wrong_cubic": (gelu_tanh_nodes("pow", 1, "(x*B)*h", cubic="wrong"),
                              [("wrong", 0.04)]),
    "gelu_tanh_cube_of_another_tensor": ([second_conv("a", "b"), node("Pow", ["b", "three"], "x3")]
                                         + GELU_TANH[1:], [CW2]),
    "gelu_tanh_square_not_cube": ([mul("a", "a", "x3")] + GELU_TANH[1:], []),
}


@pytest.mark.parametrize("name", list(NEAR_MISSES))
def test_near_misses_are_left_alone_then_refused_by_name_or_computed_as_written(name, tmp_path):
    """Nothing fuses; what is left is refused naming the op mcugen has no step for (Erf, Pow),
    or, when every op is one (a Mul of two activations), runs as written: the float IR equals
    onnxruntime's and no node turned into one activation."""
    nodes, extra = NEAR_MISSES[name]
    model = conv_then(nodes, GELU_CONSTANTS + GELU_TANH_CONSTANTS[:3] + list(extra))
    before = [n.op_type for n in model.graph.node]
    assert patterns_applied(model) == before
    if {"Erf", "Pow"} & set(before):
        with pytest.raises(MCUGenError, match=r"node '.*' \((Erf|Pow)\): op not supported"):
            import_model(model)
        return
    graph = float_matches_onnxruntime(model, tmp_path)
    assert "Mul" in [n.op for n in graph.nodes]
    assert not {("SiLU",), ("Mish",)} & set(specs_of(graph))


def test_an_intermediate_graph_output_blocks_the_fusion():
    """The Sigmoid's result is what the model outputs: the Mul is dead (dropped), nothing fuses."""
    nodes = [helper.make_node("Conv", ["x", "cw"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["a"], ["s"]), mul("a", "s", "y")]
    model = make_model(nodes, [tensor("x", IN_SHAPE)], [tensor("s", IN_SHAPE)],
                       [("cw", RNG.normal(size=(3, 3, 3, 3)))])
    assert patterns_applied(model) == ["Conv", "Sigmoid"]


def test_a_dead_reader_of_an_inner_tensor_does_not_block_the_fusion():
    """A node whose result nothing reads (fuzz seed 876: a Relu on the Softplus of a Mish) is
    not a reader that keeps the pattern apart."""
    nodes = [helper.make_node("Conv", ["x", "cw"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Softplus", ["a"], ["sp"]), helper.make_node("Tanh", ["sp"], ["t"]),
             mul("a", "t", "y"), helper.make_node("Relu", ["sp"], ["dead"])]
    model = make_model(nodes, [tensor("x", IN_SHAPE)], [tensor("y", IN_SHAPE)],
                       [("cw", RNG.normal(size=(3, 3, 3, 3)))], opset=18)
    assert patterns_applied(model) == ["Conv", "Mish"]


# ---------------------------------------------------------------- the function properties

SPECS = [("Relu",), ("Clip", 0.0, 6.0), ("Clip", -1.0, 1.0), ("Clip", 2.0, -1.0),
         ("LeakyRelu", 0.1), ("LeakyRelu", -0.5), ("LeakyRelu", 0.0), ("Sigmoid",), ("Tanh",),
         ("HardSigmoid", 0.2, 0.5), ("HardSigmoid", -0.3, 0.5), ("HardSigmoid", 0.0, 0.7),
         ("HardSwish",), ("Elu", 1.0), ("Elu", -0.5), ("Elu", 0.0), ("Selu",) + SELU,
         ("Selu", -1.0, 1.0), ("Selu", 1.0, -1.0), ("Selu", -1.0, -1.0), ("Selu", -1.0, 0.0),
         ("Softplus",), ("PRelu", (0.25,)), ("PRelu", (-0.3,)), ("PRelu", (0.1, -0.2, 0.3)),
         ("PRelu", (0.1, 0.0, 2.0)), ("PRelu", (-0.1, -0.2)), ("SiLU",), ("Gelu",),
         ("GeluTanh",), ("Mish",)]
DENSE = np.linspace(-20.0, 20.0, 400_001)            # step 1e-4
HUGE = np.array([-1e200, -1e30, -1e10, -1e3, -50.0, -1e-300, 0.0, 1e-300, 50.0, 1e3, 1e10, 1e30, 1e200])


def rows(spec, y):
    """The function on y, one row per channel (one row unless a per-channel PRelu)."""
    channels = max(activation_per_channel(spec), 1)
    return activation_fn(spec, axis=0)(np.broadcast_to(y, (channels, y.size)))


def direction_changes(values):
    """The indices of `values` where it turns from falling to rising or back (flat steps skipped)."""
    steps = np.sign(np.diff(values))
    moving = np.flatnonzero(steps)
    turns = np.flatnonzero(steps[moving][1:] != steps[moving][:-1])
    return moving[turns + 1]


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_monotone_and_nonnegative_flags_match_dense_sampling(spec):
    values = rows(spec, np.concatenate([[-1e30, -1e3], DENSE, [1e3, 1e30]]))
    assert activation_is_monotone(spec) == bool(np.all(np.diff(values, axis=1) >= 0))
    assert activation_is_nonnegative(spec) == bool(np.all(values >= 0))


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_turning_points_are_where_the_direction_changes(spec):
    points = activation_turning_points(spec)
    assert points == sorted(points)
    found = [DENSE[i] for row in rows(spec, DENSE) for i in direction_changes(row)]
    step = DENSE[1] - DENSE[0]
    assert all(min(abs(f - p) for p in points) <= 2 * step for f in found), (found, points)
    assert all(min(abs(f - p) for f in found) <= 2 * step for p in points), (found, points)


def complex_step_slope(f, y, h=1e-30):
    """f'(y) to machine precision for an analytic f written with complex-safe numpy."""
    return f(np.asarray(y, dtype=np.complex128) + 1j * h).imag / h


SMOOTH = {   # the textbook definitions, independent of mcugen's own formulas
    "SiLU": lambda z: z / (1 + np.exp(-z)),
    "Gelu": lambda z: 0.5 * z * (1 + erf(z / np.sqrt(2))),
    "GeluTanh": lambda z: 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z ** 3))),
    "Mish": lambda z: z * np.tanh(np.log1p(np.exp(z))),
}


@pytest.mark.parametrize("name", list(SMOOTH))
def test_smooth_turning_points_to_double_precision(name):
    (t,) = activation_turning_points((name,))
    f = SMOOTH[name]
    assert abs(complex_step_slope(f, t)) < 1e-15
    assert complex_step_slope(f, t - 1e-12) < 0 < complex_step_slope(f, t + 1e-12)
    # and it is the minimum of mcugen's own function
    sigma = activation_fn((name,))
    assert sigma(t) <= min(sigma(t - 1e-6), sigma(t + 1e-6))
    np.testing.assert_allclose(sigma(np.linspace(-6, 6, 101)), f(np.linspace(-6, 6, 101)),
                               rtol=1e-14, atol=1e-15)


def test_turning_points_of_the_brief():
    assert abs(activation_turning_points(("SiLU",))[0] + 1.2784645) < 1e-7
    assert abs(activation_turning_points(("Gelu",))[0] + 0.7517915) < 1e-7
    hswish = activation_fn(("HardSwish",))
    assert activation_turning_points(("HardSwish",)) == [-1.5]
    assert hswish(-1.5 - 1e-3) > hswish(-1.5) < hswish(-1.5 + 1e-3)


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_huge_inputs_give_finite_values_without_floating_point_warnings(spec):
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        values = rows(spec, HUGE)
    assert np.all(np.isfinite(values))
    if spec[0] in ("SiLU", "Gelu", "GeluTanh", "Mish", "HardSwish", "Softplus", "Sigmoid"):
        assert values[0, 0] == values[0, 1] == 0.0          # f(-1e200), f(-1e30) -> 0
    if spec[0] in ("SiLU", "Gelu", "GeluTanh", "Mish", "HardSwish", "Softplus", "Relu", "Elu"):
        assert values[0, -2] == 1e30 and values[0, -1] == 1e200     # f(y) -> y


def test_per_channel_prelu_follows_the_axis():
    spec = ("PRelu", (0.5, -2.0, 0.0))
    y = RNG.normal(size=(2, 3, 4))
    want = np.where(y >= 0, y, np.array(spec[1]).reshape(1, 3, 1) * y)
    np.testing.assert_array_equal(activation_fn(spec)(y), want)
    np.testing.assert_array_equal(activation_fn(spec, axis=0)(y.transpose(1, 0, 2)),
                                  want.transpose(1, 0, 2))
    assert activation_per_channel(spec) == 3 and activation_per_channel(("PRelu", (0.5,))) == 0
    with pytest.raises(MCUGenError, match="PRelu"):
        activation_fn(spec, axis=0)(y)


# ---------------------------------------------------------------- the torch-exported example

def test_torch_exported_example_fuses_every_activation_and_matches_onnxruntime():
    path = EXAMPLES / "act_digits.onnx"
    graph = run_flow(import_model(read_model(path)))
    kinds = {spec[0] for spec in specs_of(graph)}
    assert kinds == {"SiLU", "PRelu", "Gelu", "HardSwish", "LeakyRelu", "GeluTanh", "Tanh", "Sigmoid"}
    assert [activation_per_channel(s) for s in specs_of(graph) if s[0] == "PRelu"] == [16]
    x = np.load(EXAMPLES / "act_digits_inputs.npy")
    labels = np.load(EXAMPLES / "act_digits_labels.npy")
    session = ort.InferenceSession(str(path))
    want = np.concatenate([session.run(None, {"pixels": xi[None]})[0] for xi in x])
    got = run_float(graph, x.astype(np.float64))[graph.output]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert (got.argmax(1) == labels).mean() >= 0.95
