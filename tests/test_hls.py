"""The hls target: every shared model's project C-simulates bit-exact against the reference (g++
with the ap_types headers of the installed hls4ml wheel), the project files are complete and
well-formed, the estimate fits or fails the board in one line."""
import re
import subprocess

import numpy as np
import pytest

import mcugen
from conftest import MODELS, REPO, require_tool, shared_model
from mcugen.codegen import hls_estimate
from mcugen.verify import compare, verify_inputs
from test_project_dir import mcugen_cli

UNROLL_LIMIT = 4096
# the Tcl commands of the Vitis HLS command reference (UG1399) build_prj.tcl may use, and Tcl's own
TCL_COMMANDS = {"open_project", "set_top", "add_files", "open_solution", "set_part", "create_clock",
                "csim_design", "csynth_design", "cosim_design", "export_design", "exit",
                "set", "if", "}", "config_interface", "config_compile"}


@pytest.fixture
def gxx():
    require_tool("g++")


def build_hls(model, out, **options):
    target_options = {k: options.pop(k) for k in ("reuse", "io", "fit", "interval", "fps")
                      if k in options}
    return mcugen.build(model, target="hls", out=out, target_options=target_options, **options)


def assert_bit_exact(project, out, n=60, sanitize=False):
    result = compare(out, project.schedule, verify_inputs(project.schedule, n, seed=5), sanitize=sanitize)
    assert result.n == n + 2 and result.mismatches == 0, result.first


def top_ports(model_cpp: str) -> list:
    """The parameter names of the top function (model_top)."""
    signature = re.search(r"^void model_top\(([^)]*)\)", model_cpp, re.M).group(1)
    return [re.search(r"(\w+)(\[[^\]]*\])?$", part.strip()).group(1) for part in signature.split(",")]


def assert_well_formed(out):
    """Static checks an FPGA engineer would make before opening the project in Vitis."""
    cpp = (out / "firmware" / "model.cpp").read_text()
    pragmas = re.findall(r"#pragma HLS INTERFACE mode=(\w+) port=(\w+)", cpp)
    ported = {port for _, port in pragmas}
    for port in top_ports(cpp) + ["return"]:
        assert port in ported, f"top port {port} has no INTERFACE pragma"
    assert "#pragma HLS DATAFLOW" in cpp
    # every unrolled loop (and the loops nested in it) stays under Vitis's unroll limit
    for bound in re.findall(r"for \(int \w+ = 0; \w+ < (\d+); \w+\+\+\) \{\n#pragma HLS UNROLL", cpp):
        assert int(bound) <= UNROLL_LIMIT
    assert_one_reader_per_array(cpp)
    cfg = (out / "hls_config.cfg").read_text()
    keys = dict(re.findall(r"^([\w.]+)=(.*)$", cfg, re.M))
    assert keys["syn.top"] == "model_top" and re.search(r"^part=\S+", cfg, re.M)
    for key in ("syn.file", "tb.file"):
        for path in re.findall(rf"^{re.escape(key)}=(.*)$", cfg, re.M):
            assert (out / path).exists(), f"{key} names {path}, which is not in the project"
    for line in (out / "build_prj.tcl").read_text().splitlines():
        word = line.strip().split(" ")[0] if line.strip() and not line.strip().startswith("#") else None
        assert word is None or word in TCL_COMMANDS, f"undocumented Tcl command: {line}"


def assert_one_reader_per_array(cpp):
    """DATAFLOW: every array local to model_top is read by one process call."""
    body = cpp[cpp.index("#pragma HLS DATAFLOW"):]
    read = []
    for callee, args in re.findall(r"^    (\w+)\(([^)]*)\);", body, re.M):
        args = [a.strip() for a in args.split(",")]
        if callee == "read_input":
            continue
        read += args[:1] if callee.startswith("fanout_") or callee == "write_output" else args[:-1]
    assert read and len(read) == len(set(read)), sorted(a for a in read if read.count(a) > 1)


