"""The blocked MAC kernels (conv2d/dense templates): register-block remainders, tiles, channel
chunks, depthwise and grouped convs, bit-exact against the reference on the host and on RV32."""
import numpy as np
import pytest
from onnx import helper

import mcugen
import mcugen.codegen.kernel_plan as mac
from conftest import require_tool
from mcugen.lower.encoders.threshold import search_steps
from mcugen.verify import compare, verify_inputs
from onnx_factory import make_model, save, tensor

RNG = np.random.default_rng(11)


def w(*shape):
    return RNG.normal(size=shape) * 0.5


def conv_model(tmp_path, name, in_shape, weight, n_out=3, **attrs):
    """x -> Conv(weight, bias, attrs) -> Relu -> Flatten -> Gemm(n_out)."""
    probe = make_model([helper.make_node("Conv", ["x", "cw", "cb"], ["a"], **attrs)],
                       [tensor("x", in_shape)], [tensor("a", None)], [("cw", weight), ("cb", w(weight.shape[0]))])
    import onnx
    out_shape = onnx.shape_inference.infer_shapes(probe).graph.output[0].type.tensor_type.shape
    n_in = int(np.prod([d.dim_value for d in out_shape.dim]))
    nodes = [helper.make_node("Conv", ["x", "cw", "cb"], ["a"], name="conv", **attrs),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "gw", "gb"], ["y"], name="fc", transB=1)]
    inits = [("cw", weight), ("cb", w(weight.shape[0])), ("gw", w(n_out, n_in)), ("gb", w(n_out))]
    return save(make_model(nodes, [tensor("x", in_shape)], [tensor("y", [1, n_out])], inits),
                tmp_path / f"{name}.onnx")


CONVS = {
    # out_c 5 = one 4-block + 1; odd output width: pixel remainders; asymmetric pads, stride 2
    "oc5_3x3_s2_asym": ([1, 3, 9, 7], (5, 3, 3, 3), dict(strides=[2, 2], pads=[0, 1, 2, 0])),
    "oc5_1x1_s2": ([1, 6, 7, 9], (5, 6, 1, 1), dict(strides=[2, 2])),
    "oc3_only_remainder": ([1, 2, 5, 6], (3, 2, 3, 3), dict(pads=[1, 1, 1, 1])),
    "depthwise_3x3": ([1, 6, 7, 5], (6, 1, 3, 3), dict(group=6, pads=[1, 1, 1, 1])),
    "depthwise_multiplier2_s2": ([1, 3, 8, 8], (6, 1, 3, 3), dict(group=3, strides=[2, 2], pads=[1, 0, 1, 0])),
    "grouped_ocg5_dilated": ([1, 4, 9, 9], (10, 2, 3, 3), dict(group=2, dilations=[2, 2], pads=[2, 1, 2, 1])),
    "kernel_5x2_stride_2x1": ([1, 2, 10, 6], (8, 2, 5, 2), dict(strides=[2, 1], pads=[2, 0, 2, 1])),
    "tiny_1x1_output": ([1, 3, 3, 3], (5, 3, 3, 3), dict()),
    "pads_larger_than_kernel": ([1, 2, 4, 4], (4, 2, 2, 2), dict(pads=[3, 3, 3, 3])),
}


def check(path, tmp_path, schemes=(("power", 4, 8), ("uniform", 8, 8)), target="host", on="host", n=30):
    for scheme, wbits, abits in schemes:
        out = tmp_path / f"out_{scheme}_{target}"
        project = mcugen.build(path, out=out, target=target, scheme=scheme, wbits=wbits,
                               abits=abits, input_range=(-2.0, 2.0), first_last_bits="same")
        result = compare(out, project.schedule, verify_inputs(project.schedule, n, seed=3),
                         sanitize=on == "host", on=on)
        assert result.mismatches == 0, f"{scheme}: {result.first}"
    return project


@pytest.mark.parametrize("name", list(CONVS))
def test_conv_kernel_is_bit_exact(name, tmp_path, host_cc):
    in_shape, wshape, attrs = CONVS[name]
    check(conv_model(tmp_path, name, in_shape, w(*wshape), **attrs), tmp_path)


