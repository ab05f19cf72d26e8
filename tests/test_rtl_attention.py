"""Attention's MatMuls of two activations (step kind "matmul": Q K^T and A V) on the CV32E40P
board: the SIMD kernel (kernel_plan.matmul_simd_plan, templates/common/ops/matmul.c.j2) decodes
B's columns once per head into int16 rows and takes 2 x 16-bit dot products (cv.sdotsp.h)
against pairs of decoded A rows. The mean-pooling ViT runs bit-exact on the RTL with it, and
with the plain kernel of the board-less rv32 build (the same matmul steps), whose attention
MatMuls take several times more cycles; the plain kernel also bit-exact under qemu. Odd sizes
(remainder rows, columns and lanes), operands shared by every head and a B decoded in chunks
run bit-exact on the host (the ISA layer's portable C, ASan/UBSan) and on the RTL. The RTL
simulates about a million cycles a second: a few inputs per project."""
from pathlib import Path

import numpy as np
import pytest
from onnx import helper

import mcugen
from conftest import require_tool
from mcugen.verify import compare, verify_inputs
from onnx_factory import make_model, save, tensor

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
VIT = EXAMPLES / "vit_mean_dynamo.onnx"
INPUTS = np.load(EXAMPLES / "vit_digits_inputs.npy")
BOARDS = {"simd": "cv32e40p", "plain": "rv32imc-qemu"}


@pytest.fixture
def rtl_tools(host_cc):
    for tool in ("riscv64-unknown-elf-gcc", "verilator", "g++"):
        require_tool(tool)


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    """kernel ("simd", "plain") -> (project directory, project) of the ViT for rv32 on the
    CV32E40P board and on the board-less rv32imc-qemu, both quantized for 8-bit lanes (the
    SIMD board's default) so that only the kernels differ."""
    root = tmp_path_factory.mktemp("vit")
    return {kind: (root / kind, mcugen.build(VIT, target="rv32", board=board, out=root / kind,
                                             calib=INPUTS, lanes="8"))
            for kind, board in BOARDS.items()}


def matmul_steps(project):
    return [(i, s) for i, s in enumerate(project.schedule.steps) if s.kind == "matmul"]


def kernel_source(directory, step):
    """The C of one step's section in model.c (its constants, helpers and kernel)."""
    text = (directory / "model.c").read_text()
    start = text.index("(matmul) ----", text.index(f"step {step}: "))
    end = text.find("/* ---- step ", start)
    return text[start:end if end > 0 else len(text)]


def test_the_vit_matmuls_are_planned_simd_on_the_cv32e40p_only(vit):
    (simd_dir, simd), (plain_dir, plain) = vit["simd"], vit["plain"]
    steps = matmul_steps(simd)
    assert len(steps) == 4
    # the same integer steps on both boards: only the kernels differ
    for (i, s), (j, t) in zip(steps, matmul_steps(plain)):
        assert (i, s.params) == (j, t.params)
        assert all(np.array_equal(s.consts[key], t.consts[key]) for key in s.consts)
    for i, s in steps:
        plan = simd.plan[s.name]
        assert plan["matmul_simd"] == "h" and plan["chunks"] == 1
        assert plan["stack_bytes"] <= simd.report["totals"]["kernel_stack_bytes"]
        assert "isa_dot4x2_h(" in kernel_source(simd_dir, i)
        assert "matmul_simd" not in plain.plan[s.name]
        assert "isa_dot" not in kernel_source(plain_dir, i)


def test_the_vit_is_bit_exact_on_the_rtl_and_the_simd_matmuls_are_faster(vit, rtl_tools):
    cycles = {}
    for kind, (directory, project) in vit.items():
        result = compare(directory, project.schedule, INPUTS[:3], on="rtl")
        assert result.n == 3 and result.mismatches == 0, (kind, result.first)
        cycles[kind] = [result.profile[i] for i, _ in matmul_steps(project)]
        assert all(c > 0 for c in cycles[kind])
    # 2 x 16-bit dot products, each operand decoded once per row or column (measured: 5x)
    assert all(3 * s < p for s, p in zip(cycles["simd"], cycles["plain"])), cycles