def assert_roms_fit_their_widths(out):
    """Every ROM value fits the exact width declared for synthesis (the C simulation reads the
    same values from plain C types)."""
    text = "".join(path.read_text() for path in sorted((out / "firmware" / "roms").glob("*.h")))
    # a product ROM is two-dimensional: [copies][entries]
    roms = re.findall(r"MCUGEN_ROM\(ap_(u?)int<(\d+)>, \w+\) (\w+)((?:\[\d+\])+) = \{(.*?)\};", text, re.S)
    assert roms
    for unsigned, bits, name, dims, body in roms:
        values = np.array([int(v) for v in re.findall(r"-?\d+", body)])
        bits = int(bits)
        lo, hi = (0, 2 ** bits - 1) if unsigned else (-2 ** (bits - 1), 2 ** (bits - 1) - 1)
        size = np.prod([int(d) for d in re.findall(r"\d+", dims)])
        assert values.size == size and lo <= values.min() and values.max() <= hi, name


@pytest.mark.parametrize("config", ["w4a8", "w4a4"])
@pytest.mark.parametrize("name", list(MODELS))
def test_shared_model_csim_is_bit_exact(name, config, tmp_path, gxx):
    lo, hi = MODELS[name]
    bits = {"w4a8": dict(wbits=4, abits=8), "w4a4": dict(wbits=4, abits=4, first_last_bits="same")}
    out = tmp_path / "hls"
    project = build_hls(shared_model(name), out, board="zcu104", fit=True, input_range=(lo, hi),
                        **bits[config])
    assert_bit_exact(project, out)
    assert_well_formed(out)
    assert_roms_fit_their_widths(out)
    macs = [layer for layer in project.report["layers"] if layer.get("multiply")]
    assert macs and all(layer["lanes"] <= UNROLL_LIMIT for layer in macs)
    if config == "w4a4":     # 4-bit x 4-bit products come from ROMs or LUTs, never a DSP (the
        # first layer reads the network's 8-bit input)
        narrow = [layer for layer in macs if layer["wbits"] <= 4 and layer["abits"] <= 4]
        assert narrow and all(layer["multiply"] in ("rom", "fabric") for layer in narrow), narrow


@pytest.mark.parametrize("example", ["digits_cnn", "act_digits"])
def test_examples_csim_bit_exact(example, tmp_path, gxx):
    out = tmp_path / "hls"
    project = build_hls(REPO / "examples" / f"{example}.onnx", out, wbits=4, abits=4,
                        input_range=(0.0, 16.0), fit=True, board="zcu104")
    assert_bit_exact(project, out, n=40)


def test_under_sanitizers_and_as_a_stream(tmp_path, gxx):
    """resnet8 (residual adds, so fan-out copies; average pool; product ROMs) under
    ASan/UBSan, and mnist8 with AXI-Stream ports."""
    out = tmp_path / "resnet8"
    project = build_hls(shared_model("resnet8"), out, wbits=4, abits=4, input_range=(0.0, 255.0),
                        board="zcu104", fit=True)
    assert "fanout_" in (out / "firmware" / "model.cpp").read_text()
    assert_bit_exact(project, out, n=8, sanitize=True)
    out = tmp_path / "mnist8"
    project = build_hls(shared_model("mnist8"), out, io="stream", input_range=(0.0, 255.0))
    cpp = (out / "firmware" / "model.cpp").read_text()
    assert "mode=axis port=input" in cpp and "mode=axis port=output" in cpp
    assert_well_formed(out)
    assert_bit_exact(project, out, n=30)


