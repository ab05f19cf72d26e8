"""The GAP8 MatMul kernel (templates/gap8/ops/matmul_cluster.c.j2): a MatMul of two activations
(attention's Q K^T and A V) tiled in bands of output rows on the cluster: B whole in L1, and per tile the A
rows its output rows read. Attention with per-head and shared V, and a shared A, in one
tile and in many, bit-exact against the reference in the PMSIS emulation (ASan+UBSan) and under
qemu; a step whose B leaves no room in L1 stays on the fabric controller."""
import copy

import numpy as np
import pytest
from onnx import helper

import mcugen
from mcugen.boards import get_board
from mcugen.codegen import gap8
from mcugen.errors import MCUGenError
from mcugen.verify import compare, verify_inputs
from onnx_factory import make_model, save, tensor
from test_gap8 import small_l1_board, write_gap8
from test_token_linear import attention_model
from conftest import require_tool

HEADS, K, M = 3, 5, 7       # the shared-A graph: odd sizes, so cores split inside rows


def shared_a_model():
    """x [1, H, K, M]; a 1x1 Conv mixing its heads into one, relu'd and transposed, [1, 1, M, K],
    times x: A is shared by every head (a_head 0), B is per head."""
    node = helper.make_node
    nodes = [node("Conv", ["x", "w", "b"], ["mix"], name="mix_heads", kernel_shape=[1, 1]),
             node("Relu", ["mix"], ["r"], name="relu"),
             node("Transpose", ["r"], ["rt"], name="rt", perm=[0, 1, 3, 2]),
             node("MatMul", ["rt", "x"], ["y"], name="shared_a")]
    return make_model(nodes, [tensor("x", [1, HEADS, K, M])], [tensor("y", [1, HEADS, M, M])],
                      [("w", np.random.default_rng(5).normal(size=(1, HEADS, 1, 1))), ("b", np.array([0.1]))])


def build(model, tmp_path_factory, name):
    path = save(model, tmp_path_factory.mktemp(name) / f"{name}.onnx")
    return mcugen.build(path, target="host", out=None, input_range=(-1.0, 1.0)).schedule


@pytest.fixture(scope="module")
def schedules(tmp_path_factory):
    """name -> schedule: attention with per-head V, with one V for every head, and a shared A."""
    return {"heads": build(attention_model(), tmp_path_factory, "heads"),
            "shared_v": build(attention_model(shared_v=True), tmp_path_factory, "shared_v"),
            "shared_a": build(shared_a_model(), tmp_path_factory, "shared_a")}


def matmul_steps(schedule):
    return {s.layer: s for s in schedule.steps if s.kind == "matmul"}


def matmul_plans(schedule, board):
    plans = gap8.plan_tiles(schedule, board)
    return {layer: plans[s.name] for layer, s in matmul_steps(schedule).items()}


def tiled(schedule, budget):
    """Every layer fits `budget`, with the matmuls on the cluster."""
    try:
        plans = matmul_plans(schedule, small_l1_board(budget))
    except MCUGenError:
        return False
    return all(plan.tiles for plan in plans.values())


def bit_exact(schedule, directory, board, n=30):
    project = write_gap8(schedule, directory, board)
    result = compare(project, schedule, verify_inputs(schedule, n, seed=7), sanitize=True)
    assert result.n == n + 2 and result.mismatches == 0, result.first


def test_gap8_matmul_steps_run_on_the_cluster(schedules):
    heads = {s.layer: (s.params["a_head"], s.params["b_head"])
             for schedule in schedules.values() for s in matmul_steps(schedule).values()}
    # the three operand layouts: per head, B shared (one V), A shared
    assert {(a > 0, b > 0) for a, b in heads.values()} == {(True, True), (True, False), (False, True)}
    for schedule in schedules.values():
        plans = matmul_plans(schedule, get_board("gap8"))
        for layer, step in matmul_steps(schedule).items():
            plan, p = plans[layer], step.params
            roles = {r["name"]: r["role"] for r in plan.regions}
            assert plan.tiles and roles == {**roles, "in_b": "static", "in": "tile", "out": "out"}
            assert sum(t.ny for t in plan.tiles) == p["heads"] * p["n"]
            # the A rows a tile loads: its own, or (A shared by every head) the head-local ones
            for t in plan.tiles:
                assert (t.iy0, t.niy) == (t.y0, t.ny) if p["a_head"] else t.iy0 + t.niy <= p["n"]
        rows = [r for r in gap8.tile_plan(schedule, get_board("gap8")) if r["kind"] == "matmul"]
        assert rows and all(r["on"] == "cluster" for r in rows)


