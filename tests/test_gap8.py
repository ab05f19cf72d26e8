"""The gap8 target: PMSIS C for the 8-core cluster with L2 -> L1 tiling, built off the board
against the project's PMSIS emulation layer (host cc, and rv32 under qemu) and compared bit for
bit with the reference."""
import copy
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import mcugen
from conftest import MODELS, require_tool, shared_model
from mcugen.boards import get_board
from mcugen.codegen import gap8
from mcugen.errors import MCUGenError
from mcugen.runners import build_harness
from mcugen.verify import compare, verify_inputs

_SCHEDULES = {}


def schedule_of(name, encoder="auto"):
    if (name, encoder) not in _SCHEDULES:
        project = mcugen.build(shared_model(name), target="host", out=None, wbits=4, abits=8,
                               input_range=MODELS[name], encoder=encoder)
        _SCHEDULES[name, encoder] = project.schedule
    return _SCHEDULES[name, encoder]


def write_gap8(schedule, directory, board=None):
    """Render a (host-built) schedule as a GAP8 project; verify then builds it as one."""
    schedule.meta["target"] = "gap8"
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in gap8.render(schedule, "model.onnx", board=board).items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)
    schedule.save(directory)
    return directory


def small_l1_board(l1_bytes):
    board = copy.deepcopy(get_board("gap8"))
    # a budget of exactly l1_bytes: the heap also holds the stacks and the runtime reserve
    l1 = gap8.l1_layout(board)
    board["memory"]["l1"] = {"bytes": l1_bytes, "heap": l1_bytes + l1["stacks"] + l1["runtime_reserve"],
                             "runtime_reserve": l1["runtime_reserve"], "stack_bytes": l1["stack"],
                             "slave_stack_bytes": l1["slave_stack"]}
    return board


def emu_stats(exe, schedule, n):
    """Run n inputs with PMSIS_EMU_STATS=1: the emulation's DMA bytes and L1 high-water mark."""
    x = verify_inputs(schedule, n, seed=3)[:n]
    fin, fout = exe.parent / "stats_in.f32", exe.parent / "stats_out.i32"
    x.tofile(fin)
    done = subprocess.run([str(exe), str(fin), str(fout)], capture_output=True, text=True,
                          env=dict(os.environ, PMSIS_EMU_STATS="1"), timeout=300)
    assert done.returncode == 0, done.stderr
    found = re.search(r"dma_bytes (\d+) transfers (\d+) l1_peak (\d+)", done.stderr)
    return int(found.group(1)), int(found.group(3))


@pytest.mark.parametrize("name", list(MODELS))
def test_gap8_emulation_is_bit_exact(name, tmp_path, host_cc):
    schedule = schedule_of(name)
    project = write_gap8(schedule, tmp_path / "proj")
    result = compare(project, schedule, verify_inputs(schedule, 50, seed=5))
    assert result.n == 52 and result.mismatches == 0, result.first


def test_gap8_project_follows_the_sdk_and_pmsis(tmp_path):
    files = gap8.render(schedule_of("resnet8"), "resnet8.onnx")
    assert {"Makefile", "model.c", "model.h", "main.c", "emu.mk", "emu_main.c",
            "pmsis_emu/pmsis.h", "pmsis_emu/pmsis.c"} <= set(files)
    makefile = files["Makefile"]
    for line in ("APP = model", "APP_SRCS = main.c model.c", "APP_CFLAGS",
                 "include $(RULES_DIR)/pmsis_rules.mk"):
        assert line in makefile
    model_c = files["model.c"]
    for call in ("pi_cluster_conf_init(", "pi_open_from_conf(", "pi_cluster_open(",
                 "pi_cluster_send_task_to_cl(", "pi_cl_team_fork(MODEL_NB_CORES", "pi_core_id()",
                 "pi_l1_malloc(&model_cluster", "pi_l1_free(&model_cluster", "pi_cl_dma_memcpy_2d(",
                 "pi_cl_dma_wait(", '#include "mcugen_isa.h"', "isa_sdot_h(", "} arena PI_L2;"):
        assert call in model_c, call
    # the ISA layer the C targets share: GAP8's Xpulp built-ins under either SDK flavour
    isa = files["mcugen_isa.h"]
    assert "#elif defined(MCUGEN_ISA_PULP)" in isa and "__builtin_pulp_sdotsp2(" in isa
    assert "malloc(" not in model_c.replace("pi_l1_malloc(", "")
    main_c = files["main.c"]
    assert "pi_perf_conf(1 << PI_PERF_CYCLES)" in main_c and "pmsis_kickoff(" in main_c
    for banned in ("FILE", "fprintf", "snprintf", "fopen"):      # not in PulpOS's stdio
        assert not re.search(rf"\b{banned}\b", main_c + model_c), banned
    header = files["model.h"]
    for api in ("void model_quantize_input(const float *x, model_input_t *q);",
                "void model_run(const model_input_t *q, model_output_t *y);",
                "#define MODEL_INPUT_SIZE", "#define MODEL_OUTPUT_SIZE", "model_output_scales"):
        assert api in header


