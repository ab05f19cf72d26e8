"""The hls target's `--io stream` dataflow: processes on pixel streams C-simulate bit-exact, the
FIFO depths come from the schedule's simulation (a residual skip holds what the other branch
delays), the cycle simulation agrees with the estimate and finds deadlocks, and `mcugen verify`
runs it."""
import json
import time
from dataclasses import replace

import numpy as np
import pytest
from onnx import helper

import mcugen
from conftest import MODELS, require_tool, shared_model
from mcugen.codegen import hls_estimate as estimate
from mcugen.codegen import hls_plan, hls_sim, hls_stream
from mcugen.targets import get_target
from onnx_factory import make_model, save, tensor
from test_hls import assert_bit_exact, assert_roms_fit_their_widths, assert_well_formed, build_hls
from test_project_dir import mcugen_cli


@pytest.fixture
def gxx():
    require_tool("g++")


def residual(path, stride=1):
    """x [1, 3, 8, 8] -> conv 3x3 -> relu -> (conv 3x3 -> relu -> conv 3x3 (stride, pads)) + skip
    (1x1 conv, same stride) -> relu -> depthwise 3x3 -> relu -> maxpool 2x2 -> flatten -> gemm."""
    rng = np.random.default_rng(9)
    pads = dict(pads=[0, 0, 1, 1]) if stride == 2 else dict(pads=[1, 1, 1, 1])
    n = 8 // stride
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], strides=[stride, stride], **pads),
             helper.make_node("Conv", ["r0", "ws", "bs"], ["cs"], strides=[stride, stride]),
             helper.make_node("Add", ["c2", "cs"], ["a"]),
             helper.make_node("Relu", ["a"], ["ra"]),
             helper.make_node("Conv", ["ra", "wd", "bd"], ["cd"], group=6, pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["cd"], ["rd"]),
             helper.make_node("MaxPool", ["rd"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["mp"], ["f"]),
             helper.make_node("Gemm", ["f", "gw", "gb"], ["y"], transB=1)]
    inits = [("w0", rng.normal(size=(4, 3, 3, 3))), ("b0", rng.normal(size=4) * 0.1),
             ("w1", rng.normal(size=(4, 4, 3, 3))), ("b1", rng.normal(size=4) * 0.1),
             ("w2", rng.normal(size=(6, 4, 3, 3))), ("b2", rng.normal(size=6) * 0.1),
             ("ws", rng.normal(size=(6, 4, 1, 1))), ("bs", rng.normal(size=6) * 0.1),
             ("wd", rng.normal(size=(6, 1, 3, 3))), ("bd", rng.normal(size=6) * 0.1),
             ("gw", rng.normal(size=(5, 6 * (n // 2) ** 2))), ("gb", rng.normal(size=5))]
    return save(make_model(nodes, [tensor("x", [1, 3, 8, 8])], [tensor("y", [1, 5])], inits), path)


def branches(path):
    """x [1, 4, 8, 8] -> grouped conv 3x3 (2 groups, 3 outputs each) -> relu -> maxpool 3x3
    stride 2 pad 1 -> (conv 1x1 -> relu) and (grouped conv 3x3, 3 groups of 2 -> relu) ->
    concat on channels -> average pool 3x3 stride 1 pad 1 -> flatten -> gemm."""
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], group=2, pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("MaxPool", ["r0"], ["m"], kernel_shape=[3, 3], strides=[2, 2],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["m", "wa", "ba"], ["ca"]),
             helper.make_node("Relu", ["ca"], ["ra"]),
             helper.make_node("Conv", ["m", "wb", "bb"], ["cb"], group=3, pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["cb"], ["rb"]),
             helper.make_node("Concat", ["ra", "rb"], ["cat"], axis=1),
             helper.make_node("AveragePool", ["cat"], ["ap"], kernel_shape=[3, 3], strides=[1, 1],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Flatten", ["ap"], ["f"]),
             helper.make_node("Gemm", ["f", "gw", "gb"], ["y"], transB=1)]
    inits = [("w0", rng.normal(size=(6, 2, 3, 3))), ("b0", rng.normal(size=6) * 0.1),
             ("wa", rng.normal(size=(4, 6, 1, 1))), ("ba", rng.normal(size=4) * 0.1),
             ("wb", rng.normal(size=(6, 2, 3, 3))), ("bb", rng.normal(size=6) * 0.1),
             ("gw", rng.normal(size=(5, 10 * 4 * 4))), ("gb", rng.normal(size=5))]
    return save(make_model(nodes, [tensor("x", [1, 4, 8, 8])], [tensor("y", [1, 5])], inits), path)


def kinds(project) -> dict:
    return {p.step: p.kind for p in project.plan["processes"] if p.step}


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("bits", ["w4a4", "w8a8"])
def test_residual_dataflow_is_bit_exact(stride, bits, tmp_path, gxx):
    """Every layer streams natively (convs with line buffers, the depthwise conv, the Add with
    its skip as a stream, the pool, the dense), and the C simulation matches the reference."""
    config = (dict(wbits=4, abits=4, first_last_bits="same") if bits == "w4a4"
              else dict(scheme="uniform", wbits=8, abits=8))
    out = tmp_path / "hls"
    project = build_hls(residual(tmp_path / "m.onnx", stride), out, io="stream", fit=True,
                        input_range=(-1.0, 1.0), **config)
    assert set(kinds(project).values()) == {"conv", "add", "pool", "dense"}, kinds(project)
    assert "fanout_" in (out / "firmware" / "model.cpp").read_text()
    assert_well_formed(out)
    assert_roms_fit_their_widths(out)
    if bits == "w4a4":       # power grids: every product ROM can keep one row per weight magnitude
        roms = [sm for sm in project.plan["smacs"].values() if sm.mac.product is not None]
        assert roms and all(any(m.negate_w is not None and m.negate_w.any() for m in sm.plans)
                            for sm in roms)
        # and the design takes some: the C simulation below runs the folded lanes
        assert any(sm.mac.negate_w is not None for sm in roms)
    assert_bit_exact(project, out, n=6)


@pytest.mark.parametrize("bits", ["w4a4", "w8a8"])
def test_grouped_convs_concat_and_padded_pools_stream_bit_exact(bits, tmp_path, gxx):
    """Grouped convs (several outputs per group) are conv processes, the 3x3 stride-2 pad-1 max
    pool and the overlapping padded average pool window processes with line buffers, the
    concat on channels a process of its own (recoding one input): none buffers a whole tensor,
    and the C simulation matches the reference."""
    config = (dict(wbits=4, abits=4, first_last_bits="same") if bits == "w4a4"
              else dict(scheme="uniform", wbits=8, abits=8))
    out = tmp_path / "hls"
    project = build_hls(branches(tmp_path / "m.onnx"), out, io="stream", fit=True,
                        input_range=(-1.0, 1.0), **config)
    assert set(kinds(project).values()) == {"conv", "window_pool", "concat", "dense"}, kinds(project)
    steps = {s.name: s for s in project.schedule.steps}
    grouped = [n for n, k in kinds(project).items() if k == "conv" and steps[n].params["group"] > 1]
    assert len(grouped) == 2 and all(steps[n].params["out_c_per_group"] > 1 for n in grouped)
    h = project.report["hls"]
    assert abs(h["sim_latency_cycles"] - h["latency_cycles"]) <= 0.05 * h["latency_cycles"]
    assert_well_formed(out)
    assert_bit_exact(project, out, n=6)


def pools(path):
    """x [1, 4, 9, 9] -> grouped conv (stride 2, dilation 2) -> relu -> maxpool 3x3 dilation 2
    pad 2 -> maxpool 2x2 stride 1 -> average pool 3x3 stride 2 pad 1 (pads counted, ceil mode) ->
    concat of that with itself -> global average pool -> flatten -> gemm."""
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], group=2, strides=[2, 2],
                              dilations=[2, 2], pads=[2, 2, 2, 2]),
             helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("MaxPool", ["r0"], ["m1"], kernel_shape=[3, 3], dilations=[2, 2],
                              pads=[2, 2, 2, 2]),
             helper.make_node("MaxPool", ["m1"], ["m2"], kernel_shape=[2, 2], strides=[1, 1]),
             helper.make_node("AveragePool", ["m2"], ["a1"], kernel_shape=[3, 3], strides=[2, 2],
                              pads=[1, 1, 1, 1], count_include_pad=1, ceil_mode=1),
             helper.make_node("Concat", ["a1", "a1"], ["cat"], axis=1),
             helper.make_node("GlobalAveragePool", ["cat"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "gw", "gb"], ["y"], transB=1)]
    inits = [("w0", rng.normal(size=(6, 2, 3, 3))), ("b0", rng.normal(size=6) * 0.1),
             ("gw", rng.normal(size=(3, 12))), ("gb", rng.normal(size=3))]
    return save(make_model(nodes, [tensor("x", [1, 4, 9, 9])], [tensor("y", [1, 3])], inits), path)


def test_dilated_overlapping_and_global_pools_stream_bit_exact(tmp_path, gxx):
    """Dilated, overlapping and ceil-mode pools with counted pads are window processes, a global
    average pool (stride 1, one window) a row-accumulator pool, a concat of a stream with itself
    reads both copies of its fork: bit-exact, the simulation equal to the estimate."""
    out = tmp_path / "hls"
    project = build_hls(pools(tmp_path / "m.onnx"), out, io="stream", fit=True, input_range=(-1.0, 1.0),
                        wbits=4, abits=4, first_last_bits="same")
    assert list(kinds(project).values()) == ["conv", "window_pool", "window_pool", "window_pool",
                                             "concat", "pool", "dense"], kinds(project)
    h = project.report["hls"]
    assert (h["sim_latency_cycles"], h["sim_interval_cycles"]) == (h["latency_cycles"], h["interval_cycles"])
    assert_bit_exact(project, out, n=8)


def test_a_concat_off_the_channels_buffers_the_whole_tensor(tmp_path):
    """Concatenated along the rows, an output beat is not the inputs' beats side by side: the
    step keeps the whole-tensor process."""
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Concat", ["c", "x"], ["cat"], axis=2),
             helper.make_node("Flatten", ["cat"], ["f"]),
             helper.make_node("Gemm", ["f", "gw", "gb"], ["y"], transB=1)]
    inits = [("w", rng.normal(size=(2, 2, 3, 3))), ("b", np.zeros(2)),
             ("gw", rng.normal(size=(3, 2 * 8 * 4))), ("gb", np.zeros(3))]
    model = save(make_model(nodes, [tensor("x", [1, 2, 4, 4])], [tensor("y", [1, 3])], inits),
                 tmp_path / "m.onnx")
    project = mcugen.build(model, target="hls", input_range=(-1.0, 1.0), wbits=4, abits=4,
                           target_options={"io": "stream", "interval": 500})
    assert sorted(kinds(project).values()) == ["conv", "dense", "whole"], kinds(project)


