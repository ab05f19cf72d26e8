"""LayerNormalization as one integer step (mcugen/ops/layernorm.py, the contract in
docs/design.md section 2) and the exporters' decomposed form fused into it
(frontend/patterns.py): the float IR against onnxruntime, the generated C bit for bit against
the reference (ASan/UBSan), the stated error bound on random rows, degenerate and near-constant
rows, the pattern's variants and what keeps it from fusing, on small hand-made graphs."""
import math
import re
import subprocess

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import mcugen
from conftest import require_tool
from mcugen.errors import MCUGenError
from mcugen.frontend.onnx_reader import import_model
from mcugen.ops.layernorm import error_model, integer_rows, measure, sample_codes
from mcugen.verify import compare, verify_inputs
from onnx_factory import float_ir_matches_onnxruntime, make_model, save, tensor

node = helper.make_node
IN_SHAPE = [1, 2, 5, 6]
TOKENS = [1, 10, 12]           # the conv's [1, 4, 5, 6] as 10 tokens of 12
BOTH = (("power", 4, 8), ("uniform", 8, 8))


def ln_model(form="op", tokens=TOKENS, axis=-1, gamma=None, beta=None, eps=1e-5, weight_scale=1.0,
             seed=3):
    """x -> Conv 3x3 (4 channels) -> Reshape to tokens -> LayerNorm (`form`) -> Flatten -> Gemm(3).
    Forms: "op" (LayerNormalization, opset 17), "op_no_bias" (B omitted), "decomposed" (opset
    13: ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul(gamma), Add(beta)),
    "decomposed_variant" (Mul(d, d), Mul by Reciprocal, a second Sub for the numerator,
    gamma and beta first), "decomposed_plain" (no gamma, no beta), "decomposed_opset18" (the
    means' axes an input)."""
    rng = np.random.default_rng(seed)
    norm_shape = tokens[axis % len(tokens):]
    gamma = rng.normal(size=norm_shape) if gamma is None else np.asarray(gamma, dtype=np.float64)
    beta = rng.normal(size=norm_shape) * 0.5 if beta is None else np.asarray(beta, dtype=np.float64)
    axes = list(range(axis % len(tokens) - len(tokens), 0))
    graph = [node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             node("Reshape", ["c1", "tok"], ["t"], name="to_tokens")]
    inits = [("w1", rng.normal(size=(4, 2, 3, 3)) * weight_scale), ("b1", rng.normal(size=4) * 0.3),
             ("g", gamma), ("be", beta), ("two", np.array(2.0)), ("eps", np.array(eps)),
             ("gw", rng.normal(size=(3, int(np.prod(tokens))))), ("gb", rng.normal(size=3))]
    opset = 13
    if form.startswith("op"):
        opset = 17
        inputs = ["t", "g"] if form == "op_no_bias" else ["t", "g", "be"]
        graph.append(node("LayerNormalization", inputs, ["n"], name="ln", axis=axis, epsilon=eps))
    else:
        mean = {"axes": axes}
        if form == "decomposed_opset18":
            opset, mean = 18, {}
        means = ["t", "axes"] if opset == 18 else ["t"]
        squares = ["d2", "axes"] if opset == 18 else ["d2"]
        graph += [node("ReduceMean", means, ["mu"], name="mean", **mean),
                  node("Sub", ["t", "mu"], ["d"], name="center")]
        if form == "decomposed_variant":
            graph += [node("Mul", ["d", "d"], ["d2"], name="square"),
                      node("ReduceMean", squares, ["var"], name="var", **mean),
                      node("Add", ["eps", "var"], ["ve"], name="add_eps"),
                      node("Sqrt", ["ve"], ["sd"], name="std"),
                      node("Reciprocal", ["sd"], ["inv"], name="inverse"),
                      node("Sub", ["t", "mu"], ["d_again"], name="center_again"),
                      node("Mul", ["inv", "d_again"], ["nd"], name="normalize"),
                      node("Mul", ["g", "nd"], ["ng"], name="gamma"),
                      node("Add", ["be", "ng"], ["n"], name="beta")]
        else:
            last = "n" if form == "decomposed_plain" else "nd"
            graph += [node("Pow", ["d", "two"], ["d2"], name="square"),
                      node("ReduceMean", squares, ["var"], name="var", **mean),
                      node("Add", ["var", "eps"], ["ve"], name="add_eps"),
                      node("Sqrt", ["ve"], ["sd"], name="std"),
                      node("Div", ["d", "sd"], [last], name="normalize")]
            if form != "decomposed_plain":
                graph += [node("Mul", ["nd", "g"], ["ng"], name="gamma"),
                          node("Add", ["ng", "be"], ["n"], name="beta")]
    graph += [node("Flatten", ["n"], ["f"], name="flatten"),
              node("Gemm", ["f", "gw", "gb"], ["y"], name="fc", transB=1)]
    model = make_model(graph, [tensor("x", IN_SHAPE)], [tensor("y", [1, 3])], inits, opset=opset)
    model.graph.initializer.append(numpy_helper.from_array(np.array(tokens, dtype=np.int64), "tok"))
    if opset == 18:
        model.graph.initializer.append(numpy_helper.from_array(np.array(axes, dtype=np.int64), "axes"))
    return model