def test_gap8_tiling_with_a_4k_l1_is_bit_exact_and_accounted(tmp_path, host_cc):
    schedule = schedule_of("kws_dscnn")
    board = small_l1_board(4096)
    plan = gap8.tile_plan(schedule, board)
    for step, record in zip(schedule.steps, plan):
        assert record["l1_bytes"] <= 4096
        if step.kind in ("conv2d", "avgpool", "maxpool"):        # none fits 4 KB untiled
            assert record["tiles"] > 1, record
    project = write_gap8(schedule, tmp_path / "proj", board)
    result = compare(project, schedule, verify_inputs(schedule, 50, seed=7))
    assert result.n == 52 and result.mismatches == 0, result.first
    dma_bytes, l1_peak = emu_stats(project / "build" / "host" / "model_test", schedule, 2)
    assert dma_bytes == 2 * sum(r["dma_bytes"] for r in plan)     # the plan is what runs
    assert l1_peak <= 4096 + gap8.l1_layout(board)["stacks"]   # the cluster stacks share L1


def test_gap8_a_layer_too_big_for_l1_fails_cleanly():
    # the threshold encoder's 255 int32 per output channel: not even one channel's share fits
    with pytest.raises(MCUGenError, match=r"does not fit the GAP8 L1 budget of 4,096 B"):
        gap8.render(schedule_of("mnist8", "threshold"), "mnist8.onnx", board=small_l1_board(4096))


def test_gap8_emulation_under_sanitizers(tmp_path, host_cc):
    schedule = schedule_of("resnet8")
    project = write_gap8(schedule, tmp_path / "proj")
    result = compare(project, schedule, verify_inputs(schedule, 50, seed=11), sanitize=True)
    assert result.n == 52 and result.mismatches == 0, result.first


@pytest.mark.parametrize("name", list(MODELS))
def test_gap8_emulation_on_rv32_under_qemu(name, tmp_path, host_cc):
    """`--target gap8` as a user builds it (resnet8 and kws_dscnn at W4A8 stream their weights
    from L3), cross-compiled for RV32IMC and run under qemu on 52 inputs."""
    for tool in ("riscv64-unknown-elf-gcc", "qemu-system-riscv32"):
        require_tool(tool)
    out = tmp_path / "proj"
    project = mcugen.build(shared_model(name), target="gap8", out=out, wbits=4, abits=8, input_range=MODELS[name])
    schedule = project.schedule
    result = compare(out, schedule, verify_inputs(schedule, 50, seed=13), on="qemu")
    assert result.n == 52 and result.mismatches == 0, result.first
    steps = [result.profile[i] for i in range(len(schedule.steps))]
    assert all(count > 0 for count in steps)
    assert build_harness(out, on="qemu", makefile="emu.mk").name == "model_test.elf"


