"""Attention one head at a time (lower/head_loops.py): on a long sequence, where the scores
[H, T, T] are the arena's peak, the C targets and GAP8 run Q K^T, softmax and A V head by head
with the scores and probabilities held for one head. Checked: the loop is chosen only where it
lowers the peak, the arena (GAP8: the L2 arena) shrinks by the scores of the other heads, the C
is bit-exact on the host under ASan/UBSan and on RV32 (qemu), with every step of the loop
profiled over all heads; a mismatch inside a loop is still located. GAP8 sends one cluster task
per head, its tiles planned for one head, bit-exact in the PMSIS emulation with the loop's
steps in one tile, in many and on the FC, its DMA as planned and its forks counted per head
under qemu. HLS keeps whole steps."""
import copy

import numpy as np
import pytest
from onnx import helper, numpy_helper

import mcugen
from conftest import require_tool
from mcugen.boards import get_board
from mcugen.codegen import gap8
from mcugen.errors import MCUGenError
from mcugen.lower.head_loops import step_calls
from mcugen.lower.memory import plan_arena
from mcugen.verify import compare, verify_inputs
from onnx_factory import make_model, save, tensor
from test_gap8 import emu_stats, small_l1_board, write_gap8

node = helper.make_node
RNG = np.random.default_rng(9)
E = 8