@pytest.mark.parametrize("limit", [40, 200, 400])
def test_tiles_and_channel_chunks_are_bit_exact(limit, tmp_path, host_cc, monkeypatch):
    """A small stack budget forces narrow tiles (400), one-block tiles and channel chunks (200,
    40: a single channel's band does not even fit, chunks of one channel)."""
    monkeypatch.setattr(mac, "KERNEL_STACK_LIMIT", limit)
    path = conv_model(tmp_path, "tiled", [1, 6, 11, 13], w(5, 6, 3, 3), pads=[1, 1, 1, 1])
    project = check(path, tmp_path)
    step = next(s for s in project.schedule.steps if s.kind == "conv2d")
    p = project.plan[step.name]
    assert p["tile_w"] < 13 or p["n_chunks"] > 1
    assert p["band_elems"] * 2 == p["stack_bytes"]
    if limit <= 200:
        assert p["n_chunks"] > 1


@pytest.mark.parametrize("n_out,k", [(3, 10), (7, 13), (8, 16)])
def test_dense_kernel_remainders_are_bit_exact(n_out, k, tmp_path, host_cc):
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="fc2", transB=1)]
    inits = [("w1", w(n_out, k)), ("b1", w(n_out)), ("w2", w(n_out, n_out)), ("b2", w(n_out))]
    path = save(make_model(nodes, [tensor("x", [1, k])], [tensor("y", [1, n_out])], inits),
                tmp_path / "dense.onnx")
    check(path, tmp_path)


def test_dense_without_buffer_is_bit_exact(tmp_path, host_cc, monkeypatch):
    monkeypatch.setattr(mac, "KERNEL_STACK_LIMIT", 8)
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["y"], name="fc1", transB=1)]
    path = save(make_model(nodes, [tensor("x", [1, 9])], [tensor("y", [1, 5])],
                           [("w1", w(5, 9)), ("b1", w(5))]), tmp_path / "dense.onnx")
    project = check(path, tmp_path)
    assert project.plan[project.schedule.steps[-1].name]["x_buffered"] == 0


@pytest.mark.parametrize("n", list(range(0, 70)) + [127, 128, 254, 255, 256, 511])
def test_threshold_search_counts_reached_thresholds(n):
    """The unrolled search the templates emit, run in Python: #{k : T[k] <= acc} for every acc."""
    p = search_steps(n)
    t = np.sort(RNG.integers(-50, 50, size=n))
    for acc in range(-52, 52):
        b = 0
        if p["enc_pre"] >= 0 and t[b + p["enc_pre"]] <= acc:
            b += p["enc_pre_step"]
        for step, probe in p["enc_steps"]:
            assert b + probe < n
            if t[b + probe] <= acc:
                b += step
        assert b == int(np.sum(t <= acc)), (n, acc)


def test_conv_blocking_stays_within_the_stack_budget():
    for cg, h, wd, k, s in [(3, 32, 32, 3, 1), (64, 8, 8, 3, 1), (512, 14, 14, 3, 1), (1, 49, 10, 10, 2)]:
        oh = (h - k) // s + 1
        ow = (wd - k) // s + 1
        params = {"in_c_per_group": cg, "k_h": k, "k_w": k, "stride_h": s, "stride_w": s,
                  "dil_h": 1, "dil_w": 1, "out_h": oh, "out_w": ow, "out_c_per_group": 16,
                  "weights_per_channel": cg * k * k}
        p = mac.conv_blocking(params, 2)
        assert p["stack_bytes"] <= mac.KERNEL_STACK_LIMIT
        assert p["chunk_c"] * p["n_chunks"] >= cg


def test_odd_shapes_are_bit_exact_on_rv32(tmp_path, host_cc):
    for tool in ("riscv64-unknown-elf-gcc", "qemu-system-riscv32"):
        require_tool(tool)
    in_shape, wshape, attrs = CONVS["oc5_3x3_s2_asym"]
    path = conv_model(tmp_path, "odd", in_shape, w(*wshape), n_out=3, **attrs)
    check(path, tmp_path, schemes=(("power", 4, 8),), target="rv32", on="qemu", n=20)
