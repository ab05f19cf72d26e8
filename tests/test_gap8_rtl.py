"""GAP8 projects on the CV32E40P RTL (`--on rtl`: emu.mk's rtl goal, the PMSIS emulation
counting mcycle): bit-exact against the reference, the emulation's per-core counts really
cycles, and the GAP8 estimate built from them (labelled as a model) next to the qemu one built
from instructions. The RTL simulates about a million cycles a second: mnist8, a few inputs."""
import copy
import json
import subprocess
import sys

import pytest

import mcugen
from conftest import MODELS, require_tool, shared_model
from mcugen.boards import get_board
from mcugen.rtl.simulator import run_program
from mcugen.runners import build_harness, parse_profile
from mcugen.verify import compare, verify_inputs


@pytest.fixture
def rtl_tools(host_cc):
    for tool in ("riscv64-unknown-elf-gcc", "verilator", "g++", "qemu-system-riscv32",
                 "riscv64-unknown-elf-size"):
        require_tool(tool)


@pytest.fixture(scope="module")
def mnist8_gap8(tmp_path_factory):
    out = tmp_path_factory.mktemp("gap8rtl") / "mnist8"
    project = mcugen.build(shared_model("mnist8"), target="gap8", out=out, scheme="uniform",
                           wbits=8, abits=8, input_range=MODELS["mnist8"])
    return project, out


def cli(*args):
    return subprocess.run([sys.executable, "-m", "mcugen", *map(str, args)], capture_output=True,
                          text=True)