def test_testbench_compares_with_its_golden_vectors(tmp_path, gxx):
    """The tb on its own (as in Vitis csim): 0 mismatches on tb_data/, and a wrong golden
    value is reported and fails the run."""
    out = tmp_path / "hls"
    project = build_hls(shared_model("sine"), out, input_range=(0.0, 6.2832))
    exe = project_target(project).build(out)
    done = subprocess.run([str(exe)], cwd=out, capture_output=True, text=True)
    assert done.returncode == 0 and "16 inputs, 0 mismatches" in done.stdout, done.stdout + done.stderr
    golden = (out / "tb_data" / "golden.txt").read_text().splitlines()
    golden[3] = str(int(golden[3]) + 1)
    (out / "tb_data" / "golden.txt").write_text("\n".join(golden) + "\n")
    done = subprocess.run([str(exe)], cwd=out, capture_output=True, text=True)
    assert done.returncode == 1 and "1 mismatches" in done.stdout and "input 3" in done.stderr


def project_target(project):
    from mcugen.targets import target_of
    return target_of(project.schedule)


def test_fit_raises_the_reuse_factor_until_the_estimate_fits(tmp_path):
    """resnet8 on the small pynq-z2: W4A4 fits once --fit raises the reuse factor; W8A8 (8-bit
    weights in 8-bit lanes since the lanes change) just fits, its ROMs and ping-pong buffers
    taking nearly all the BRAM (a model too big at any reuse: the next test)."""
    model = shared_model("resnet8")
    w4a4 = ("--wbits", "4", "--abits", "4", "--input-range", "0:255")
    code, _, err = mcugen_cli("build", model, "--target", "hls", "--board", "pynq-z2", "--reuse", "1",
                              *w4a4, "-o", tmp_path / "no")
    assert code == 1 and "needs" in err and "at reuse 1;" in err and "--fit" in err, err
    assert "Traceback" not in err and not (tmp_path / "no").exists()
    project = mcugen.build(model, target="hls", board="pynq-z2", input_range=(0.0, 255.0), wbits=4,
                           abits=4, target_options={"reuse": 1, "fit": True})
    h = project.report["hls"]
    assert h["reuse"] > 1
    assert all(h[k] <= h["budget"][k] for k in ("dsp", "bram_18k", "lut", "ff"))
    project = mcugen.build(model, target="hls", board="pynq-z2", input_range=(0.0, 255.0),
                           scheme="uniform", wbits=8, abits=8, target_options={"fit": True})
    h = project.report["hls"]
    assert 0.9 * h["budget"]["bram_18k"] <= h["bram_18k"] <= h["budget"]["bram_18k"], h




def test_a_model_too_big_at_any_reuse_fails_in_one_line(tmp_path):
    from onnx import helper
    from onnx_factory import make_model, save, tensor
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="big", transB=1)]
    path = save(make_model(nodes, [tensor("x", [1, 1400])], [tensor("y", [1, 1400])],
                           [("w", rng.normal(size=(1400, 1400))), ("b", rng.normal(size=1400))]),
                tmp_path / "big.onnx")
    code, _, err = mcugen_cli("build", path, "--target", "hls", "--fit", "--scheme", "uniform",
                              "--input-range", "-1:1", "-o", tmp_path / "out")
    lines = [line for line in err.splitlines() if line.startswith("mcugen: error:")]
    assert code == 1 and len(lines) == 1 and "BRAM_18K needs" in lines[0], err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["--target", "hls", "--reuse", "0"], "--reuse must be"),
    (["--target", "host", "--reuse", "4"], "takes no option --reuse"),
    (["--target", "hls", "--board", "gap8"], "does not take target 'hls'"),
    (["--target", "gap8", "--board", "kv260"], "does not take target 'gap8'"),
])
def test_bad_target_options_are_one_line_errors(args, message, tmp_path):
    code, _, err = mcugen_cli("build", shared_model("sine"), *args, "-o", tmp_path / "out")
    assert code == 1 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_report_and_boards_show_the_fpga(tmp_path):
    out = tmp_path / "hls"
    build_hls(shared_model("mnist8"), out, board="kv260", input_range=(0.0, 255.0))
    code, stdout, _ = mcugen_cli("report", out)
    assert code == 0 and "HLS estimate" in stdout and "xck26-sfvc784-2LV-c" in stdout
    assert re.search(r"L00\S*\s+(dsp|fabric|rom)\s+\d+", stdout)
    code, stdout, _ = mcugen_cli("boards")
    for board in ("pynq-z2", "ultra96v2", "zcu104", "kv260"):
        assert board in stdout
    code, _, err = mcugen_cli("simulate", out, "--on", "qemu")
    assert code == 1 and "runs on host, not 'qemu'" in err and "Traceback" not in err, err