def test_a_folded_rom_costs_its_negation(tmp_path):
    """In BRAM a folded ROM takes the blocks of the unfolded one (27 bits still need two 18-bit
    halves for two read ports) and its lanes still invert their products and count the
    inversions: more LUTs, so a layer whose ROMs sit in BRAM keeps them unfolded."""
    project = mcugen.build(residual(tmp_path / "m.onnx"), target="hls", input_range=(-1.0, 1.0),
                           wbits=4, abits=4, target_options={"io": "stream", "interval": 2000})
    steps = {s.name: s for s in project.schedule.steps}
    name, sm = next((n, sm) for n, sm in project.plan["smacs"].items()
                    if any(m.negate_w is not None for m in sm.plans) and steps[n].kind == "conv2d")
    step, fpga = steps[name], project.plan["fpga"]
    costs = {}
    for v in [sm] + hls_stream.variants(sm, step.params["out_c"]):
        if v.mac.product is not None and v.rom_impl == "bram":
            costs[v.mac.negate_w is not None] = hls_stream.mac_resources(step, v, fpga)
    assert costs[True]["bram_18k"] == costs[False]["bram_18k"]
    extra = sm.lanes * hls_stream.negate_luts(next(m for m in sm.plans if m.negate_w is not None))
    assert costs[True]["lut"] - costs[False]["lut"] >= extra - sm.lanes * 8    # less the decode bits
    assert hls_stream.negate_luts(next(m for m in sm.plans if m.negate_w is not None)) > 8
    # so the design keeps every ROM it puts in BRAM unfolded
    chosen = [v for v in project.plan["smacs"].values() if v.mac.product is not None]
    assert any(v.rom_impl == "bram" for v in chosen)
    assert all(v.mac.negate_w is None for v in chosen if v.rom_impl == "bram")


