"""The GAP8 softmax and LayerNorm kernels (templates/gap8/ops/softmax_cluster.c.j2,
layernorm_cluster.c.j2; gap8.py's _plan_rows): steps of independent rows tiled in whole rows on
the cluster (a softmax over a middle axis: whole blocks of interleaved rows), their tables in L1,
the cores splitting each tile's rows and running the FC kernel's own row code. A small graph
with a LayerNorm, a softmax over the last axis, one over a middle axis and one over a single
block (which stays on the FC), in one tile, in many (rows per tile not a multiple of the 8
cores), beside steps pushed to the FC and all on the FC; and the mean-pooling ViT: bit-exact
against the reference in the PMSIS emulation (ASan+UBSan), the ViT's workers within the cluster
stacks, the small graph under qemu."""
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from onnx import helper, numpy_helper

import mcugen
from conftest import require_tool
from mcugen.boards import get_board
from mcugen.codegen import gap8
from mcugen.errors import MCUGenError
from mcugen.verify import compare, verify_inputs
from onnx_factory import make_model, save, tensor
from test_gap8 import small_l1_board, write_gap8
from test_gap8_toolchain import RUNTIME_FRAMES, RV_CC, call_graph, stack_depth

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ROWS, N = 10, 40            # 10 rows: not a multiple of the 8 cores
node = helper.make_node


def rows_model():
    """x [1, 10, 40] -> LayerNorm over the last axis -> Softmax over the last axis (rows of 40)
    -> as [1, 10, 8, 5] -> Softmax over axis 2 (blocks of 8 x 5: 5 interleaved rows each) ->
    Softmax over axis 1 (one block of 10 x 40: stays on the FC) -> ReduceMax over the last axis
    -> Flatten -> Gemm(3). No layer beside the row steps needs much L1, so a small L1 tiles
    them or sends them to the FC."""
    rng = np.random.default_rng(4)
    nodes = [node("LayerNormalization", ["x", "g", "be"], ["n"], name="norm", axis=-1, epsilon=1e-5),
             node("Softmax", ["n"], ["p"], name="softmax_rows", axis=-1),
             node("Reshape", ["p", "blocks"], ["p4"], name="to_blocks"),
             node("Softmax", ["p4"], ["s2"], name="softmax_mid", axis=2),
             node("Softmax", ["s2"], ["s3"], name="softmax_one", axis=1),
             node("ReduceMax", ["s3"], ["m"], name="pool", axes=[3], keepdims=0),
             node("Flatten", ["m"], ["f"], name="flatten"),
             node("Gemm", ["f", "gw", "gb"], ["y"], name="head", transB=1)]
    inits = [("g", rng.normal(size=N)), ("be", rng.normal(size=N) * 0.5),
             ("gw", rng.normal(size=(3, ROWS * 8))), ("gb", rng.normal(size=3))]
    model = make_model(nodes, [tensor("x", [1, ROWS, N])], [tensor("y", [1, 3])], inits, opset=17)
    model.graph.initializer.append(numpy_helper.from_array(np.array([1, ROWS, 8, 5], dtype=np.int64),
                                                           "blocks"))
    return model


@pytest.fixture(scope="module")
def schedule(tmp_path_factory):
    path = save(rows_model(), tmp_path_factory.mktemp("rows") / "rows.onnx")
    return mcugen.build(path, target="gap8", out=None, input_range=(-1.0, 1.0)).schedule


def row_steps(schedule):
    """layer -> step, for the softmax and layernorm steps."""
    return {s.layer: s for s in schedule.steps if s.kind in ("softmax", "layernorm")}


def row_plans(schedule, board):
    plans = gap8.plan_tiles(schedule, board)
    return {layer: plans[s.name] for layer, s in row_steps(schedule).items()}