def check_float_ir(path, n=4, scale=1.0):
    """mcugen's float IR of the model equals onnxruntime's output; returns the graph."""
    x = np.random.default_rng(11).uniform(-1, 1, size=[n] + IN_SHAPE[1:]) * scale
    return float_ir_matches_onnxruntime(path, x)


def check_bit_exact(path, tmp_path, configs, n=40):
    projects = []
    for scheme, wbits, abits in configs:
        out = tmp_path / f"{scheme}{wbits}{abits}"
        project = mcugen.build(path, out=out, scheme=scheme, wbits=wbits, abits=abits,
                               input_range=(-1.0, 1.0))
        kinds = [s.kind for s in project.schedule.steps]
        assert kinds == ["conv2d", "layernorm", "dense"], kinds
        result = compare(out, project.schedule, verify_inputs(project.schedule, n, seed=1),
                         sanitize=True)
        assert result.mismatches == 0, f"{scheme} W{wbits}A{abits}: {result.first}"
        projects.append((out, project))
    return projects


def ln_step(project):
    return next(s for s in project.schedule.steps if s.kind == "layernorm")


FORMS = ["op", "op_no_bias", "decomposed", "decomposed_variant", "decomposed_plain",
         "decomposed_opset18"]


@pytest.mark.parametrize("form", FORMS)
def test_every_form_is_one_layer_norm_matching_onnxruntime(form, tmp_path):
    path = save(ln_model(form), tmp_path / f"{form}.onnx")
    graph = check_float_ir(path)
    assert [n.op for n in graph.nodes] == ["Conv", "Reshape", "LayerNormalization", "Reshape", "Gemm"]


def test_two_trailing_axes_with_a_broadcast_scale(tmp_path, host_cc):
    """axis -2 of [1, 4, 5, 6]: rows of 30, Scale [6] broadcast over the 5 (ONNX LN, opset 17)."""
    rng = np.random.default_rng(5)
    path = save(ln_model("op", tokens=[1, 4, 5, 6], axis=-2, gamma=rng.normal(size=6),
                         beta=rng.normal(size=(5, 6))), tmp_path / "axis2.onnx")
    check_float_ir(path)
    (_, project), = check_bit_exact(path, tmp_path, configs=BOTH[:1])
    assert ln_step(project).params["n"] == 30 and ln_step(project).params["outer"] == 4


@pytest.mark.parametrize("form, configs", [("op", BOTH), ("decomposed", BOTH),
                                           ("decomposed_variant", BOTH[1:])],
                         ids=["op", "decomposed", "decomposed_variant"])
def test_layer_norm_is_bit_exact(form, configs, tmp_path, host_cc):
    """Gamma with negative entries, beta non-zero; power W4A8 and uniform W8A8."""
    path = save(ln_model(form), tmp_path / f"{form}.onnx")
    for _, project in check_bit_exact(path, tmp_path, configs):
        gamma = next(n for n in project.qgraph.graph.nodes if n.op == "LayerNormalization").params["scale"]
        assert gamma.min() < 0 < gamma.max()
        info = ln_step(project).info
        assert info["ln_bound_ratio"] <= 1.0 and info["ln_max_code_error"] <= 1, info


