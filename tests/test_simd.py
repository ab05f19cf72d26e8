"""The SIMD kernels of boards with dot-product instructions (board cv32e40p): decode widths,
kernel choice, and the portable realization of the ISA layer bit-exact against the reference
on the host (many inputs, ASan/UBSan) and on RV32 under qemu. The CORE-V realization on the
RTL is tests/test_rtl.py."""
import subprocess
import sys

import numpy as np
import pytest

import mcugen
from conftest import MODELS, require_tool, shared_model
from mcugen.lower.decode_width import decode_width, inputs_fit_eight_bits, weight_cost8
from mcugen.quant.power import Encoding, Grid
from mcugen.quant.qgraph import QWeights
from mcugen.verify import compare, verify_inputs
from test_kernels import CONVS, conv_model, w

CONFIGS = {"uniform_w8a8": ("uniform", 8, 8), "power_w4a4": ("power", 4, 4),
           "power_w4a8": ("power", 4, 8), "power_w4a8_16": ("power", 4, 8)}
# the 16-bit-lane build: levels as the grids have them, power grids on every activation
SIXTEEN_BIT_LANES = dict(lanes="16", act_grid="power")


def power_weights(bits, exponent, rng):
    grid = Grid(bits, True, exponent)
    w_float = rng.normal(size=(6, 20))
    scale = np.abs(w_float).max(axis=1)
    codes = grid.quantize(w_float, scale[:, None])
    w_hat = grid.dequantize(codes, scale[:, None])
    error = np.linalg.norm(w_hat - w_float) / np.linalg.norm(w_float)
    return QWeights(codes, scale, grid, w_hat, error, np.zeros(6))


def test_an_eight_bit_table_costs_nothing_for_uniform_codes_and_little_for_4_bit_power():
    rng = np.random.default_rng(0)
    uniform = power_weights(8, 1.0, rng)
    assert weight_cost8(uniform) == 0.0
    w4 = power_weights(4, 2.0, rng)
    w8 = power_weights(8, 2.0, rng)
    # an 8-bit table rounds 4-bit levels (16x its resolution) by little, 8-bit levels by more
    assert 0.0 < weight_cost8(w4) < 0.05 and weight_cost8(w8) > 4 * weight_cost8(w4)
    a4, a8 = Encoding(4, False, 2.0, range=1.0), Encoding(8, False, 2.0, range=1.0)
    assert inputs_fit_eight_bits(Encoding(8, False, 1.0, range=1.0))
    assert inputs_fit_eight_bits(a4) and not inputs_fit_eight_bits(a8)
    assert decode_width("auto", w4, a4).bits == 8
    assert decode_width("auto", w4, a8).bits == 16
    assert decode_width("8", w8, a8).w_limit == 127 and decode_width("8", w8, a8).x_limit == 255


def build_simd(path, out, config, **extra):
    scheme, wbits, abits = CONFIGS[config]
    options = dict(input_range=(-2.0, 2.0), first_last_bits="same", scheme=scheme,
                   wbits=wbits, abits=abits) | (SIXTEEN_BIT_LANES if config.endswith("_16") else {}) | extra
    return mcugen.build(path, target="rv32", board="cv32e40p", out=out, **options)


def kernels(project):
    return {s.name: project.plan[s.name].get("simd", "plain")
            for s in project.schedule.steps if s.kind in ("conv2d", "dense")}


