"""Attention one head at a time (lower/head_loops.py): on a long sequence, where the scores
[H, T, T] are the arena's peak, the C targets run Q K^T, softmax and A V head by head with the
scores and probabilities held for one head. Checked: the loop is chosen only where it lowers the
peak, the arena shrinks by the scores of the other heads, the C is bit-exact on the host under
ASan/UBSan and on RV32 (qemu), with every step of the loop profiled over all heads; a mismatch
inside a loop is still located; GAP8 and HLS keep whole steps."""
import numpy as np
import pytest
from onnx import helper, numpy_helper

import mcugen
from conftest import require_tool
from mcugen.lower.memory import plan_arena
from mcugen.verify import compare, verify_inputs
from onnx_factory import make_model, save, tensor

node = helper.make_node
RNG = np.random.default_rng(9)
E = 8


def attention(tokens, heads):
    """x [1, T, E] -> Q, K, V Linears -> heads -> softmax(Q K^T) V -> merged -> a Linear."""
    d = E // heads
    nodes = []
    for name in "qkv":
        nodes += [node("MatMul", ["x", f"w{name}"], [f"{name}0"], name=f"{name}_proj"),
                  node("Reshape", [f"{name}0", "split"], [f"{name}1"], name=f"{name}_split"),
                  node("Transpose", [f"{name}1"], [name], perm=[0, 2, 3, 1] if name == "k" else [0, 2, 1, 3],
                       name=f"{name}_heads")]
    nodes += [node("MatMul", ["q", "k"], ["scores"], name="qk"),
              node("Softmax", ["scores"], ["probs"], axis=-1, name="softmax"),
              node("MatMul", ["probs", "v"], ["ctx"], name="av"),
              node("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3], name="merge"),
              node("Reshape", ["ctx_t", "merged"], ["m"], name="merged"),
              node("MatMul", ["m", "wo"], ["y"], name="out_proj")]
    inits = [(f"w{n}", RNG.normal(size=(E, E)) * 0.5) for n in "qkvo"]
    model = make_model(nodes, [tensor("x", [1, tokens, E])], [tensor("y", [1, tokens, E])], inits)
    for name, value in (("split", [1, tokens, heads, d]), ("merged", [1, tokens, E])):
        model.graph.initializer.append(numpy_helper.from_array(np.array(value, dtype=np.int64), name))
    return model


def build(tmp_path, tokens, heads, target="host"):
    path = save(attention(tokens, heads), tmp_path / f"att{tokens}.onnx")
    return mcugen.build(path, target=target, out=tmp_path / target, input_range=(-1.0, 1.0))


def arena_without_loops(schedule):
    loops, schedule.head_loops = schedule.head_loops, []
    size = plan_arena(schedule)
    schedule.head_loops = loops
    plan_arena(schedule)
    return size


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


@pytest.mark.parametrize("target", ["gap8", "hls"])
def test_gap8_and_hls_keep_whole_steps(target, tmp_path):
    assert build(tmp_path, tokens=48, heads=4, target=target).schedule.head_loops == []