def test_stated_error_bound_holds_on_random_rows(tmp_path):
    """docs/design.md's bound, per element, on rows the lowering did not sample (another seed,
    more rows): the step's value before encoding against float LayerNorm on the decoded inputs."""
    rng = np.random.default_rng(2024)
    gamma = rng.normal(size=12)
    gamma[[1, 4]] = [0.0, -3.0]                   # a constant position, a large negative one
    path = save(ln_model("op", gamma=gamma), tmp_path / "ln.onnx")
    for scheme, wbits, abits in (("power", 4, 8), ("uniform", 8, 8), ("log2", 4, 8), ("power", 4, 4)):
        project = mcugen.build(path, scheme=scheme, wbits=wbits, abits=abits, input_range=(-1.0, 1.0))
        step = ln_step(project)
        graph_node = next(n for n in project.qgraph.graph.nodes if n.op == "LayerNormalization")
        x = project.qgraph.encodings[graph_node.inputs[0]]
        y = project.qgraph.encodings[graph_node.output]
        model = error_model(graph_node, x, y, step.info["x_frac_bits"])
        codes = np.concatenate([sample_codes(x, 12, rng) for _ in range(4)])
        codes = np.concatenate([codes, rng.integers(x.code_min, x.B + 1, size=(2000, 12))])
        measured = measure(step, model, codes)
        worst = float((measured["error"] / measured["bound"]).max())
        assert worst <= 1.0, f"{scheme} W{wbits}A{abits}: error / bound reaches {worst}"
        if scheme != "log2":   # (log2 codes near 0 are far apart: a tiny error can flip a sign)
            assert measured["code_error"].max() <= 1 + step.info["encoder_max_code_error"]
        assert step.info["constant_channels"] == 1
        if scheme == "uniform":          # the table is exact: only the integer steps' error
            assert measured["error"].max() <= 1e-6


def test_one_element_rows_output_beta(tmp_path, host_cc):
    """D = 1: every row is its own mean, y = 0 and the output is beta (ONNX's answer too)."""
    path = save(ln_model("op", tokens=[1, 120, 1], gamma=[1.5], beta=[0.75]), tmp_path / "d1.onnx")
    check_float_ir(path)
    (_, project), = check_bit_exact(path, tmp_path, configs=BOTH[1:], n=10)
    step = ln_step(project)
    assert step.info["constant_channels"] == 1 and step.info["ln_max_error"] == 0.0


def test_near_constant_rows_where_epsilon_dominates(tmp_path, host_cc):
    """Tiny conv weights: each token's values differ by a few codes, its variance far below
    epsilon; constant rows (the same code throughout) give beta exactly."""
    path = save(ln_model("op", eps=1e-2, weight_scale=1e-3), tmp_path / "flat.onnx")
    check_float_ir(path)
    projects = check_bit_exact(path, tmp_path, configs=BOTH[:1])
    step = ln_step(projects[0][1])
    p = step.params
    codes = np.full((3, p["n"]), 5, dtype=np.int64)
    codes[1, 3] = 6
    codes[2, ::2] = 4
    acc = integer_rows(p, step.consts, codes)
    np.testing.assert_array_equal(acc[0], step.consts["ln_bias"])
    assert np.all(np.abs(acc[1:] - step.consts["ln_bias"]) > 0)


def test_intermediates_read_elsewhere_keep_the_pattern_apart(tmp_path):
    """The centered value also feeds the output (a residual of it): the subgraph is not a
    LayerNorm on its own, so nothing fuses and the Pow is refused by name."""
    model = ln_model("decomposed")
    model.graph.node.insert(len(model.graph.node) - 2, node("Add", ["n", "d"], ["n2"], name="leak"))
    model.graph.node[-2].input[0] = "n2"
    path = save(model, tmp_path / "leak.onnx")
    with pytest.raises(MCUGenError, match=r"\(Pow\)|\(Sqrt\)"):
        import_model(onnx.load(str(path)))