def folded_products(m, codes, xs) -> np.ndarray:
    """What a lane adds for weight code c and window value x: the ROM entry, negated by the
    code's bit (the template's add or subtract)."""
    sign = 1 - 2 * (m.negate_w if m.negate_w is not None else np.zeros(len(m.decode_w), int))
    return np.array([[int(sign[c]) * int(m.product[int(m.decode_w[c]) + x]) for x in xs] for c in codes])


def test_product_rom_folds_signs_bit_exact():
    """A weight grid symmetric about zero keeps one ROM row per magnitude (8 of 15 rows), non-
    negative on unsigned inputs so a bit narrower, and every lane still adds the same integer;
    a grid whose rows are not negatives of each other (a rounding asymmetry) is left alone."""
    dw = np.array([-7, -5, -3, -2, -1, 0, 1, 2, 3, 5, 7], dtype=np.int64) * 3
    dx = np.arange(16, dtype=np.int64) * 5 + (np.arange(16) > 0)
    plan = mac_plan_for(dw, dx)
    folded = hls_plan.fold_signs(plan, (0, 15))
    codes, xs = range(len(dw)), range(16)
    assert folded.product.size == 6 * 16 and folded.product.min() >= 0
    assert folded.product_t.startswith("ap_uint") and \
        hls_plan.type_bits(folded.product_t) == hls_plan.type_bits(plan.product_t) - 1
    assert (folded_products(folded, codes, xs) == folded_products(plan, codes, xs)).all()
    skewed = plan.product.copy()
    skewed[int(plan.decode_w[0]) + 3] += 1
    assert hls_plan.fold_signs(replace(plan, product=skewed), (0, 15)).negate_w is not None
    assert hls_plan.fold_signs(replace(plan, product=skewed), (0, 15)).product.size == 7 * 16
    asym = replace(plan, product=plan.product + 1)
    assert hls_plan.fold_signs(asym, (0, 15)) is asym