def test_rows_are_tiled_in_whole_units_on_the_cluster(schedule):
    steps = row_steps(schedule)
    assert {layer: (s.params["outer"], s.params["n"], s.params.get("inner", 1)) for layer, s in steps.items()} == {
        "norm": (ROWS, N, 1), "softmax_rows": (ROWS, N, 1), "softmax_mid": (ROWS, 8, 5),
        "softmax_one": (1, ROWS, N)}
    plans = row_plans(schedule, get_board("gap8"))
    one = plans.pop("softmax_one")           # one unit: one core would run it, the FC runs it faster
    assert one.mode == "fc" and not one.tiles and not one.regions
    for layer, plan in plans.items():
        p = plan.step.params
        unit = p["n"] * p.get("inner", 1)
        roles = {r["name"]: r["role"] for r in plan.regions}
        assert roles == {**{key: "static" for key in plan.step.consts}, "in": "tile", "out": "out"}, layer
        assert plan.kernel == {"kernel": f"{plan.step.kind}_cluster", "unit": unit,
                               "enc_ref": f"{plan.step.name}_unit_"}
        assert len(plan.tiles) == 1 and plan.tiles[0].nc == p["outer"] * unit
    rows = {r["layer"]: r["on"] for r in gap8.tile_plan(schedule, get_board("gap8")) if r["kind"] in ("softmax", "layernorm")}
    assert rows == {"norm": "cluster", "softmax_rows": "cluster", "softmax_mid": "cluster", "softmax_one": "fc"}


def budget_where(schedule, holds):
    """The largest L1 budget (16-byte steps down from the default plan's largest layer) whose
    plan satisfies `holds(row plans)`, every layer fitting."""
    top = max(p.l1_bytes for p in gap8.plan_tiles(schedule, get_board("gap8")).values())
    for budget in range(top, 0, -16):
        try:
            plans = row_plans(schedule, small_l1_board(budget))
        except MCUGenError:
            break
        if holds(plans):
            return budget
    raise AssertionError("no budget satisfies the condition")


# tiling -> the condition its budget meets: one tile each (the default board); the softmax over
# rows of 40 in several tiles; it on the FC and the interleaved one in several; only the
# LayerNorm on the cluster, in several tiles; every row step on the FC
TILINGS = {
    "one": None,
    "many": lambda plans: len(plans["softmax_rows"].tiles) >= 3,
    "mixed": lambda plans: len(plans["softmax_mid"].tiles) >= 3,
    "lean": lambda plans: len(plans["norm"].tiles) >= 3,
    "fc": lambda plans: not plans["norm"].tiles,
}


def check_source(model_c, step, on_cluster):
    """The generated model.c runs the step through its cluster kernel (the task, the fork, the
    FC kernel's row code as <step>_unit in the worker), or calls the FC function."""
    name, inputs = step.name, ", ".join(step.inputs)
    cluster = [f"model_cluster_run({name}_cluster, ", f"pi_cl_team_fork(MODEL_NB_CORES, {name}_worker, &args);",
               f"        {name}_unit(in + u * ", f"static void {name}_unit("]
    assert all(call in model_c for call in cluster) == on_cluster, name
    assert (f"    {name}({inputs}, {step.output});" in model_c) == (not on_cluster), name
    assert (f"{name}_unit" in model_c) == on_cluster, name