def test_the_vit_kernels_are_bit_exact_on_host_and_qemu(vit, host_cc):
    """The SIMD kernel's portable C (the ISA layer off the RTL) on every saved input under
    ASan/UBSan; the plain kernel of the board-less rv32 build under qemu."""
    directory, project = vit["simd"]
    result = compare(directory, project.schedule, INPUTS, sanitize=True)
    assert result.n == len(INPUTS) and result.mismatches == 0, result.first
    for tool in ("riscv64-unknown-elf-gcc", "qemu-system-riscv32"):
        require_tool(tool)
    directory, project = vit["plain"]
    result = compare(directory, project.schedule, INPUTS[:8], on="qemu")
    assert result.n == 8 and result.mismatches == 0, result.first


def matmul_model(heads_a, heads_b, n, k, m, channels=1):
    """x [1, C, n, k] -> A = 1x1 Conv [1, Ha, n, k]; B = a (n - m + 1) x 1 Conv, transposed,
    [1, Hb, k, m]; y = A B [1, max(Ha, Hb), n, m] (an operand with one head shared by all)."""
    rng = np.random.default_rng(n * k + m)
    node = helper.make_node
    nodes = [node("Conv", ["x", "wa", "ba"], ["a"], name="a", kernel_shape=[1, 1]),
             node("Conv", ["x", "wb", "bb"], ["b0"], name="b", kernel_shape=[n - m + 1, 1]),
             node("Transpose", ["b0"], ["b"], name="b_t", perm=[0, 1, 3, 2]),
             node("MatMul", ["a", "b"], ["y"], name="ab")]
    inits = [("wa", rng.normal(size=(heads_a, channels, 1, 1))),
             ("ba", rng.normal(size=heads_a) * 0.1),
             ("wb", rng.normal(size=(heads_b, channels, n - m + 1, 1)) / np.sqrt(n - m + 1)),
             ("bb", rng.normal(size=heads_b) * 0.1)]
    return make_model(nodes, [tensor("x", [1, channels, n, k])],
                      [tensor("y", [1, max(heads_a, heads_b), n, m])], inits)


# name -> (heads of A, of B, n, k, m), and what the SIMD plan must hold
SHAPES = {
    # odd rows and lanes, one block of 4 columns and 2 more; B shared, decoded once for 3 heads
    "odd": ((3, 1, 7, 7, 6), {"padded_k": 8, "chunks": 1, "b_once": 1}),
    # A shared; 3 columns: no whole block
    "shared_a": ((1, 2, 4, 9, 3), {"padded_k": 10, "chunks": 1, "b_once": 0}),
    # a head's B (256 x 7 int16) exceeds the stack limit: chunks of 4 columns, then 3
    "chunks": ((2, 2, 7, 256, 7), {"padded_k": 256, "chunk_cols": 4, "chunks": 2, "b_once": 0}),
}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_odd_shapes_shared_heads_and_chunks_are_bit_exact(name, tmp_path, host_cc):
    shape, expected = SHAPES[name]
    path = save(matmul_model(*shape), tmp_path / f"{name}.onnx")
    out = tmp_path / "p"
    project = mcugen.build(path, target="rv32", board="cv32e40p", out=out, input_range=(-1.0, 1.0),
                           scheme="power", wbits=8, abits=8)
    [(index, step)] = matmul_steps(project)
    ha, hb, n, k, m = shape
    assert (step.params["n"], step.params["k"], step.params["m"]) == (n, k, m)
    assert (step.params["a_head"] > 0, step.params["b_head"] > 0) == (ha > 1, hb > 1)
    plan = project.plan[step.name]
    assert plan["matmul_simd"] == "h" and plan == {**plan, **expected}
    assert "isa_dot" in kernel_source(out, index)
    inputs = verify_inputs(project.schedule, 40, seed=3)
    result = compare(out, project.schedule, inputs, sanitize=True)
    assert result.n == 42 and result.mismatches == 0, result.first
    for tool in ("riscv64-unknown-elf-gcc", "verilator", "g++"):
        require_tool(tool)
    result = compare(out, project.schedule, verify_inputs(project.schedule, 1, seed=4), on="rtl")
    assert result.n == 3 and result.mismatches == 0, result.first
