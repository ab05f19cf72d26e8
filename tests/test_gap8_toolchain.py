"""GAP8 sources as the board's toolchain and runtime see them, checked with what this machine has:
the board files (main.c, model.c) compiled to assembly by the RISC-V GCC against the PMSIS
emulation's headers, whose placement macros name sections as the SDK's do, in both SDK flavours;
the cluster stacks the project asks for measured against what its functions need (GCC's call
graph); and L1 budgeted with those stacks, the emulation taking them from the same heap and
failing as the runtime does."""
import os
import re
import subprocess
from collections import defaultdict

import pytest

import mcugen
from conftest import require_tool, shared_model
from mcugen.codegen import gap8
from mcugen.boards import get_board
from mcugen.verify import compare, verify_inputs

RV_CC = "riscv64-unknown-elf-gcc"
# What each SDK flavour's makefiles define for GAP8 (PulpOS: utils/rules/pulp_rules.mk and its
# -D__$(TARGET_CHIP_FAMILY)__; FreeRTOS: __GAP8__), and the emulation's switch to FreeRTOS's
# section names and stack handling.
FLAVOURS = {"pulpos": ["-D__pulp__", "-D__GAP8__", "-D__PULP_OS__"],
            "freertos": ["-D__GAP8__", "-D__FREERTOS__", "-DPI_EMU_FREERTOS"]}
# GAP8's GCC declares these built-ins itself (its prototypes); Debian's RISC-V GCC needs them
# declared to compile the Xpulp branch of the ISA layer to assembly (calls it cannot resolve,
# which is all -S needs).
PULP_PROTOTYPES = """
typedef signed char test_v4s __attribute__((vector_size(4)));
typedef unsigned char test_v4u __attribute__((vector_size(4)));
typedef short test_v2s __attribute__((vector_size(4)));
int __builtin_pulp_sdotsp4(test_v4s a, test_v4s b, int acc);
int __builtin_pulp_sdotusp4(test_v4u a, test_v4s b, int acc);
int __builtin_pulp_sdotsp2(test_v2s a, test_v2s b, int acc);
"""
BUILDS = {   # (model, options): SIMD convs, depthwise band kernels, dense layers, a uniform grid
    "resnet8_w4a8": ("resnet8", dict(wbits=4, abits=8)),
    "kws_w4a4": ("kws_dscnn", dict(wbits=4, abits=4)),
    "mnist8_uniform": ("mnist8", dict(scheme="uniform")),
}
RUNTIME_FRAMES = 256      # the runtime's own frames under a worker or a cluster entry (fork, DMA)
_PROJECTS = {}


def gap8_project(name, tmp_path_factory):
    if name not in _PROJECTS:
        model, options = BUILDS[name]
        out = tmp_path_factory.mktemp(name) / "proj"
        mcugen.build(shared_model(model), target="gap8", out=out, input_range=(0.0, 1.0), **options)
        _PROJECTS[name] = out
    return _PROJECTS[name]


def rv_compile(project, source, flags, out):
    return subprocess.run([RV_CC, "--specs=picolibc.specs", "-march=rv32imc", "-mabi=ilp32", "-O3",
                           "-Wall", "-Wextra", "-Werror", "-Ipmsis_emu", *flags, "-S", "-o", str(out),
                           source], cwd=project, capture_output=True, text=True)


@pytest.mark.parametrize("flavour", list(FLAVOURS))
@pytest.mark.parametrize("name", list(BUILDS))
def test_every_board_file_compiles_to_assembly(name, flavour, tmp_path, tmp_path_factory):
    """GCC refuses a const and a writable object in one named section only when it generates
    code: -S, not -fsyntax-only. Both flavours take the Xpulp branch where the model has one."""
    require_tool(RV_CC)
    project = gap8_project(name, tmp_path_factory)
    (tmp_path / "pulp.h").write_text(PULP_PROTOTYPES)
    flags = FLAVOURS[flavour] + ["-include", str(tmp_path / "pulp.h")]
    for source in ("main.c", "model.c"):
        done = rv_compile(project, source, flags, tmp_path / f"{source}.s")
        assert done.returncode == 0, f"{source} ({flavour}): {done.stderr[-2000:]}"
    simd = "isa_dot4x" in (project / "model.c").read_text()     # the hwc kernel or im2col's
    calls = re.findall(r"call\s+__builtin_pulp_sdot", (tmp_path / "model.c.s").read_text())
    assert bool(calls) == simd, f"{flavour}: Xpulp branch taken {bool(calls)}, SIMD kernels {simd}"