def mac_plan_for(dw, dx):
    """A product-ROM MacPlan of `dw` x `dx` (rows of 16 entries, the window holding codes)."""
    table = np.outer(dw, dx).reshape(-1)
    starts = np.arange(len(dw), dtype=np.int64) * len(dx)
    return hls_plan.MacPlan(
        k=4, lanes=1, chunks=4, ragged=0, multiply="rom", weight_rom=np.zeros(8, np.int8),
        weight_t="ap_uint<4>", decode_w=starts, decode_w_t=hls_plan.array_type(starts),
        decode_x=None, x_offset=0, window_t="ap_uint<4>", product=table,
        product_t=hls_plan.array_type(table), prod_t=hls_plan.array_type(table),
        bias_t="ap_int<8>", acc_t="ap_int<16>", acc_bits=16)


def test_constant_bits_of_a_decode_table_cost_no_luts():
    """Row starts 0, 16, ..., 112 in an 8-bit table vary in 3 bits: the LUTs a lane's decode
    table takes."""
    assert estimate.varying_bits(np.arange(8) * 16, 8) == 3
    assert estimate.varying_bits(np.array([-1, 0]), 4) == 4
    assert estimate.varying_bits(np.array([5, 5]), 4) == 0


def test_fifo_depths_come_from_the_schedule(tmp_path):
    """The skip branch into the Add holds what the main branch delays: deeper than Vitis's
    default 2; with every FIFO at 2 the simulation deadlocks and names the full ones. The report
    lists every FIFO with its storage."""
    project = mcugen.build(residual(tmp_path / "m.onnx"), target="hls", input_range=(-1.0, 1.0),
                           wbits=4, abits=4, target_options={"io": "stream", "interval": 2000})
    design = project.plan
    add = next(p for p in design["processes"] if p.kind == "add")
    depths = {s: design["streams"][s].depth for s in add.ins}
    assert max(depths.values()) > 2, depths
    stuck = hls_sim.simulate(design, {n: 2 for n in design["streams"]})
    assert stuck.deadlock and stuck.full
    fifos = project.report["hls"]["fifos"]
    assert {f["name"] for f in fifos} == set(design["streams"])
    assert all(f["impl"] in ("srl", "bram") and f["depth"] >= 2 for f in fifos)