def run_board_main(project, name):
    """The board's own program (main.c + model.c) built against the PMSIS emulation and run."""
    exe = project / name
    subprocess.run(["cc", "-O1", "-Wall", "-Wextra", "-Werror", "-Ipmsis_emu", "-o", name, "main.c",
                    "model.c", "pmsis_emu/pmsis.c"], cwd=project, check=True, capture_output=True)
    return subprocess.run([str(exe)], cwd=project, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", ["sine", "kws_dscnn"])
def test_gap8_board_main_checks_itself_against_the_reference(name, tmp_path, host_cc):
    """main.c passes on its baked-in inputs, and reports one corrupted expected value."""
    project = write_gap8(schedule_of(name), tmp_path / "proj")
    done = run_board_main(project, "board")
    assert done.returncode == 0 and done.stdout.rstrip().endswith("PASS"), done.stdout + done.stderr
    assert len(re.findall(r"sample \d+: \d+ cycles, 0 of \d+ outputs differ", done.stdout)) == gap8.BOARD_SAMPLES
    main_c = (project / "main.c").read_text()
    table = main_c.index("expected[N_SAMPLES][MODEL_OUTPUT_SIZE] = {")
    row = main_c.index("{ ", table + 45) + 2                   # the first expected value
    value = re.match(r"-?\d+", main_c[row:]).group(0)
    (project / "main.c").write_text(main_c[:row] + str(int(value) + 1) + main_c[row + len(value):])
    done = run_board_main(project, "board_corrupt")
    assert done.returncode != 0 and done.stdout.rstrip().endswith("FAIL"), done.stdout
    assert re.search(r"sample 0: \d+ cycles, 1 of \d+ outputs differ", done.stdout), done.stdout


def test_gap8_untiled_steps_run_on_the_fc_bit_exact(tmp_path, host_cc):
    """Concat and Transpose move codes from L2 on the fabric controller (no MAC, not tiled)."""
    from onnx import helper
    from onnx_factory import make_model, save, tensor
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Conv", ["x", "w2", "b2"], ["c2"], name="conv2", kernel_shape=[1, 1]),
             helper.make_node("Concat", ["r", "c2"], ["cat"], name="cat", axis=1),
             helper.make_node("Transpose", ["cat"], ["tr"], name="tr", perm=[0, 2, 3, 1]),
             helper.make_node("Flatten", ["tr"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "gw", "gb"], ["y"], name="fc", transB=1)]
    inits = [("w", rng.normal(size=(4, 2, 3, 3))), ("b", rng.normal(size=4) * 0.1),
             ("w2", rng.normal(size=(3, 2, 1, 1))), ("b2", rng.normal(size=3) * 0.1),
             ("gw", rng.normal(size=(3, 7 * 4 * 4))), ("gb", rng.normal(size=3))]
    path = save(make_model(nodes, [tensor("x", [1, 2, 4, 4])], [tensor("y", [1, 3])], inits),
                tmp_path / "cat.onnx")
    schedule = mcugen.build(path, target="host", out=None, input_range=(-1, 1)).schedule
    assert {"concat", "transpose"} <= {s.kind for s in schedule.steps}
    plan = {r["kind"]: r for r in gap8.tile_plan(schedule, get_board("gap8"))}
    assert plan["concat"]["on"] == "fc" and plan["conv2d"]["on"] == "cluster"
    project = write_gap8(schedule, tmp_path / "proj")
    result = compare(project, schedule, verify_inputs(schedule, 50, seed=2))
    assert result.n == 52 and result.mismatches == 0, result.first


