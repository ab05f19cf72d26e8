"""Generated projects on the CV32E40P RTL (`--on rtl`): every shared model bit-exact there with
the SIMD kernels' CORE-V instructions, cycles per layer in the report, and the instructions
really executed as SIMD (the same ELF traps on a core built without the PULP extensions).
The RTL simulates about a million cycles a second: a few inputs per model; the many-input
checks of the same kernels are tests/test_simd.py (host, qemu)."""
import json
import subprocess
import sys

import numpy as np
import pytest

import mcugen
from conftest import MODELS, require_tool, shared_model
from mcugen.errors import MCUGenError
from mcugen.rtl.simulator import run_program
from mcugen.verify import compare, verify_inputs


@pytest.fixture
def rtl_tools(host_cc):
    for tool in ("riscv64-unknown-elf-gcc", "verilator", "g++"):
        require_tool(tool)


def simd_project(name, out, scheme="power", wbits=4, abits=8, board="cv32e40p"):
    return mcugen.build(shared_model(name), target="rv32", board=board, out=out, scheme=scheme,
                        wbits=wbits, abits=abits, input_range=MODELS[name])


@pytest.mark.parametrize("name", list(MODELS))
def test_every_shared_model_is_bit_exact_on_the_rtl(name, tmp_path, rtl_tools):
    out = tmp_path / "proj"
    project = simd_project(name, out)
    kinds = {project.plan[s.name].get("simd") for s in project.schedule.steps
             if s.kind in ("conv2d", "dense")}
    assert kinds - {None}, "no SIMD kernel in the project"
    result = compare(out, project.schedule, verify_inputs(project.schedule, 1, seed=9), on="rtl")
    assert result.n == 3 and result.mismatches == 0, result.first
    steps = [result.profile[i] for i in range(len(project.schedule.steps))]
    assert all(cycles > 0 for cycles in steps)
    assert sum(steps) <= result.profile["total"] <= sum(steps) * 1.01 + 20_000    # input copy, calls


@pytest.mark.parametrize("scheme,wbits,abits", [("uniform", 8, 8), ("power", 4, 4)])
def test_eight_bit_lanes_are_bit_exact_on_the_rtl(scheme, wbits, abits, tmp_path, rtl_tools):
    out = tmp_path / "proj"
    project = simd_project("kws_dscnn", out, scheme, wbits, abits)
    kinds = {project.plan[s.name].get("simd") for s in project.schedule.steps}
    assert kinds & {"b", "ub"}
    result = compare(out, project.schedule, verify_inputs(project.schedule, 1, seed=2), on="rtl")
    assert result.n == 3 and result.mismatches == 0, result.first


def test_the_simd_instructions_really_run(tmp_path, rtl_tools):
    """The same ELF on a core built with COREV_PULP=0 stops at its first CORE-V instruction."""
    out = tmp_path / "proj"
    project = simd_project("mnist8", out, "uniform", 8, 8)
    inputs = verify_inputs(project.schedule, 1, seed=1)          # the range's two ends and one
    result = compare(out, project.schedule, inputs, on="rtl")
    assert result.n == len(inputs) == 3 and result.mismatches == 0, result.first
    x = inputs[:1].astype(np.float32).tobytes()
    elf = out / "build" / "rtl" / "model_rtl.elf"
    assert run_program(elf, x).output
    with pytest.raises(MCUGenError, match=r"mcause 0x2 \(illegal instruction\)"):
        run_program(elf, x, corev_pulp=False)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "mcugen", *map(str, args)], capture_output=True,
                          text=True)


def test_simulate_on_rtl_records_cycles_and_simd_beats_the_plain_kernels(tmp_path, rtl_tools):
    cycles = {}
    for board in ("cv32e40p", "rv32imc-qemu"):
        out = tmp_path / board
        simd_project("mnist8", out, "uniform", 8, 8, board=board)
        done = cli("simulate", out, "--on", "rtl", "--n", "1")
        assert done.returncode == 0, done.stderr
        report = json.loads(cli("report", out, "--json").stdout)
        convs = [layer for layer in report["layers"] if layer["op"] == "Conv"]
        assert all(layer["rtl_cycles"] > 0 for layer in report["layers"])
        assert report["totals"]["rtl_cycles"] >= sum(layer["rtl_cycles"] for layer in report["layers"])
        cycles[board] = sum(layer["rtl_cycles"] for layer in convs)
        if board == "cv32e40p":
            text = cli("report", out).stdout
            assert "SIMD step" in text and "MAC/cycle" in text
            assert all(layer["kernel"] in ("b", "ub") for layer in convs)
    # 4 x 8-bit dot products against one multiply-accumulate an instruction
    assert cycles["cv32e40p"] * 2 < cycles["rv32imc-qemu"]


def test_rtl_runs_refuse_what_they_cannot_do(tmp_path, rtl_tools):
    rv32 = tmp_path / "rv32"
    simd_project("sine", rv32)
    done = cli("verify", rv32, "--on", "rtl", "--sanitize")
    assert done.returncode != 0 and "--sanitize runs on the host only" in done.stderr
    host = tmp_path / "host"
    mcugen.build(shared_model("sine"), out=host, input_range=MODELS["sine"])
    done = cli("verify", host, "--on", "rtl")
    assert done.returncode != 0 and "runs on host or qemu, not 'rtl'" in done.stderr
    assert "Traceback" not in done.stderr