def test_the_emulation_names_sections_as_the_sdk(tmp_path):
    """A const array in PI_L2 beside the writable arena: what every board file did before. The
    emulation's headers make GCC refuse it as the SDK's do, on the host compiler too."""
    project = gap8.render(mcugen.build(shared_model("sine"), target="gap8", out=None).schedule, "m.onnx")
    (tmp_path / "pmsis.h").write_text(project["pmsis_emu/pmsis.h"])
    (tmp_path / "mix.c").write_text('#include "pmsis.h"\nstatic const int table[2] PI_L2 = {1, 2};\n'
                                    'static int arena[2] PI_L2;\n'
                                    'int get(int i) { arena[i] = table[i]; return arena[1 - i]; }\n')
    for flavour in FLAVOURS.values():
        done = subprocess.run(["cc", "-S", "-O2", *flavour, "-I.", "-o", "mix.s", "mix.c"], cwd=tmp_path,
                              capture_output=True, text=True)
        assert done.returncode != 0 and "section type conflict" in done.stderr, done.stderr


# ---- cluster stacks -------------------------------------------------------------------------
def call_graph(ci_text):
    """GCC's -fcallgraph-info=su: function -> (frame bytes, static|dynamic|bounded), and its calls."""
    frames, calls = {}, defaultdict(set)
    for m in re.finditer(r'node: \{ title: "([^"]+)" label: "[^"]*?\\n[^"]*?\\n(\d+) bytes \((\w+)', ci_text):
        frames[m.group(1)] = (int(m.group(2)), m.group(3))
    for m in re.finditer(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"', ci_text):
        calls[m.group(1)].add(m.group(2))
    return frames, calls


def stack_depth(function, frames, calls, path=()):
    """The deepest stack below a function, its own frame included (functions of other files,
    the runtime's, count 0 here: RUNTIME_FRAMES covers them)."""
    assert function not in path, f"recursion through {function}"
    own, kind = frames.get(function, (0, "static"))
    assert kind == "static", f"{function} has a {kind} frame"
    return own + max([stack_depth(c, frames, calls, path + (function,)) for c in calls.get(function, ())],
                     default=0)


@pytest.mark.parametrize("opt", ["-O3", "-Os"])
@pytest.mark.parametrize("name", list(BUILDS))
def test_cluster_stacks_hold_what_the_workers_need(name, opt, tmp_path, tmp_path_factory):
    """Core 0 runs a layer's cluster entry (`_cluster`) and, through the fork, a worker; cores
    1-7 a worker (`_worker`, `_decode`). The sizes model.c asks for hold the deepest of each."""
    require_tool(RV_CC)
    project = gap8_project(name, tmp_path_factory)
    done = subprocess.run([RV_CC, "--specs=picolibc.specs", "-march=rv32imc", "-mabi=ilp32", opt,
                           "-Ipmsis_emu", "-fcallgraph-info=su", "-S", "-o", str(tmp_path / "model.s"),
                           "model.c"], cwd=project, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    frames, calls = call_graph((tmp_path / "model.ci").read_text())
    def deepest(*suffixes):
        return max(stack_depth(f, frames, calls) for f in frames if f.endswith(suffixes))
    worker, entry = deepest("_worker", "_decode"), deepest("_cluster")
    model_c = (project / "model.c").read_text()
    stack = int(re.search(r"#define MODEL_CL_STACK_BYTES (\d+)", model_c).group(1))
    slave = int(re.search(r"#define MODEL_CL_SLAVE_STACK_BYTES (\d+)", model_c).group(1))
    assert worker + RUNTIME_FRAMES <= slave, (worker, slave)
    assert entry + worker + RUNTIME_FRAMES <= stack, (entry, worker, stack)


# ---- L1 with the stacks ---------------------------------------------------------------------
@pytest.mark.parametrize("bits", [(4, 8), (4, 4)])
def test_resnet8_plans_l1_with_its_stacks(bits):
    """Every layer's L1 buffer plus the stacks model.c asks for fits the heap left after the
    runtime's reserve (resnet8 W4A8 planned 59,628 B before, 68,844 B with the default stacks)."""
    project = mcugen.build(shared_model("resnet8"), target="gap8", out=None, wbits=bits[0],
                           abits=bits[1], input_range=(0.0, 1.0))
    board = get_board("gap8")
    l1 = gap8.l1_layout(board)
    largest = max(layer["l1_bytes"] for layer in project.report["layers"])
    assert l1["stacks"] == l1["stack"] + 7 * l1["slave_stack"] and l1["stacks"] > 0
    assert largest <= l1["budget"] and largest + l1["stacks"] + l1["runtime_reserve"] <= l1["heap"]
    assert l1["heap"] <= board["memory"]["l1"]["bytes"]


def emulation_build(project, build, cflags):
    subprocess.run(["make", "-s", "-f", "emu.mk", "-C", str(project), f"BUILD={build}",
                    f"CFLAGS=-O1 {cflags}"], check=True, capture_output=True)
    return project / build / "model_test"


def run_one(exe, schedule, env=None):
    x = verify_inputs(schedule, 1, seed=0)
    x.tofile(exe.parent / "in.f32")
    return subprocess.run([str(exe), str(exe.parent / "in.f32"), str(exe.parent / "out.i32")],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("flavour", ["", "-DPI_EMU_FREERTOS"])
def test_the_emulated_runtime_takes_the_stacks_from_l1(flavour, tmp_path, host_cc):
    """The emulation's L1 high-water mark is the layers' buffer plus the stacks, and an L1 with
    room for the buffer but not for the stacks fails the first cluster task, reported in one line."""
    schedule = mcugen.build(shared_model("sine"), target="gap8", out=tmp_path / "proj",
                            input_range=(-3.0, 3.0)).schedule
    project = tmp_path / "proj"
    model_c = (project / "model.c").read_text()
    buffer = int(re.search(r"#define MODEL_L1_BYTES (\d+)", model_c).group(1))
    stacks = gap8.l1_layout(get_board("gap8"))["stacks"]
    exe = emulation_build(project, "build/fits", flavour)
    done = run_one(exe, schedule, env=dict(os.environ, PMSIS_EMU_STATS="1"))
    assert done.returncode == 0, done.stdout + done.stderr
    peak = int(re.search(r"l1_peak (\d+)", done.stderr).group(1))
    assert peak == (buffer + 7) // 8 * 8 + stacks
    exe = emulation_build(project, "build/short", f"{flavour} -DPI_EMU_L1_BYTES={buffer + stacks - 64}")
    done = run_one(exe, schedule)
    assert done.returncode != 0
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and re.match(r"model: layer \w+: the cluster task failed", lines[0]), done.stdout


def test_an_l1_too_small_for_the_buffer_is_reported_in_one_line(tmp_path, host_cc):
    schedule = mcugen.build(shared_model("sine"), target="gap8", out=tmp_path / "proj",
                            input_range=(-3.0, 3.0)).schedule
    exe = emulation_build(tmp_path / "proj", "build/tiny", "-DPI_EMU_L1_BYTES=64")
    done = run_one(exe, schedule)
    assert done.returncode != 0
    assert re.fullmatch(r"model: cannot allocate the layers' \d+ B of L1 \(pi_l1_malloc\)\n", done.stdout)


def test_the_cluster_configuration_outlives_its_open(tmp_path, host_cc):
    """FreeRTOS's pi_cluster_close reads the configuration given to pi_open_from_conf; the
    emulation does too, and the sanitizer run (use-after-return detection on) sees a
    configuration that was a local of the function that opened the cluster."""
    project = mcugen.build(shared_model("sine"), target="gap8", out=tmp_path / "proj",
                           input_range=(-3.0, 3.0))
    result = compare(tmp_path / "proj", project.schedule, verify_inputs(project.schedule, 5, seed=1),
                     sanitize=True)
    assert result.mismatches == 0 and result.n == 7, result.first


def test_a_layer_that_fits_no_l1_tiling_is_a_shortfall_of_the_fit_check(tmp_path):
    """The L1 check is the target's, with the board's other budgets: the build stops before it
    writes anything, naming the board, the layer and the budget."""
    board = get_board("gap8")
    board["memory"]["l1"] = dict(board["memory"]["l1"], heap=4096 + gap8.l1_layout(board)["stacks"] + 128)
    with pytest.raises(mcugen.MCUGenError) as error:
        mcugen.build(shared_model("mnist8"), target="gap8", board=board, out=tmp_path / "proj",
                     encoder="threshold", input_range=(0.0, 1.0), lanes="16", act_grid="power")
    assert re.search(r"does not fit board 'gap8': layer '.+' \(\w+\) does not fit the GAP8 L1 budget "
                     r"of 4,096 B", str(error.value)), str(error.value)
    assert not (tmp_path / "proj").exists()
