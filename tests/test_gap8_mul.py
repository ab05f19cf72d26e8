"""The GAP8 Mul kernel (templates/gap8/ops/mul_cluster.c.j2): a mul step tiled in chunks of output
elements on the cluster, its broadcast operand (an SE gate, a spatial map, a row) whole in L1
and indexed through the loop strides. Every broadcast a small graph reaches, in one tile and in
many, bit-exact against the reference in the PMSIS emulation (ASan+UBSan) and under qemu; a
product of two broadcast operands stays on the fabric controller."""
import copy

import numpy as np
import pytest
from onnx import helper, numpy_helper

import mcugen
from mcugen.codegen import gap8
from mcugen.boards import get_board
from mcugen.errors import MCUGenError
from mcugen.verify import compare, verify_inputs
from onnx_factory import make_model, save, tensor
from test_gap8 import small_l1_board, write_gap8
from conftest import require_tool

C, H, W = 3, 20, 23      # odd sizes: tiles and cores split the output inside rows and planes
# mul layer -> whether it runs on the cluster (both operands broadcast: the FC)
MULS = {"gate": True, "gate_swapped": True, "spatial": True, "same": True, "rows": True,
        "outer": False}


def mul_model(path):
    """x (signed) and relu(x), and the operands the muls broadcast: gate [1,C,1,1] (an SE
    gate: sigmoid of a Gemm of the mean), spatial [1,1,H,W], rows [1,C,1,W], column [1,1,H,1];
    x*gate, gate*relu, x*spatial, x*relu, x*rows, rows*column, concatenated. The layers beside
    the muls need little L1, so a small L1 tiles every mul."""
    node = helper.make_node
    nodes = [node("Relu", ["x"], ["r"], name="relu"),
             node("GlobalAveragePool", ["r"], ["pool"], name="pool"),
             node("Flatten", ["pool"], ["flat"], name="flatten"),
             node("Gemm", ["flat", "gw", "gb"], ["fc"], name="fc", transB=1),
             node("Sigmoid", ["fc"], ["gate_flat"], name="sigmoid"),
             node("Reshape", ["gate_flat", "gate_shape"], ["gate_v"], name="reshape"),
             node("ReduceMean", ["r"], ["spatial_v"], name="mean_c", axes=[1], keepdims=1),
             node("ReduceMean", ["x"], ["rows_v"], name="mean_h", axes=[2], keepdims=1),
             node("ReduceMax", ["spatial_v"], ["column_v"], name="max_w", axes=[3], keepdims=1),
             node("Mul", ["x", "gate_v"], ["m1"], name="gate"),
             node("Mul", ["gate_v", "r"], ["m2"], name="gate_swapped"),
             node("Mul", ["x", "spatial_v"], ["m3"], name="spatial"),
             node("Mul", ["x", "r"], ["m4"], name="same"),
             node("Mul", ["x", "rows_v"], ["m5"], name="rows"),
             node("Mul", ["rows_v", "column_v"], ["m6"], name="outer"),
             node("Concat", ["m1", "m2", "m3", "m4", "m5", "m6"], ["y"], name="concat", axis=1)]
    rng = np.random.default_rng(3)
    inits = [("gw", rng.normal(size=(C, C))), ("gb", rng.normal(size=C) * 0.1)]
    model = make_model(nodes, [tensor("x", [1, C, H, W])], [tensor("y", [1, 6 * C, H, W])], inits)
    model.graph.initializer.append(numpy_helper.from_array(np.array([1, C, 1, 1]), "gate_shape"))
    return save(model, path)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return mul_model(tmp_path_factory.mktemp("mul") / "mul.onnx")


@pytest.fixture(scope="module")
def schedule(model_path):
    return mcugen.build(model_path, target="host", out=None, input_range=(-1.0, 1.0)).schedule


def mul_steps(schedule):
    return {s.layer: s for s in schedule.steps if s.kind == "mul"}


def mul_plans(schedule, board):
    plans = gap8.plan_tiles(schedule, board)
    return {layer: plans[s.name] for layer, s in mul_steps(schedule).items()}


def fits(schedule, budget):
    """Every layer fits `budget`, with the muls that can run on the cluster there."""
    try:
        plans = mul_plans(schedule, small_l1_board(budget))
    except MCUGenError:
        return False
    return all(bool(plans[layer].tiles) == on_cluster for layer, on_cluster in MULS.items())