@pytest.mark.parametrize("tiling", list(TILINGS))
def test_bit_exact_in_every_tiling(tiling, schedule, tmp_path, host_cc):
    board = get_board("gap8") if TILINGS[tiling] is None else small_l1_board(budget_where(schedule, TILINGS[tiling]))
    plans = row_plans(schedule, board)
    tiles = {layer: len(plan.tiles) for layer, plan in plans.items()}
    assert tiles == {"one": {"norm": 1, "softmax_rows": 1, "softmax_mid": 1, "softmax_one": 0},
                     "many": {"norm": 1, "softmax_rows": 3, "softmax_mid": 1, "softmax_one": 0},
                     "mixed": {"norm": 1, "softmax_rows": 0, "softmax_mid": 3, "softmax_one": 0},
                     "lean": {"norm": 3, "softmax_rows": 0, "softmax_mid": 0, "softmax_one": 0},
                     "fc": {"norm": 0, "softmax_rows": 0, "softmax_mid": 0, "softmax_one": 0}}[tiling]
    for plan in plans.values():       # whole rows (blocks) per tile: 4, 4 and 2 of the 10 rows
        unit = plan.step.params["n"] * plan.step.params.get("inner", 1)
        assert all(t.c0 % unit == 0 and t.nc % unit == 0 for t in plan.tiles)
        assert sum(t.nc for t in plan.tiles) in (0, ROWS * unit)
    project = write_gap8(schedule, tmp_path / tiling, board)
    model_c = (project / "model.c").read_text()
    for layer, step in row_steps(schedule).items():
        check_source(model_c, step, tiles[layer] > 0)
    result = compare(project, schedule, verify_inputs(schedule, 20, seed=5), sanitize=True)
    assert result.n == 22 and result.mismatches == 0, result.first


def test_small_graph_on_rv32_under_qemu(schedule, tmp_path, host_cc):
    for tool in (RV_CC, "qemu-system-riscv32"):
        require_tool(tool)
    project = write_gap8(schedule, tmp_path / "proj", small_l1_board(budget_where(schedule, TILINGS["many"])))
    result = compare(project, schedule, verify_inputs(schedule, 2, seed=9), on="qemu")
    assert result.n == 4 and result.mismatches == 0, result.first


# ---- the mean-pooling ViT ------------------------------------------------------------------
@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    out = tmp_path_factory.mktemp("vit") / "p"
    calib = np.load(EXAMPLES / "vit_digits_inputs.npy")
    project = mcugen.build(EXAMPLES / "vit_mean_dynamo.onnx", target="gap8", out=out, calib=calib)
    return out, project, calib


def test_vit_softmax_and_layernorm_run_on_the_cluster_bit_exact(vit):
    out, project, calib = vit
    steps = row_steps(project.schedule)
    assert sorted(s.kind for s in steps.values()) == ["layernorm"] * 5 + ["softmax"] * 2
    on = {layer["step"]: layer["runs_on"] for layer in project.report["layers"]}
    assert all(on[s.name] == "cluster" for s in steps.values())
    model_c = (out / "model.c").read_text()
    for step in steps.values():
        check_source(model_c, step, True)
    result = compare(out, project.schedule, calib[:6], sanitize=True)
    assert result.n == 6 and result.mismatches == 0, result.first


def test_vit_workers_fit_the_cluster_stacks(vit, tmp_path):
    """The row kernels' workers (a LayerNorm's 64-bit division included) within the slave
    stacks model.c asks for, as tests/test_gap8_toolchain.py checks the CNNs'."""
    require_tool(RV_CC)
    out, project, _ = vit
    done = subprocess.run([RV_CC, "--specs=picolibc.specs", "-march=rv32imc", "-mabi=ilp32", "-O3",
                           "-Ipmsis_emu", "-fcallgraph-info=su", "-S", "-o", str(tmp_path / "model.s"),
                           "model.c"], cwd=out, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    frames, calls = call_graph((tmp_path / "model.ci").read_text())
    names = [s.name for s in row_steps(project.schedule).values()]
    worker = max(stack_depth(f"{name}_worker", frames, calls) for name in names)
    entry = max(stack_depth(f"{name}_cluster", frames, calls) for name in names)
    model_c = (out / "model.c").read_text()
    stack = int(re.search(r"#define MODEL_CL_STACK_BYTES (\d+)", model_c).group(1))
    slave = int(re.search(r"#define MODEL_CL_SLAVE_STACK_BYTES (\d+)", model_c).group(1))
    assert worker + RUNTIME_FRAMES <= slave, (worker, slave)
    assert entry + worker + RUNTIME_FRAMES <= stack, (entry, worker, stack)