def attention(tokens, heads, scaled=False):
    """x [1, T, E] -> Q, K, V Linears -> heads -> softmax(Q K^T) V -> merged -> a Linear;
    `scaled`: the scores multiplied by 1/sqrt(d) after the product (a recode step)."""
    d = E // heads
    nodes = []
    for name in "qkv":
        nodes += [node("MatMul", ["x", f"w{name}"], [f"{name}0"], name=f"{name}_proj"),
                  node("Reshape", [f"{name}0", "split"], [f"{name}1"], name=f"{name}_split"),
                  node("Transpose", [f"{name}1"], [name], perm=[0, 2, 3, 1] if name == "k" else [0, 2, 1, 3],
                       name=f"{name}_heads")]
    nodes += [node("MatMul", ["q", "k"], ["scores"], name="qk")]
    if scaled:
        nodes += [node("Mul", ["scores", "scale"], ["scaled"], name="scale")]
    nodes += [node("Softmax", ["scaled" if scaled else "scores"], ["probs"], axis=-1, name="softmax"),
              node("MatMul", ["probs", "v"], ["ctx"], name="av"),
              node("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3], name="merge"),
              node("Reshape", ["ctx_t", "merged"], ["m"], name="merged"),
              node("MatMul", ["m", "wo"], ["y"], name="out_proj")]
    inits = [(f"w{n}", RNG.normal(size=(E, E)) * 0.5) for n in "qkvo"]
    if scaled:
        inits.append(("scale", np.array(d ** -0.5)))
    model = make_model(nodes, [tensor("x", [1, tokens, E])], [tensor("y", [1, tokens, E])], inits)
    for name, value in (("split", [1, tokens, heads, d]), ("merged", [1, tokens, E])):
        model.graph.initializer.append(numpy_helper.from_array(np.array(value, dtype=np.int64), name))
    return model


def build(tmp_path, tokens, heads, target="host", scaled=False):
    path = save(attention(tokens, heads, scaled), tmp_path / f"att{tokens}.onnx")
    return mcugen.build(path, target=target, out=tmp_path / target, input_range=(-1.0, 1.0))


def arena_without_loops(schedule):
    loops, schedule.head_loops = schedule.head_loops, []
    size = plan_arena(schedule)
    schedule.head_loops = loops
    plan_arena(schedule)
    return size


@pytest.mark.parametrize("target", ["host", "gap8"])
def test_a_scale_between_the_product_and_the_softmax_stays_in_the_loop(target, tmp_path, host_cc):
    """Exporters that scale the scores after Q K^T put a recode step there: it runs per head in
    the loop (its table is the same for every head), the scaled scores held for one head too."""
    project = build(tmp_path, tokens=48, heads=4, target=target, scaled=True)
    schedule = project.schedule
    (loop,) = schedule.head_loops
    kinds = [s.kind for s in schedule.steps if s.name in loop["steps"]]
    assert kinds == ["matmul", "recode", "softmax", "matmul"] and len(loop["local"]) == 3
    assert arena_without_loops(schedule) - schedule.arena_bytes >= 3 * 48 * 48
    result = compare(tmp_path / target, schedule, verify_inputs(schedule, 20, seed=4),
                     sanitize=target == "host", on="host")
    assert result.mismatches == 0, result.first


def test_a_long_sequence_holds_one_heads_scores(tmp_path, host_cc):
    project = build(tmp_path, tokens=48, heads=4)
    schedule = project.schedule
    (loop,) = schedule.head_loops
    assert [s.kind for s in schedule.steps if s.name in loop["steps"]] == ["matmul", "softmax", "matmul"]
    scores = schedule.buffers[loop["local"][0]]
    assert scores.size == 4 * 48 * 48
    saved = arena_without_loops(schedule) - schedule.arena_bytes
    assert saved >= 3 * 48 * 48                      # the other three heads' scores at least
    assert project.report["totals"]["peak_ram_bytes"] == schedule.arena_bytes
    result = compare(tmp_path / "host", schedule, verify_inputs(schedule, 30, seed=3),
                     sanitize=True, on="host")
    assert result.mismatches == 0, result.first


def test_a_short_sequence_keeps_whole_steps(tmp_path):
    """Scores [2, 4, 4] are smaller than Q, K and V: looping would not lower the peak."""
    assert build(tmp_path, tokens=4, heads=2).schedule.head_loops == []


def test_rv32_runs_the_loop_bit_exact_and_profiles_every_head(tmp_path):
    require_tool("riscv64-unknown-elf-gcc")
    require_tool("qemu-system-riscv32")
    project = build(tmp_path, tokens=32, heads=2, target="rv32")
    schedule = project.schedule
    assert len(schedule.head_loops) == 1
    result = compare(tmp_path / "rv32", schedule, verify_inputs(schedule, 3, seed=4), on="qemu")
    assert result.mismatches == 0, result.first
    counts = {s.name: result.profile.get(i) for i, s in enumerate(schedule.steps)}
    qk, softmax, av = schedule.head_loops[0]["steps"]
    # Q K^T and A V do the same MACs per head: summed over both heads, about equal
    assert counts[qk] > 0 and counts[softmax] > 0 and 0.5 < counts[av] / counts[qk] < 2


def test_a_mismatch_inside_a_loop_is_located(tmp_path, host_cc):
    """The loop's scores and probabilities are never whole: a difference in Q K^T is named at
    the loop's last step, A V, whose output is."""
    project = build(tmp_path, tokens=48, heads=4)
    schedule = project.schedule
    qk = next(s for s in schedule.steps if s.name == schedule.head_loops[0]["steps"][0])
    qk.consts["table_a"] = qk.consts["table_a"] * 2       # the reference now disagrees with the C
    result = compare(tmp_path / "host", schedule, verify_inputs(schedule, 4, seed=5), on="host")
    assert result.mismatches > 0 and "(step " in result.first
    assert "layer 'av'" in result.first, result.first


def test_hls_keeps_whole_steps(tmp_path):
    assert build(tmp_path, tokens=48, heads=4, target="hls").schedule.head_loops == []


# ---- GAP8: one cluster task per head ---------------------------------------------------------
T, H = 48, 4


@pytest.fixture(scope="module")
def gap8_project(tmp_path_factory):
    directory = tmp_path_factory.mktemp("gap8_loop")
    return directory / "gap8", build(directory, tokens=T, heads=H, target="gap8")


def loop_plans(schedule, board):
    """The tile plans of the head loop's steps (Q K^T, softmax, A V)."""
    plans = gap8.plan_tiles(schedule, board)
    return [plans[name] for name in schedule.head_loops[0]["steps"]]


def test_gap8_holds_one_heads_scores_in_l2(gap8_project):
    out, project = gap8_project
    schedule = project.schedule
    (loop,) = schedule.head_loops
    saved = arena_without_loops(schedule) - schedule.arena_bytes
    assert saved >= (H - 1) * T * T                  # the other heads' scores at least
    assert project.report["totals"]["peak_ram_bytes"] == schedule.arena_bytes
    qk, softmax, av = (project.plan[name]["tiles"] for name in loop["steps"])
    assert all(plan.runs == H and plan.tiles for plan in (qk, softmax, av))
    # each task's tiles cover one head: T rows of scores, T rows of T probabilities
    assert sum(t.ny for t in qk.tiles) == sum(t.ny for t in av.tiles) == T
    assert sum(t.nc for t in softmax.tiles) == T * T
    model_c = (out / "model.c").read_text()
    assert f"for (int h = 0; h < {H}; h++) {{" in model_c
    calls = step_calls(schedule)
    for name in loop["steps"]:         # each task's operands at the loop's offsets
        assert f"{name}_io_t io = {{ {calls[name]['args']} }};" in model_c
    assert "h * " in calls[loop["steps"][0]]["args"]


def test_gap8_loop_is_bit_exact_under_sanitizers(gap8_project, host_cc):
    out, project = gap8_project
    schedule = project.schedule
    result = compare(out, schedule, verify_inputs(schedule, 30, seed=3), sanitize=True)
    assert result.n == 32 and result.mismatches == 0, result.first


# the loop's steps -> the L1 their budget gives them: softmax in several tiles per head; the
# MatMuls in several, softmax on the FC; all three on the FC
TILINGS = {
    "rows": lambda qk, softmax, av: len(softmax.tiles) >= 3,
    "bands": lambda qk, softmax, av: len(qk.tiles) >= 3 and len(av.tiles) >= 3 and not softmax.tiles,
    "fc": lambda qk, softmax, av: not (qk.tiles or softmax.tiles or av.tiles),
}


def board_where(schedule, holds):
    """The board with the largest L1 budget (16-byte steps down from the default plan's
    largest layer) whose loop plans satisfy `holds`, every layer fitting."""
    top = max(p.l1_bytes for p in gap8.plan_tiles(schedule, get_board("gap8")).values())
    for budget in range(top, 0, -16):
        try:
            board = small_l1_board(budget)
            plans = loop_plans(schedule, board)
        except MCUGenError:
            break
        if holds(*plans):
            return board
    raise AssertionError("no budget satisfies the condition")


@pytest.mark.parametrize("tiling", list(TILINGS))
def test_gap8_loop_is_bit_exact_in_every_tiling(tiling, gap8_project, tmp_path, host_cc):
    schedule = copy.deepcopy(gap8_project[1].schedule)
    board = board_where(schedule, TILINGS[tiling])
    project = write_gap8(schedule, tmp_path / tiling, board)
    result = compare(project, schedule, verify_inputs(schedule, 20, seed=5))
    assert result.n == 22 and result.mismatches == 0, result.first
    dma_bytes, _ = emu_stats(project / "build" / "host" / "model_test", schedule, 2)
    assert dma_bytes == 2 * sum(r["dma_bytes"] for r in gap8.tile_plan(schedule, board))


def test_gap8_mismatch_inside_the_loop_is_located(gap8_project, tmp_path, host_cc):
    schedule = copy.deepcopy(gap8_project[1].schedule)
    project = write_gap8(schedule, tmp_path / "proj")
    qk = next(s for s in schedule.steps if s.name == schedule.head_loops[0]["steps"][0])
    qk.consts["table_a"] = qk.consts["table_a"] * 2       # the reference now disagrees with the C
    result = compare(project, schedule, verify_inputs(schedule, 4, seed=5))
    assert result.mismatches > 0 and "layer 'av'" in result.first, result.first


def test_gap8_loop_on_rv32_under_qemu_counts_every_heads_task(tmp_path, host_cc):
    require_tool("riscv64-unknown-elf-gcc")
    require_tool("qemu-system-riscv32")
    project = build(tmp_path, tokens=32, heads=2, target="gap8")
    schedule = project.schedule
    (loop,) = schedule.head_loops
    result = compare(tmp_path / "gap8", schedule, verify_inputs(schedule, 3, seed=4), on="qemu")
    assert result.mismatches == 0, result.first
    index = {s.name: i for i, s in enumerate(schedule.steps)}
    for name in loop["steps"]:          # one task per head, one fork per tile of each
        plan = project.plan[name]["tiles"]
        assert result.profile["gap8"][index[name]]["forks"] == 2 * len(plan.tiles) > 0, name