def test_a_gamma_that_varies_by_token_stays_outside(tmp_path):
    """A Mul by a [10, 12] constant after the normalization is no LayerNorm gamma: the norm fuses
    without it and the Mul stays a constant operand."""
    model = ln_model("decomposed")
    g = next(i for i in model.graph.initializer if i.name == "g")
    g.CopyFrom(numpy_helper.from_array(np.random.default_rng(1).normal(size=(10, 12)).astype(np.float32), "g"))
    path = save(model, tmp_path / "gamma_tokens.onnx")
    graph = check_float_ir(path)
    ops = [n.op for n in graph.nodes]
    assert ops.count("LayerNormalization") == 1 and "Mul" in ops


def test_refusals_are_one_line(tmp_path):
    model = ln_model("op")
    model.graph.node.insert(2, node("ReduceMean", ["t"], ["g_run"], name="scale_at_run_time", axes=[0, 1], keepdims=0))
    model.graph.node[3].input[1] = "g_run"
    with pytest.raises(MCUGenError, match=r"\(LayerNormalization\): its Scale must be a constant"):
        import_model(onnx.load(str(save(model, tmp_path / "scale.onnx"))))
    model = ln_model("op")
    ln = model.graph.node[2]
    ln.output.append("mean")
    model.graph.node[3].input[0] = "mean"
    model.graph.node[4].CopyFrom(node("Gemm", ["f", "gw10", "gb"], ["y"], name="fc", transB=1))
    model.graph.initializer.append(numpy_helper.from_array(np.ones((3, 10), np.float32), "gw10"))
    with pytest.raises(MCUGenError, match=r"Mean or InvStdDev output is read"):
        import_model(onnx.load(str(save(model, tmp_path / "mean.onnx"))))


def test_the_integer_square_root_is_the_exact_floor(tmp_path, host_cc):
    """The generated C's square root loop, compiled on its own, against math.isqrt on the edges
    of its domain [2^60, 2^62) and on random values."""
    out = tmp_path / "proj"
    mcugen.build(save(ln_model("op"), tmp_path / "ln.onnx"), out=out, input_range=(-1.0, 1.0))
    source = (out / "model.c").read_text()
    loop = re.search(r"(uint64_t rem = w;.*?bit >>= 2;\s*\})", source, re.S).group(1)
    program = tmp_path / "isqrt.c"
    program.write_text("#include <stdint.h>\n#include <stdio.h>\n#include <stdlib.h>\n"
                       "int main(int argc, char **argv)\n{\n    for (int a = 1; a < argc; a++) {\n"
                       "        uint64_t w = strtoull(argv[a], 0, 10);\n" + loop +
                       "\n        printf(\"%llu\\n\", (unsigned long long)root);\n    }\n    return 0;\n}\n")
    subprocess.run(["cc", "-O1", "-fsanitize=undefined", "-fno-sanitize-recover", "-o",
                    str(tmp_path / "isqrt"), str(program)], check=True)
    rng = np.random.default_rng(0)
    roots = [2 ** 30, 2 ** 30 + 1, 2 ** 31 - 1] + [int(r) for r in rng.integers(2 ** 30, 2 ** 31, 40)]
    values = [2 ** 60, 2 ** 62 - 1] + [r * r + d for r in roots for d in (-1, 0, 1, 2 * r)]
    values += [int(v) for v in rng.integers(2 ** 60, 2 ** 62, 200, dtype=np.int64)]
    values = [v for v in values if 2 ** 60 <= v < 2 ** 62]
    got = subprocess.run([str(tmp_path / "isqrt")] + [str(v) for v in values], check=True,
                         capture_output=True, text=True).stdout.split()
    assert [int(g) for g in got] == [math.isqrt(v) for v in values]


@pytest.mark.parametrize("target", ["gap8", "hls"])
def test_layer_norm_on_gap8_and_hls(target, tmp_path, host_cc):
    if target == "hls":
        require_tool("g++")
    path = save(ln_model("decomposed"), tmp_path / "ln.onnx")
    out = tmp_path / target
    project = mcugen.build(path, out=out, target=target, input_range=(-1.0, 1.0))
    assert "layernorm" in [s.kind for s in project.schedule.steps]
    result = compare(out, project.schedule, verify_inputs(project.schedule, 10, seed=3), on="host")
    assert result.mismatches == 0, f"{target}: {result.first}"


