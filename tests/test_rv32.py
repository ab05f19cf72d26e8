"""The rv32 target: the same C cross-compiled for RV32IMC with picolibc and run under qemu,
bit-exact against the reference, with exact per-layer instruction counts."""
import json
import subprocess
import sys

import pytest

import mcugen
from conftest import MODELS, require_tool, shared_model
from mcugen.errors import MCUGenError
from mcugen.verify import compare, verify_inputs


@pytest.fixture
def rv32_tools(host_cc):
    for tool in ("riscv64-unknown-elf-gcc", "qemu-system-riscv32", "riscv64-unknown-elf-size"):
        require_tool(tool)


@pytest.mark.parametrize("name", list(MODELS))
def test_rv32_under_qemu_is_bit_exact_and_counts_instructions(name, tmp_path, rv32_tools):
    out = tmp_path / "proj"
    project = mcugen.build(shared_model(name), target="rv32", out=out, wbits=4, abits=8,
                           input_range=MODELS[name])
    result = compare(out, project.schedule, verify_inputs(project.schedule, 50, seed=5), on="qemu")
    assert result.n == 52 and result.mismatches == 0, result.first
    steps = [result.profile[i] for i in range(len(project.schedule.steps))]
    assert all(count > 0 for count in steps)
    assert sum(steps) <= result.profile["total"] <= sum(steps) + 20_000    # input copy, calls


def test_simulate_on_qemu_records_the_profile_for_report(tmp_path, rv32_tools):
    out = tmp_path / "proj"
    mcugen.build(shared_model("mnist8"), target="rv32", out=out, input_range=(0, 255))
    cmd = [sys.executable, "-m", "mcugen"]
    done = subprocess.run(cmd + ["simulate", str(out), "--on", "qemu", "--n", "2"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(subprocess.run(cmd + ["report", str(out), "--json"], capture_output=True,
                                       text=True, check=True).stdout)
    convs = [layer for layer in report["layers"] if layer["op"] == "Conv"]
    assert all(layer["instructions"] > layer["macs"] for layer in convs)    # at least a MAC each
    totals = report["totals"]
    assert totals["instructions"] >= sum(layer["instructions"] for layer in report["layers"])
    assert totals["rodata_bytes"] >= totals["weight_bytes"] and totals["bss_bytes"] >= totals["peak_ram_bytes"]


def test_a_model_too_big_for_the_board_fails_cleanly(tmp_path):
    out = tmp_path / "proj"
    project = mcugen.build(shared_model("resnet8"), input_range=(0, 255))
    need = project.schedule.arena_bytes + max(p.get("stack_bytes", 0) for p in project.plan.values())
    assert need > 16384
    with pytest.raises(MCUGenError, match=f"does not fit board 'hifive1-revb': ram needs {need:,} B .* of 16,384 B"):
        mcugen.build(shared_model("resnet8"), target="rv32", board="hifive1-revb", out=out,
                     input_range=(0, 255))
    assert not out.exists()


def test_a_trap_on_rv32_is_reported_not_hung(tmp_path, rv32_tools):
    out = tmp_path / "proj"
    project = mcugen.build(shared_model("sine"), target="rv32", out=out, input_range=(0, 6.3))
    source = (out / "model.c").read_text()
    bad_store = "    volatile uintptr_t bad = 0x10;\n    *(volatile int32_t *)bad = 1;\n"
    source = source.replace("void model_run(const model_input_t *q, model_output_t *y)\n{\n",
                            "void model_run(const model_input_t *q, model_output_t *y)\n{\n" + bad_store)
    (out / "model.c").write_text(source)
    with pytest.raises(MCUGenError, match="trapped on RV32: store access fault"):
        compare(out, project.schedule, verify_inputs(project.schedule, 2, seed=0), on="qemu")