def test_lutram_is_counted_per_layer_per_fifo_and_in_the_fit(tmp_path):
    """LUTs used as memory (line buffers, SRL FIFOs) are a column of their own, part of the LUTs,
    and a budget the fit checks (a part with fewer SLICEMs fits less); ROMs in LUTs are logic."""
    project = mcugen.build(residual(tmp_path / "m.onnx"), target="hls", input_range=(-1.0, 1.0),
                           wbits=4, abits=4, target_options={"io": "stream", "interval": 2000})
    h, design = project.report["hls"], project.plan
    fifos = {f["name"]: f for f in h["fifos"]}
    assert all(f["lutram"] == (f["lut"] if f["impl"] == "srl" else 0) for f in fifos.values())
    layers = {layer["step"]: layer for layer in project.report["layers"]}
    convs = [n for n, k in kinds(project).items() if k == "conv"]
    assert all(0 < layers[n]["lutram"] <= layers[n]["lut"] for n in convs)     # the line buffers
    assert 0 < h["lutram"] < h["lut"] and h["budget"]["lutram"] == 17400
    assert sum(layers[n]["lutram"] for n in layers) + sum(f["lutram"] for f in fifos.values()) == h["lutram"]
    totals = hls_stream.resource_totals(design)
    fpga = dict(design["fpga"], lutram=totals["lutram"])
    assert hls_stream.fits(totals, dict(fpga, lutram=10 * totals["lutram"]))
    assert not hls_stream.fits(totals, fpga)
    text = "\n".join(get_target("hls").report_lines(project.report))
    assert "LUTRAM" in text and f"{h['lutram']:,}/17,400" in text


@pytest.mark.parametrize("interval", [1500, 4000, 20000])
def test_the_simulation_agrees_with_the_estimate(interval, tmp_path):
    """Within 5 % on interval and latency, no deadlock, and the busiest layer meets the target
    the parallelism was chosen for (one beat a cycle at the input is the floor)."""
    project = mcugen.build(residual(tmp_path / "m.onnx"), target="hls", input_range=(-1.0, 1.0),
                           wbits=4, abits=4, target_options={"io": "stream", "interval": interval})
    h = project.report["hls"]
    assert not h["sim_deadlock"]
    for key in ("interval", "latency"):
        est, sim = h[f"{key}_cycles"], h[f"sim_{key}_cycles"]
        assert abs(est - sim) <= 0.05 * sim, (key, est, sim)
    assert h["interval_cycles"] <= interval * 1.05