def bit_exact(schedule, directory, board):
    project = write_gap8(schedule, directory, board)
    result = compare(project, schedule, verify_inputs(schedule, 50, seed=7), sanitize=True)
    assert result.n == 52 and result.mismatches == 0, result.first


def test_gap8_mul_plan_tiles_the_full_operand_and_holds_the_broadcast_one(schedule):
    assert set(mul_steps(schedule)) == set(MULS)
    plans = mul_plans(schedule, get_board("gap8"))
    for layer, on_cluster in MULS.items():
        plan = plans[layer]
        assert bool(plan.tiles) == on_cluster, layer
        if not on_cluster:
            assert plan.mode == "fc" and not plan.regions and plan.l1_bytes == 0
            continue
        roles = {r["name"]: r["role"] for r in plan.regions}
        gathered = [r["name"] for r in plan.regions if "gather" in r]
        assert roles["out"] == "out" and sum(t.nc for t in plan.tiles) == C * H * W
        if layer == "same":
            assert gathered == [] and roles["in"] == roles["in_b"] == "tile"
        else:   # the operand smaller than the output: one static region, read whole
            small = "in" if layer == "gate_swapped" else "in_b"
            assert gathered == [small] and roles[small] == "static"
    rows = {r["layer"]: r for r in gap8.tile_plan(schedule, get_board("gap8"))}
    assert [rows[layer]["on"] for layer in MULS] == ["cluster" if c else "fc" for c in MULS.values()]


def test_gap8_mul_gather_steps_through_the_loop_nest():
    """The kernel's odometer numbers reproduce the operand's index at every output element."""
    dims, strides = [1, C, H, W], [0, W, 0, 1]          # a [1,C,1,W] operand of a [1,C,H,W] output
    m = gap8._gather(dims, strides)
    want = np.arange(C)[:, None, None] * W + np.arange(W)[None, None, :] + 0 * np.arange(H)[None, :, None]
    index, d = [], [0, 0, 0, 0]
    j = 0
    for _ in range(C * H * W):
        index.append(j)
        j += m["strides"][3]
        for k in (3, 2, 1):                               # as mul.c.j2 carries
            d[k] += 1
            if d[k] < dims[k]:
                break
            d[k] = 0
            j += m["carry"][k - 1]
    assert index == want.reshape(-1).tolist()
    o = 2 * H * W + 3 * W + 4                             # the start from an element's coordinates
    assert [o // m["places"][k] % dims[k] for k in range(4)] == [0, 2, 3, 4]


def test_gap8_mul_that_fits_no_tile_stays_on_the_fc(schedule):
    """Not a refusal: a mul step with no room in L1 runs on the FC, as before its kernel."""
    step = mul_steps(schedule)["gate"]
    only = copy.copy(schedule)
    only.steps = [step]
    plan = gap8.plan_tiles(only, small_l1_board(64))[step.name]
    assert plan.mode == "fc" and not plan.tiles and not plan.regions


def test_gap8_mul_is_bit_exact_in_one_tile_and_many(schedule, tmp_path, host_cc):
    bit_exact(schedule, tmp_path / "one", get_board("gap8"))
    budget = max(p.l1_bytes for p in gap8.plan_tiles(schedule, get_board("gap8")).values())
    while fits(schedule, budget - 16):      # the smallest L1 the model fits with its muls tiled
        budget -= 16
    plans = mul_plans(schedule, small_l1_board(budget))
    for layer, on_cluster in MULS.items():
        assert (len(plans[layer].tiles) > 1) == on_cluster, (layer, budget)
        assert plans[layer].l1_bytes <= budget
    bit_exact(schedule, tmp_path / "many", small_l1_board(budget))


def test_gap8_mul_on_rv32_under_qemu(model_path, tmp_path, host_cc):
    for tool in ("riscv64-unknown-elf-gcc", "qemu-system-riscv32"):
        require_tool(tool)
    out = tmp_path / "proj"
    project = mcugen.build(model_path, target="gap8", out=out, input_range=(-1.0, 1.0))
    on = {r["layer"]: r["on"] for r in gap8.tile_plan(project.schedule, get_board("gap8"))}
    assert on["gate"] == on["spatial"] == "cluster" and on["outer"] == "fc"
    result = compare(out, project.schedule, verify_inputs(project.schedule, 4, seed=9), on="qemu")
    assert result.n == 6 and result.mismatches == 0, result.first