@pytest.mark.parametrize("name", ["heads", "shared_v", "shared_a"])
def test_gap8_matmul_is_bit_exact_in_one_tile_and_many(name, schedules, tmp_path, host_cc):
    schedule = schedules[name]
    bit_exact(schedule, tmp_path / "one", get_board("gap8"))
    budget = max(p.l1_bytes for p in gap8.plan_tiles(schedule, get_board("gap8")).values())
    while tiled(schedule, budget - 16):   # the smallest L1 the model fits with its matmuls tiled
        budget -= 16
    plans = matmul_plans(schedule, small_l1_board(budget))
    assert any(len(plan.tiles) > 1 for plan in plans.values()), budget
    bit_exact(schedule, tmp_path / "many", small_l1_board(budget))
    if name == "shared_a":      # and tiles that cross a head's end, reading the whole shared A
        budget = next(b for b in range(budget, budget + 4096, 16)
                      if any(crosses(plan) for plan in matmul_plans(schedule, small_l1_board(b)).values()))
        bit_exact(schedule, tmp_path / "crossing", small_l1_board(budget))


def crosses(plan):
    """Several tiles, one of which crosses a head's end."""
    n = plan.step.params["n"]
    return len(plan.tiles) > 1 and any(t.y0 // n != (t.y0 + t.ny - 1) // n for t in plan.tiles)


def test_gap8_matmul_tiles_read_the_a_rows_of_their_output_rows():
    per_head = {"a_head": 2 * 7, "n": 7}
    assert gap8._matmul_tiles(per_head, 21, 8) == [gap8.Tile(0, 1, y, ny, 0, 1, y, ny, 0)
                                                    for y, ny in ((0, 8), (8, 8), (16, 5))]
    shared = {"a_head": 0, "n": 7}        # heads of 7 rows: rows 4-7 and 12-15 cross a head's end
    assert [(t.iy0, t.niy) for t in gap8._matmul_tiles(shared, 21, 4)] == [(0, 4), (0, 7), (1, 4), (0, 7),
                                                                          (2, 4), (6, 1)]


def test_gap8_matmul_whose_b_does_not_fit_stays_on_the_fc(schedules):
    """Not a refusal: with no room for B beside the tables, the step runs on the FC as before."""
    schedule = schedules["heads"]
    step = matmul_steps(schedule)["scores"]
    only = copy.copy(schedule)
    only.steps = [step]
    full = gap8.plan_tiles(only, get_board("gap8"))[step.name]
    b = next(r for r in full.regions if r["name"] == "in_b")
    assert b["role"] == "static" and full.tiles
    budget = b["offs"][0] + b["count"] * b["itemsize"] - 4   # the tables fit, B does not
    plan = gap8.plan_tiles(only, small_l1_board(budget))[step.name]
    assert plan.mode == "fc" and not plan.tiles and not plan.regions and plan.l1_bytes == 0


def test_gap8_matmul_on_rv32_under_qemu(schedules, tmp_path, host_cc):
    for tool in ("riscv64-unknown-elf-gcc", "qemu-system-riscv32"):
        require_tool(tool)
    schedule = schedules["heads"]
    project = write_gap8(schedule, tmp_path / "proj", get_board("gap8"))
    result = compare(project, schedule, verify_inputs(schedule, 2, seed=9), on="qemu")
    assert result.n == 4 and result.mismatches == 0, result.first