def test_emission_tables_follow_strides_and_padding():
    """3x3, stride 2, pads (0, 0, 1, 1) on 8 x 8: output column ox ends at input column 2 ox + 2,
    the last one in the padding, so at 7; rows alike; every output emitted once."""
    p = dict(in_h=8, in_w=8, out_h=4, out_w=4, k_h=3, k_w=3, stride_h=2, stride_w=2, pad_top=0,
             pad_left=0, dil_h=1, dil_w=1)
    rows, cols = hls_stream.emit_tables(p)
    assert list(cols) == [0, 0, 1, 0, 1, 0, 1, 1] and list(rows) == list(cols)
    assert hls_stream.emissions(rows, cols, 4).sum() == 16
    same = dict(p, stride_h=1, stride_w=1, out_h=8, out_w=8, pad_top=1, pad_left=1)
    rows, cols = hls_stream.emit_tables(same)
    assert list(cols) == [0, 1, 1, 1, 1, 1, 1, 2] and list(rows) == [0, 1, 1, 1, 1, 1, 1, 2]
    n = hls_stream.emissions(rows, cols, 8).reshape(8, 8)
    assert n[7, 7] == 2 + 8 and n.sum() == 64     # the last row's outputs and the whole bottom row


def test_verify_runs_the_cycle_simulation(tmp_path, gxx):
    out = tmp_path / "hls"
    build_hls(residual(tmp_path / "m.onnx"), out, io="stream", input_range=(-1.0, 1.0), wbits=4,
              abits=4, interval=3000)
    code, stdout, err = mcugen_cli("verify", out, "--n", "2")
    assert code == 0, err
    verified = json.loads((out / "report.json").read_text())["hls"]["verified"]
    assert verified["interval"] > 0 and not verified["deadlock"]
    assert f"interval {verified['interval']:,} cycles" in stdout and "no deadlock" in stdout
    code, stdout, _ = mcugen_cli("report", out)
    assert "cycle simulation (mcugen verify" in stdout and "FIFO" in stdout
    flow = json.loads((out / "dataflow.json").read_text())
    flow["streams"] = [dict(s, depth=1) for s in flow["streams"]]
    (out / "dataflow.json").write_text(json.dumps(flow))
    with pytest.raises(mcugen.MCUGenError, match="deadlocks"):
        hls_sim.check_project(out)


def test_mnist8_stream_csim_builds_quickly(tmp_path, gxx):
    out = tmp_path / "hls"
    project = build_hls(shared_model("mnist8"), out, io="stream", input_range=(0.0, 255.0))
    start = time.perf_counter()
    assert_bit_exact(project, out, n=4)
    assert time.perf_counter() - start < 15


def test_interval_options_need_a_stream(tmp_path):
    code, _, err = mcugen_cli("build", shared_model("sine"), "--target", "hls", "--interval", "100",
                              "-o", tmp_path / "out")
    assert code == 1 and "need --io stream" in err and "Traceback" not in err, err


@pytest.mark.parametrize("name", list(MODELS))
def test_every_shared_model_streams_bit_exact(name, tmp_path, gxx):
    """Each shared model's stream design (W4A4, fitted to pynq-z2) C-simulates bit-exact, the
    cycle simulation finds no deadlock with the planned FIFO depths, and agrees with the
    estimate."""
    out = tmp_path / "hls"
    project = build_hls(shared_model(name), out, board="pynq-z2", io="stream", fit=True,
                        input_range=MODELS[name], wbits=4, abits=4, first_last_bits="same")
    assert_bit_exact(project, out, n=6)
    h = project.report["hls"]
    assert abs(h["sim_latency_cycles"] - h["latency_cycles"]) <= 0.05 * h["latency_cycles"]
    assert abs(h["sim_interval_cycles"] - h["interval_cycles"]) <= 0.05 * h["interval_cycles"]
    assert hls_sim.check_project(out)["interval"] == h["sim_interval_cycles"]