@pytest.mark.parametrize("depth, width, blocks", [
    (1024, 18, 1), (512, 36, 2), (16384, 1, 1), (2048, 9, 1), (2048, 18, 2),
    (1025, 18, 2), (4096, 4, 1), (100, 8, 1), (8192, 8, 4)])
def test_bram18_counts_follow_the_block_geometry(depth, width, blocks):
    """An 18 Kb block with two ports holds 16K x 1, 8K x 2, 4K x 4, 2K x 9 or 1K x 18 (512 x 36
    needs its one wide port for a single reader)."""
    assert hls_estimate.bram18(depth, width) == blocks


def test_small_memories_go_to_luts():
    assert hls_estimate.memory(64, 16) == {"bram_18k": 0, "lut": 16}
    assert hls_estimate.memory(4096, 8, banks=4)["bram_18k"] == 4


@pytest.mark.parametrize("op", ["Add", "Concat"])
def test_a_layer_reading_one_buffer_twice_gets_two_copies(op, tmp_path, gxx):
    from onnx import helper
    from onnx_factory import make_model, save, tensor
    rng = np.random.default_rng(4)
    extra = {"axis": 1} if op == "Concat" else {}
    width = 8 if op == "Concat" else 4
    nodes = [helper.make_node("Conv", ["x", "cw", "cb"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node(op, ["r", "r"], ["d"], name="twice", **extra),
             helper.make_node("Flatten", ["d"], ["f"]),
             helper.make_node("Gemm", ["f", "gw", "gb"], ["y"], name="fc", transB=1)]
    inits = [("cw", rng.normal(size=(4, 2, 3, 3))), ("cb", rng.normal(size=4)),
             ("gw", rng.normal(size=(3, width * 36))), ("gb", rng.normal(size=3))]
    path = save(make_model(nodes, [tensor("x", [1, 2, 8, 8])], [tensor("y", [1, 3])], inits),
                tmp_path / "twice.onnx")
    out = tmp_path / "hls"
    project = build_hls(path, out, input_range=(-1.0, 1.0))
    assert_well_formed(out)
    assert_bit_exact(project, out, n=30)


def test_lanes_stop_at_the_unroll_limit(tmp_path, gxx):
    """A dense layer of 5,000 inputs at reuse 1 still unrolls at most 4,096 products."""
    from onnx import helper
    from onnx_factory import make_model, save, tensor
    rng = np.random.default_rng(5)
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="wide", transB=1)]
    path = save(make_model(nodes, [tensor("x", [1, 5000])], [tensor("y", [1, 2])],
                           [("w", rng.normal(size=(2, 5000))), ("b", rng.normal(size=2))]),
                tmp_path / "wide.onnx")
    from mcugen.boards import get_board
    board = get_board("zcu104")          # with budgets no real part has: the unroll is the limit
    board["fpga"].update(dsp=10 ** 6, bram_18k=10 ** 6, lut=10 ** 8, ff=10 ** 8)
    out = tmp_path / "hls"
    project = build_hls(path, out, input_range=(-1.0, 1.0), reuse=1, board=board)
    layer = next(layer for layer in project.report["layers"] if layer.get("lanes"))
    assert layer["lanes"] == UNROLL_LIMIT and layer["reuse"] == 2
    assert_well_formed(out)
    assert_bit_exact(project, out, n=20)