def test_gap8_cycle_estimate_from_qemu_counts(tmp_path, host_cc):
    """simulate --on qemu on a gap8 project records each core's share of every fork; report
    turns it into the labelled cycle estimate. The counts themselves must show an even 8-core
    split and exclude the emulation's own work (DMA copies are the DMA's, not the cores')."""
    for tool in ("riscv64-unknown-elf-gcc", "qemu-system-riscv32", "riscv64-unknown-elf-size"):
        require_tool(tool)
    out = tmp_path / "proj"
    mcugen.build(shared_model("mnist8"), target="gap8", out=out, wbits=4, abits=4, input_range=(0, 255))
    cmd = [sys.executable, "-m", "mcugen"]
    done = subprocess.run(cmd + ["simulate", str(out), "--on", "qemu", "--n", "2"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    profile = json.loads((out / "profile.json").read_text())
    report = json.loads(subprocess.run(cmd + ["report", str(out), "--json"], capture_output=True,
                                       text=True, check=True).stdout)
    for layer in report["layers"]:
        counts = profile["gap8"][layer["step"]]
        assert counts["forks"] >= layer["tiles"] and counts["transfers"] >= 2 * layer["tiles"]
        assert counts["cores_total"] + counts["emulation"] < layer["instructions"]
        assert layer["est_cycles"] >= layer["busiest_core_instructions"] + layer["dma_bytes"] / 8
    biggest = max(report["layers"], key=lambda layer: layer["macs"])
    counts = profile["gap8"][biggest["step"]]
    assert counts["cores_total"] >= 7 * counts["cores_longest"]            # 8 cores, evenly
    assert biggest["instructions"] - counts["cores_total"] - counts["emulation"] < counts["cores_longest"] / 50
    totals = report["totals"]
    assert totals["est_cycles"] == sum(layer["est_cycles"] for layer in report["layers"])
    assert totals["reference_macs_per_cycle"] == 15.5
    text = subprocess.run(cmd + ["report", str(out)], capture_output=True, text=True, check=True).stdout
    assert "a MODEL, not a measurement" in text and "15.5 MAC/cycle" in text


def test_gap8_tiles_are_planned_once_per_build(tmp_path, monkeypatch):
    """The build's plan (Gap8Target.plan) carries each step's tiles; the report shows them and
    the render lays them out without planning again, in the C struct the Tile type describes."""
    project = mcugen.build(shared_model("kws_dscnn"), target="gap8", out=None, input_range=MODELS["kws_dscnn"])
    plans = {name: p["tiles"] for name, p in project.plan.items()}
    for layer in project.report["layers"]:
        assert layer["tiles"] == len(plans[layer["step"]].tiles)
    monkeypatch.setattr(gap8, "plan_tiles", lambda *a: pytest.fail("the render planned the tiles again"))
    files = gap8.render(project.schedule, "kws.onnx", project.board, project.plan)
    assert f"int32_t {', '.join(gap8.Tile._fields)};\n}} model_tile_t;" in files["model.c"]
    conv = max(plans, key=lambda name: len(plans[name].tiles))
    rows = re.search(rf"{conv}_tiles\[\d+\] = {{\n(.*?)\n}};", files["model.c"], re.S).group(1).splitlines()
    assert [tuple(map(int, re.findall(r"-?\d+", row))) for row in rows] == [tuple(t) for t in plans[conv].tiles]


def test_gap8_cycle_model_counts_a_task_per_head():
    """A step run head by head (Schedule.head_loops) sends one cluster task per head: the
    estimate adds each task's fixed cost (layer["tasks"], from tile_plan)."""
    from mcugen.cycle_model import layer_cycles, model_constants
    model = model_constants(get_board("gap8"))
    counts = {"emulation": 0, "cores_total": 800, "cores_longest": 100, "transfers": 0, "forks": 4}
    layer = {"runs_on": "cluster", "dma_bytes": 0, "tiles": 1, "macs": 0}
    one = layer_cycles(layer, counts, 1000, model, "cycles")["est_cycles"]
    four = layer_cycles(dict(layer, tasks=4), counts, 1000, model, "cycles")["est_cycles"]
    assert four - one == 3 * model["task_cycles"]


def test_gap8_encoders_are_the_common_snippets_with_a_branchless_clamp():
    """GAP8 renders the common encoder snippets (no copy of its own): the lut's index clamped
    with cv.max / cv.min on the CORE-V build (templates/common/encoders/_clamp.c.j2), and the
    Add's fold its index the same way; the emulation tests above check the results bit for
    bit."""
    root = os.path.join(os.path.dirname(mcugen.__file__), os.pardir, "templates")
    assert not os.path.exists(os.path.join(root, "gap8", "encoders"))
    model_c = gap8.render(schedule_of("resnet8"), "resnet8.onnx")["model.c"]
    assert "_fold_index(" in model_c
    for funct7 in ("0x2d", "0x2b"):          # cv.max, then cv.min
        for var in ("idx", "u"):             # an encoder's index, the fold's
            assert f'".insn r 0x2b, 3, {funct7}, %0, %0, %1" : "+r"({var})' in model_c


def test_gap8_hwc_window_only_where_the_stride_reads_every_pixel():
    """The hwc kernel's window decodes every input pixel of its rows: a conv whose stride is
    longer than its kernel (resnet8's 1x1 stride-2 shortcuts) keeps the im2col kernel, which
    gathers only the pixels read; the 3x3 convs, stride 2 included, take the window."""
    schedule, board = schedule_of("resnet8"), get_board("gap8")
    convs = [s for s in schedule.steps if s.kind == "conv2d"]
    kinds = {(s.params["k_h"], s.params["stride_h"]): gap8.simd_plan(s, schedule, board).get("hwc", 0)
             for s in convs}
    assert kinds[1, 2] == 0 and kinds[3, 2] == 1 and kinds[3, 1] == 1