def report_of(out):
    done = cli("report", out, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_gap8_project_is_bit_exact_on_the_rtl(mnist8_gap8, rtl_tools):
    project, out = mnist8_gap8
    done = cli("verify", out, "--on", "rtl", "--n", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verify: 3 inputs on rtl, 0 differences (bit-exact)" in done.stdout
    # the goal and ELF of runners.RUN_PLACES["rtl"], from emu.mk (the Makefile is the SDK's)
    assert (out / "build" / "rtl" / "model_rtl.elf").is_file()
    assert build_harness(out, on="rtl", makefile="emu.mk").name == "model_rtl.elf"


def step_counts(profile, n_steps):
    return [profile[i] for i in range(n_steps)], [profile["gap8"][i] for i in range(n_steps)]


def test_the_emulation_counts_cycles_on_the_rtl(mnist8_gap8, rtl_tools):
    """Memory stalls (the harness's deterministic --stall-percent) cost cycles, not instructions:
    every per-core count grows while the outputs stay the same, so the counts are cycles."""
    project, out = mnist8_gap8
    elf = build_harness(out, on="rtl", makefile="emu.mk")
    x = verify_inputs(project.schedule, 1, seed=4)[2:3]
    ideal, slow = run_program(elf, x.tobytes()), run_program(elf, x.tobytes(), stall_percent=30)
    assert ideal.output == slow.output
    n_steps = len(project.schedule.steps)
    steps, gap8 = step_counts(parse_profile(ideal.profile), n_steps)
    steps_slow, gap8_slow = step_counts(parse_profile(slow.profile), n_steps)
    for i in range(n_steps):
        assert gap8[i]["forks"] >= 1 and gap8[i]["forks"] == gap8_slow[i]["forks"]
        assert gap8[i]["transfers"] == gap8_slow[i]["transfers"]
        assert gap8_slow[i]["cores_longest"] > gap8[i]["cores_longest"]
        assert gap8_slow[i]["cores_total"] > gap8[i]["cores_total"]
        assert steps_slow[i] > steps[i]
        # a fork's busiest core, all 8 cores, the emulation's own work, within the step
        assert gap8[i]["cores_longest"] <= gap8[i]["cores_total"] <= 8 * gap8[i]["cores_longest"]
        assert gap8[i]["cores_total"] + gap8[i]["emulation"] < steps[i]
    total = parse_profile(ideal.profile)["total"]
    assert sum(steps) <= total < ideal.cycles          # the harness's own clock count, from reset


def test_gap8_estimate_from_rtl_cycles_and_from_qemu_instructions(mnist8_gap8, rtl_tools):
    project, out = mnist8_gap8
    model = get_board("gap8")["cycle_model"]
    done = cli("simulate", out, "--on", "rtl", "--n", "1")
    assert done.returncode == 0, done.stderr
    profile = json.loads((out / "profile.json").read_text())
    assert "cycles" in profile and "instructions" not in profile
    rtl = report_of(out)
    assert rtl["gap8_counts"] == "cycles"
    for layer in rtl["layers"]:
        counts, cycles = profile["gap8"][layer["step"]], profile["cycles"]["steps"][layer["step"]]
        assert layer["runs_on"] == "cluster"
        busiest = cycles - counts["emulation"] - counts["cores_total"] + counts["cores_longest"]
        assert layer["busiest_core_cycles"] == busiest and "busiest_core_instructions" not in layer
        assert busiest >= counts["cores_longest"] > 0
        # one tile each here: compute (busiest core + forks + task) then DMA, nothing at a CPI
        compute = busiest + model["task_cycles"] + model["fork_cycles"] * counts["forks"]
        dma = layer["dma_bytes"] / model["dma_bytes_per_cycle"] + model["dma_setup_cycles"] * counts["transfers"]
        assert layer["tiles"] == 1 and abs(layer["est_cycles"] - (compute + dma)) <= 1
    assert rtl["totals"]["est_cycles"] == sum(layer["est_cycles"] for layer in rtl["layers"])
    text = cli("report", out).stdout
    assert "busiest core cycles" in text
    assert ("per-core cycles measured on the CV32E40P RTL (one core at a time, ideal memory) + the "
            "model's fork, task and DMA costs: a MODEL for the cluster (no TCDM contention" in text)

    done = cli("simulate", out, "--on", "qemu", "--n", "1")
    assert done.returncode == 0, done.stderr
    qemu = report_of(out)
    assert qemu.get("gap8_counts") == "instructions"
    assert all("busiest_core_cycles" not in layer for layer in qemu["layers"])
    biggest = max(range(len(rtl["layers"])), key=lambda i: rtl["layers"][i]["macs"])
    assert (qemu["layers"][biggest]["busiest_core_instructions"]
            != rtl["layers"][biggest]["busiest_core_cycles"])
    assert qemu["totals"]["est_cycles"] != rtl["totals"]["est_cycles"]
    text = cli("report", out).stdout
    assert "a MODEL, not a measurement: instructions from qemu" in text and "measured on the CV32E40P" not in text


def test_gap8_weights_in_l3_on_the_rtl(tmp_path, rtl_tools):
    """No files on the RTL: the L3 image is linked into the program and read from there."""
    out = tmp_path / "l3"
    kwargs = dict(target="gap8", wbits=4, abits=4, input_range=MODELS["mnist8"], encoder="threshold")
    fits = mcugen.build(shared_model("mnist8"), out=None, **kwargs).report["totals"]
    board = copy.deepcopy(get_board("gap8"))
    board["name"] = "gap8-small-l2"
    l2 = fits["flash_bytes"] + fits["peak_ram_bytes"] + fits["kernel_stack_bytes"] - 1
    board["memory"]["l2"]["bytes"] = board["memory"]["ram"]["bytes"] = l2
    project = mcugen.build(shared_model("mnist8"), board=board, out=out, **kwargs)
    assert project.schedule.meta["weights_in"] == "l3"
    assert "PI_EMU_READFS_FILE" in (out / "emu.mk").read_text()
    x = verify_inputs(project.schedule, 1, seed=8)
    result = compare(out, project.schedule, x, on="rtl")
    assert result.n == 3 and result.mismatches == 0, result.first
    steps = [result.profile[i] for i in range(len(project.schedule.steps))]
    assert all(cycles > 0 for cycles in steps)
    # breaking the image changes the outputs: the program really reads the linked copy
    image = out / "model_l3.bin"
    data = bytearray(image.read_bytes())
    data[: len(data) // 2] = bytes(len(data) // 2)
    image.write_bytes(bytes(data))
    assert compare(out, project.schedule, x[2:], on="rtl").mismatches == 1


@pytest.mark.parametrize("name", ["oc5_3x3_s2_asym", "3x3_32"])
def test_gap8_hwc_conv_blocks_are_bit_exact_on_the_rtl(name, tmp_path, rtl_tools):
    """The hwc conv's CORE-V 4 x 4 block (its own assembly, conv2d_hwc.c.j2) on the RTL: 4-pixel
    items with a remainder, a remainder channel, stride 2 and 3 input channels padded to 4; a
    32-channel window of 24 words a row."""
    from test_gap8_simd import SHAPES
    from test_kernels import conv_model, w
    in_shape, wshape, attrs = SHAPES[name]
    path = conv_model(tmp_path, name, in_shape, w(*wshape), **attrs)
    out = tmp_path / "gap8"
    project = mcugen.build(path, target="gap8", out=out, wbits=8, abits=8, scheme="uniform",
                           input_range=(-2.0, 2.0))
    step = next(s for s in project.schedule.steps if s.kind == "conv2d")
    assert project.plan[step.name]["tiles"].simd.get("hwc")
    assert "_dot4x4" in (out / "model.c").read_text()
    done = cli("verify", out, "--on", "rtl", "--n", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 differences (bit-exact)" in done.stdout


@pytest.mark.parametrize("config", [("uniform", 8, 8, True, "gap8"), ("uniform", 8, 8, False, "gap8"),
                                    ("power", 4, 8, True, "host"), ("power", 4, 4, False, "gap8"),
                                    ("power", 4, 4, False, "gap8", "codes")])
def test_gap8_add_lookup_blocks_are_bit_exact_on_the_rtl(config, tmp_path, rtl_tools):
    """The Add's lookups in their CORE-V blocks (_add_lookup_blocks.c.j2): the fold with
    cv.clipu, with cv.max + cv.min and with the encoder's table, and the pair table through the
    levels' maps and at the codes; 105 elements, so each core's share ends in a C remainder."""
    from test_gap8 import write_gap8
    from test_gap8_kernels import ADDS, add_plan_of, add_schedule
    schedule = add_schedule(tmp_path, *config)
    kernel = add_plan_of(schedule).kernel["add_kernel"]
    assert kernel == ADDS[config][0]
    out = write_gap8(schedule, tmp_path / "gap8")
    assert f"_{kernel}4(" in (out / "model.c").read_text()
    result = compare(out, schedule, verify_inputs(schedule, 2, seed=6), on="rtl")
    assert result.mismatches == 0, result.first