def two_convs(path):
    """x [1, 2, 5, 5] -> Conv 3x3 -> Relu -> Conv 3x3 -> Relu -> Gemm(3): the second conv and the
    Gemm multiply 4-bit weights by the codes of a ReLU."""
    from onnx import helper
    from onnx_factory import make_model, save, tensor
    rng = np.random.default_rng(6)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Flatten", ["r2"], ["f"]),
             helper.make_node("Gemm", ["f", "gw", "gb"], ["y"], name="fc", transB=1)]
    inits = [("w1", rng.normal(size=(4, 2, 3, 3))), ("b1", rng.normal(size=4) * 0.1),
             ("w2", rng.normal(size=(6, 4, 3, 3))), ("b2", rng.normal(size=6) * 0.1),
             ("gw", rng.normal(size=(3, 6 * 25))), ("gb", rng.normal(size=3))]
    return save(make_model(nodes, [tensor("x", [1, 2, 5, 5])], [tensor("y", [1, 3])], inits), path)


def mac_layers(project) -> dict:
    return {layer["step"]: layer for layer in project.report["layers"] if layer.get("multiply")}


@pytest.mark.parametrize("board, multiply, layers", [
    ("pynq-z2", "rom", ("conv2", "fc")), ("zcu104", "dsp", ("conv2", "fc")),
    ("4 DSPs", "rom", ("conv1", "conv2", "fc"))])
def test_a_product_rom_replaces_the_multiply_where_it_is_cheaper(board, multiply, layers, tmp_path, gxx):
    """W4A4 on 16-bit decode tables (no product table from the lowering): a ROM of the decoded
    products (240 entries, 1 BRAM_18K a lane) against a DSP a lane. pynq-z2 has 220 DSPs and 280
    BRAM_18K: the ROM is the smaller share; zcu104 has 1,728 DSPs for 624: the DSP. On a part of 4
    DSPs the first layer too, whose inputs are the network's signed 8-bit uniform codes (no
    decode table: 15 x 255 entries). Either way the C simulation is bit-exact."""
    from mcugen.boards import get_board
    if board == "4 DSPs":
        board = get_board("pynq-z2")
        board["fpga"]["dsp"] = 4
    out = tmp_path / "hls"
    project = build_hls(two_convs(tmp_path / "m.onnx"), out, board=board, input_range=(-1.0, 1.0),
                        wbits=4, abits=4, first_last_bits="same", mac_tables="separable",
                        decode_bits="16")
    macs = mac_layers(project)
    chosen = {name: layer["multiply"] for name, layer in macs.items() if name.split("_", 1)[1] in layers}
    assert len(chosen) == len(layers) and set(chosen.values()) == {multiply}, chosen
    if multiply == "rom":
        assert all(macs[name]["mac_dsp"] == 0 for name in chosen)
        assert "_product[u / 2][" in (out / "firmware" / "model.cpp").read_text()
    assert_roms_fit_their_widths(out)
    assert_well_formed(out)
    assert_bit_exact(project, out, n=6)


def test_fabric_width_operands_take_no_dsp(tmp_path):
    """W4A8: with 8-bit decode tables every multiply is 8 x 8 bits, LUTs, no DSP; with 16-bit
    tables the decoded operands of more than 10 bits take one DSP48E2 a lane (the first layer's
    8-bit power weights at least)."""
    model = two_convs(tmp_path / "m.onnx")
    for decode in ("8", "16"):
        project = mcugen.build(model, target="hls", board="zcu104", input_range=(-1.0, 1.0), wbits=4,
                               abits=8, decode_bits=decode, target_options={"reuse": 4})
        kinds = set()
        for name, layer in mac_layers(project).items():
            wb, xb = project.plan["macs"][name].operand_bits
            fabric = max(wb, xb) <= 10
            assert layer["multiply"] == ("fabric" if fabric else "dsp"), (decode, name, wb, xb)
            assert layer["mac_dsp"] == (0 if fabric else layer["lanes"]), (decode, name)
            kinds.add(layer["multiply"])
        assert kinds == ({"fabric"} if decode == "8" else kinds | {"dsp"}), (decode, kinds)