RMS_FORMS = ["rms_reciprocal", "rms_div_one", "rms_div", "rms_op"]


def rms_model(form, seed=4):
    """x -> Conv -> tokens -> RMSNorm -> Flatten -> Gemm(3). Forms: Llama's dynamo export
    (Pow, ReduceMean, Add, Sqrt, Reciprocal, Mul x, Mul gamma), T5's TorchScript (Div(1, Sqrt)
    then Mul), a Div of x by the Sqrt, and ONNX's RMSNormalization (opset 23)."""
    rng = np.random.default_rng(seed)
    graph = [node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             node("Reshape", ["c1", "tok"], ["t"], name="to_tokens")]
    inits = [("w1", rng.normal(size=(4, 2, 3, 3))), ("b1", rng.normal(size=4) * 0.3),
             ("g", rng.normal(size=12)), ("two", np.array(2.0)), ("one", np.array(1.0)),
             ("eps", np.array(1e-6)), ("gw", rng.normal(size=(3, 120))), ("gb", rng.normal(size=3))]
    opset = 23 if form == "rms_op" else 13
    if form == "rms_op":
        graph.append(node("RMSNormalization", ["t", "g"], ["n"], name="rms", axis=-1, epsilon=1e-6))
    else:
        graph += [node("Pow", ["t", "two"], ["t2"], name="square"),
                  node("ReduceMean", ["t2"], ["ms"], name="mean_square", axes=[-1]),
                  node("Add", ["ms", "eps"], ["mse"], name="add_eps"),
                  node("Sqrt", ["mse"], ["rms"], name="root")]
        if form == "rms_div":
            graph.append(node("Div", ["t", "rms"], ["nd"], name="normalize"))
        else:
            inverse = node("Reciprocal", ["rms"], ["inv"], name="inverse") if form == "rms_reciprocal" \
                else node("Div", ["one", "rms"], ["inv"], name="inverse")
            graph += [inverse, node("Mul", ["t", "inv"], ["nd"], name="normalize")]
        graph.append(node("Mul", ["g", "nd"], ["n"], name="gamma"))
    graph += [node("Flatten", ["n"], ["f"], name="flatten"),
              node("Gemm", ["f", "gw", "gb"], ["y"], name="fc", transB=1)]
    model = make_model(graph, [tensor("x", IN_SHAPE)], [tensor("y", [1, 3])], inits, opset=opset)
    model.graph.initializer.append(numpy_helper.from_array(np.array(TOKENS, dtype=np.int64), "tok"))
    return model


@pytest.mark.parametrize("form", RMS_FORMS)
def test_rms_norm_forms_are_one_step_matching_onnxruntime(form, tmp_path):
    path = save(rms_model(form), tmp_path / f"{form}.onnx")
    graph = check_float_ir(path)
    norm = [n for n in graph.nodes if n.op == "LayerNormalization"]
    assert len(norm) == 1 and norm[0].attrs["center"] is False and len(graph.nodes) == 5


def test_rms_norm_is_bit_exact_within_its_bound(tmp_path, host_cc):
    """Without centering (s1 = 0): the C against the reference, and the stated bound (with
    sqrt(n) for Samuelson's sqrt(n - 1)) on the lowering's sampled rows and more."""
    path = save(rms_model("rms_reciprocal"), tmp_path / "rms.onnx")
    rng = np.random.default_rng(7)
    for _, project in check_bit_exact(path, tmp_path, BOTH):
        step = ln_step(project)
        assert step.params["center"] == 0 and step.info["ln_bound_ratio"] <= 1.0, step.info
        graph_node = next(n for n in project.qgraph.graph.nodes if n.op == "LayerNormalization")
        x = project.qgraph.encodings[graph_node.inputs[0]]
        y = project.qgraph.encodings[graph_node.output]
        codes = np.concatenate([sample_codes(x, 12, rng), rng.integers(x.code_min, x.B + 1, size=(2000, 12))])
        measured = measure(step, error_model(graph_node, x, y, step.info["x_frac_bits"]), codes)
        assert float((measured["error"] / measured["bound"]).max()) <= 1.0