def simd_kernels(project):
    """The kernels of the MAC layers that are not depthwise (those keep the plain kernel)."""
    per_group = {s.name: s.params.get("out_c_per_group", 4) for s in project.schedule.steps}
    return {name: kind for name, kind in kernels(project).items() if per_group[name] >= 4}


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("name", list(MODELS))
def test_simd_kernels_are_bit_exact_on_the_host(name, config, tmp_path, host_cc):
    out = tmp_path / "proj"
    project = build_simd(shared_model(name), out, config, input_range=MODELS[name])
    used = simd_kernels(project)
    # 8-bit uniform codes are their own 8-bit decoded values; 8-bit power inputs need 16 bits
    # (the network's input is 8-bit uniform: the first layer may use 8-bit lanes); by default
    # 4-bit weights and the chosen activation grids decode to 8 bits (quant/lanes.py)
    assert "plain" not in used.values(), used
    if config == "uniform_w8a8":
        assert set(used.values()) <= {"b", "ub"}, used
    else:
        assert set(used.values()) & ({"h"} if config == "power_w4a8_16" else {"b", "ub"}), used
    result = compare(out, project.schedule, verify_inputs(project.schedule, 100, seed=7),
                     sanitize=name in ("resnet8", "kws_dscnn"))
    assert result.mismatches == 0, result.first


@pytest.mark.parametrize("name", list(CONVS))
def test_simd_conv_shapes_are_bit_exact(name, tmp_path, host_cc):
    """Remainders of the 4 x 2 blocks (channels and pixels), K not a multiple of the lanes,
    groups, dilation, strides and padding, in both lane widths."""
    in_shape, wshape, attrs = CONVS[name]
    path = conv_model(tmp_path, name, in_shape, w(*wshape), **attrs)
    per_group = wshape[0] // attrs.get("group", 1)
    for config in ("uniform_w8a8", "power_w4a8_16"):
        out = tmp_path / config
        project = build_simd(path, out, config)
        conv = next(s for s in project.schedule.steps if s.kind == "conv2d")
        # fewer than 4 output channels per group (depthwise): the plain kernel, by design
        assert (kernels(project)[conv.name] == "plain") == (per_group < 4)
        result = compare(out, project.schedule, verify_inputs(project.schedule, 30, seed=3),
                         sanitize=True)
        assert result.mismatches == 0, f"{config}: {result.first}"


def test_forced_decode_widths_change_the_kernels_and_stay_bit_exact(tmp_path, host_cc):
    path = shared_model("mnist8")
    eight = build_simd(path, tmp_path / "p8", "uniform_w8a8", scheme="power",
                       decode_bits="8", input_range=(0, 255))
    sixteen = build_simd(path, tmp_path / "p16", "uniform_w8a8", decode_bits="16",
                         input_range=(0, 255))
    assert set(kernels(eight).values()) <= {"b", "ub"}
    assert set(kernels(sixteen).values()) == {"h"}
    for step in eight.schedule.steps:
        if step.kind in ("conv2d", "dense"):
            assert np.abs(step.consts["weights"]).max() <= 127
    for project, out in ((eight, tmp_path / "p8"), (sixteen, tmp_path / "p16")):
        result = compare(out, project.schedule, verify_inputs(project.schedule, 50, seed=2))
        assert result.mismatches == 0, result.first


def test_simd_kernels_run_bit_exact_on_rv32_under_qemu(tmp_path, host_cc):
    for tool in ("riscv64-unknown-elf-gcc", "qemu-system-riscv32"):
        require_tool(tool)
    out = tmp_path / "proj"
    project = build_simd(shared_model("kws_dscnn"), out, "power_w4a4",
                         input_range=MODELS["kws_dscnn"])
    result = compare(out, project.schedule, verify_inputs(project.schedule, 20, seed=4), on="qemu")
    assert result.mismatches == 0, result.first


def test_a_bad_decode_width_is_one_line(tmp_path):
    out = tmp_path / "proj"
    done = subprocess.run([sys.executable, "-m", "mcugen", "build", str(shared_model("sine")),
                           "--target", "rv32", "--board", "cv32e40p", "--decode-bits", "12",
                           "-o", str(out)], capture_output=True, text=True)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "--decode-bits" in done.stderr and not out.exists()
    with pytest.raises(mcugen.MCUGenError, match="decode-bits must be one of"):
        mcugen.build(shared_model("sine"), target="rv32", board="cv32e40p", decode_bits="4")