def instance_norm_model(form, seed=4, channels=4, eps=1e-5):
    """x -> Conv 3x3 (`channels`) -> a normalization over H x W per channel -> Flatten ->
    Gemm(3). Forms: "instance" (InstanceNormalization with its Scale and B per channel, as
    nn.InstanceNorm2d(affine=True) exports it) and "group" (nn.GroupNorm(2, C) as both torch
    exporters write it: Reshape [1, 2, -1], the op with Scale 1 and B 0, Reshape back, Mul and
    Add by [C, 1, 1])."""
    rng = np.random.default_rng(seed)
    shape = [1, channels] + IN_SHAPE[2:]
    gamma, beta = rng.normal(size=channels), rng.normal(size=channels) * 0.5
    graph = [node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1])]
    inits = [("w1", rng.normal(size=(channels, 2, 3, 3))), ("b1", rng.normal(size=channels) * 0.3),
             ("gw", rng.normal(size=(3, int(np.prod(shape))))), ("gb", rng.normal(size=3))]
    if form == "instance":
        graph.append(node("InstanceNormalization", ["c1", "g", "be"], ["n"], name="in", epsilon=eps))
        inits += [("g", gamma), ("be", beta)]
    else:
        graph += [node("Reshape", ["c1", "grouped"], ["t"], name="to_groups"),
                  node("InstanceNormalization", ["t", "ones", "zeros"], ["tn"], name="gn", epsilon=eps),
                  node("Reshape", ["tn", "back"], ["u"], name="from_groups"),
                  node("Mul", ["u", "g"], ["v"], name="gn_scale"),
                  node("Add", ["v", "be"], ["n"], name="gn_shift")]
        inits += [("ones", np.ones(2)), ("zeros", np.zeros(2)), ("g", gamma.reshape(-1, 1, 1)),
                  ("be", beta.reshape(-1, 1, 1))]
    graph += [node("Flatten", ["n"], ["f"], name="flat"),
              node("Gemm", ["f", "gw", "gb"], ["y"], name="fc", transB=1)]
    model = make_model(graph, [tensor("x", IN_SHAPE)], [tensor("y", [1, 3])], inits, opset=17)
    if form == "group":
        for name, value in (("grouped", [1, 2, -1]), ("back", shape)):
            model.graph.initializer.append(numpy_helper.from_array(np.array(value, np.int64), name))
    return model


@pytest.mark.parametrize("form", ["instance", "group"])
def test_instance_and_group_norm_are_a_layer_norm_per_channel(form, tmp_path, host_cc):
    """Rows of one channel (or group) over H x W, the per-channel Scale and B one recode after
    it (a GroupNorm's Mul and Add folded into one): float IR against onnxruntime, the C bit for
    bit against the reference under ASan/UBSan, power W4A8 and uniform W8A8."""
    path = save(instance_norm_model(form), tmp_path / f"{form}.onnx")
    check_float_ir(path)
    for scheme, wbits, abits in BOTH:
        out = tmp_path / f"{scheme}{wbits}{abits}"
        project = mcugen.build(path, out=out, scheme=scheme, wbits=wbits, abits=abits,
                               input_range=(-1.0, 1.0))
        assert [s.kind for s in project.schedule.steps] == ["conv2d", "layernorm", "recode", "dense"]
        step = ln_step(project)
        rows = 2 if form == "group" else 4
        assert (step.params["outer"], step.params["n"]) == (rows, 4 * 30 // rows)
        result = compare(out, project.schedule, verify_inputs(project.schedule, 40, seed=1),
                         sanitize=True)
        assert result.mismatches == 0, f"{scheme} W{wbits}A{abits}: {result.first}"


def test_instance_norm_without_spatial_axes_is_one_line(tmp_path):
    model = instance_norm_model("instance")
    model.graph.node.insert(1, node("Flatten", ["c1"], ["c1f"], name="flat0"))
    model.graph.node[2].input[0] = "c1f"
    with pytest.raises(MCUGenError, match="InstanceNormalization.*supported: \\[1, C, D1"):
        import_model(onnx.load(str(save(model, tmp_path / "flat_in.onnx"))))
