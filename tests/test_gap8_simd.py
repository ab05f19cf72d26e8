"""The GAP8 SIMD conv kernel (templates/gap8/ops/conv2d_simd.c.j2): per-core im2col columns in
L1, blocks of 4 output channels x 2 pixels of dot products through the ISA layer, weights in
the SIMD layout per channel block. The odd conv shapes of test_kernels.py in both lane widths,
in one tile and in many, bit-exact against the reference in the PMSIS emulation (ASan+UBSan)."""
import numpy as np
import pytest

import mcugen
from mcugen.codegen import gap8
from mcugen.codegen.kernel_plan import SIMD_OC_BLOCK, simd_weight_layout
from mcugen.verify import verify_inputs
from test_gap8 import small_l1_board, write_gap8
from test_gap8_kernels import bit_exact, conv_plan, has_band, whole_model_fits
from test_kernels import CONVS, conv_model, w

SHAPES = {**CONVS,
          # groups of 8 channels: channel blocks of 4 inside a group
          "grouped_ocg8": ([1, 4, 6, 6], (16, 2, 3, 3), dict(group=2, pads=[1, 1, 1, 1])),
          # k = 288 lanes: long dot products, few channels per block in a small L1
          "3x3_32": ([1, 32, 3, 6], (12, 32, 3, 3), dict(pads=[1, 1, 1, 1]))}
LANES = {"8": ("b", "ub"), "16": ("h",)}


def gap8_schedule(tmp_path, name, decode_bits):
    in_shape, wshape, attrs = SHAPES[name]
    path = conv_model(tmp_path, name, in_shape, w(*wshape), **attrs)
    return mcugen.build(path, target="gap8", out=None, wbits=4, abits=8, input_range=(-2.0, 2.0),
                        first_last_bits="same", encoder="threshold", decode_bits=decode_bits).schedule


def is_simd(plan):
    """The SIMD conv: im2col columns, or (ungrouped, undilated) the hwc window."""
    return bool(plan.simd) and any(r["role"] in ("cols", "hwc") for r in plan.regions)


@pytest.mark.parametrize("decode_bits", ["8", "16"])
@pytest.mark.parametrize("name", list(SHAPES))
def test_gap8_simd_conv_is_bit_exact_in_one_tile_and_many(name, decode_bits, tmp_path, host_cc):
    schedule = gap8_schedule(tmp_path, name, decode_bits)
    plan = conv_plan(schedule, gap8.get_board("gap8"))
    step = plan.step
    if step.params["out_c_per_group"] < SIMD_OC_BLOCK:      # depthwise and narrow groups: the band
        assert not is_simd(plan) and has_band(plan)
        bit_exact(schedule, tmp_path / "band")
        return
    assert is_simd(plan) and plan.simd["simd"] in LANES[decode_bits]
    bit_exact(schedule, tmp_path / "one")
    if decode_bits == "16":                                  # many tiles: once per shape is enough
        return
    budget = many_tiles_budget(schedule, minimum=1 if name == "tiny_1x1_output" else 2)
    assert budget is not None
    plan = conv_plan(schedule, small_l1_board(budget))
    assert is_simd(plan) and plan.l1_bytes <= budget
    bit_exact(schedule, tmp_path / "many", small_l1_board(budget))


def many_tiles_budget(schedule, minimum):
    """The L1 budget (a multiple of 16 B) giving the SIMD conv the most tiles, at least
    `minimum`, while the whole model fits (None if there is none)."""
    best, most = None, minimum - 1
    top = -(-conv_plan(schedule, gap8.get_board("gap8")).l1_bytes // 16) * 16
    for budget in range(top, 0, -16):
        if not whole_model_fits(schedule, budget):
            break
        plan = conv_plan(schedule, small_l1_board(budget))
        if is_simd(plan) and len(plan.tiles) > most:
            best, most = budget, len(plan.tiles)
    return best


@pytest.mark.parametrize("channels,ocpg", [(5, 5), (12, 12), (16, 8), (10, 5), (24, 12), (8, 4)])
def test_gap8_simd_channel_blocks_start_where_the_weight_layouts_blocks_do(channels, ocpg):
    """Every channel block the tile plan may cut holds whole 4-row blocks of the SIMD layout: the
    block's rows, DMA'd as one slice, are the same interleaved words as in the full layout."""
    groups = channels // ocpg
    g = {"C": channels, "ocpg": ocpg}
    oc_main = ocpg - ocpg % SIMD_OC_BLOCK
    row_blocks = [k * ocpg + oc for k in range(groups) for oc in range(0, oc_main, SIMD_OC_BLOCK)]
    simd = {"padded_k": 8, "simd": "b", "lane_type": "int8", "row_blocks": row_blocks}
    weights = np.arange(channels * 8).reshape(channels, 8) % 251 - 125
    laid_out = simd_weight_layout(weights, channels, simd)
    sizes = gap8._simd_block_sizes(g)
    assert sizes and sizes[0] == channels
    for size in sizes:
        for c0 in range(0, channels, size):
            c1 = min(c0 + size, channels)
            # the block's own layout (its rows, its 4-row blocks rebased) equals the slice
            local = {"padded_k": 8, "simd": "b", "lane_type": "int8",
                     "row_blocks": [r - c0 for r in row_blocks if c0 <= r < c1]}
            assert all(r + SIMD_OC_BLOCK <= c1 for r in row_blocks if c0 <= r < c1)
            np.testing.assert_array_equal(laid_out[c0:c1], simd_weight_layout(weights[c0:c1], c1 - c0, local))


# GAP8's GCC provides these built-ins; host gcc does not. Stand-ins written from their
# documented meaning (lane-wise products summed onto the accumulator, lane 0 first) let the
# __pulp__ branch of the ISA layer (its vector types, casts and argument order) compile and run.
PULP_STAND_INS = """
#define __builtin_pulp_sdotsp4(x, w, acc) \\
    ((((acc) + (x)[0] * (w)[0]) + (x)[1] * (w)[1]) + (x)[2] * (w)[2] + (x)[3] * (w)[3])
#define __builtin_pulp_sdotusp4(x, w, acc) __builtin_pulp_sdotsp4(x, w, acc)
#define __builtin_pulp_sdotsp2(x, w, acc) (((acc) + (x)[0] * (w)[0]) + (x)[1] * (w)[1])
"""


# What each GAP SDK flavour's makefiles define for GAP8 (PulpOS: __pulp__ and __GAP8__ among
# others; FreeRTOS: __GAP8__), and the emulation's switch to that flavour's runtime behaviour.
FLAVOURS = {"pulpos": "-D__pulp__ -D__GAP8__ -D__PULP_OS__", "freertos": "-D__GAP8__ -D__FREERTOS__ -DPI_EMU_FREERTOS"}


@pytest.mark.parametrize("flavour", list(FLAVOURS))
@pytest.mark.parametrize("decode_bits", ["8", "16"])
def test_gap8_pulp_branch_of_the_isa_layer_with_stand_in_builtins(decode_bits, flavour, tmp_path, host_cc):
    """Both SDK flavours take the kernels' Xpulp branch (what GAP8's GCC compiles), and it gives
    the reference's outputs."""
    import subprocess
    from mcugen.reference.interpreter import quantize_input, run_codes
    from mcugen.runners import run_harness
    schedule = gap8_schedule(tmp_path, "kernel_5x2_stride_2x1", decode_bits)
    project = write_gap8(schedule, tmp_path / "proj")
    assert "isa_dot4x" in (project / "model.c").read_text()     # the hwc kernel or im2col's
    seen = subprocess.run(["cc", "-E", *FLAVOURS[flavour].split(), "-Ipmsis_emu", "model.c"], cwd=project,
                          capture_output=True, text=True, check=True).stdout
    assert "__builtin_pulp_sdotsp" in seen, f"{flavour} does not take the Xpulp branch"
    (project / "pulp_stand_ins.h").write_text(PULP_STAND_INS)
    flags = f"-O2 {FLAVOURS[flavour]} -include pulp_stand_ins.h"
    done = subprocess.run(["make", "-s", "-f", "emu.mk", "-C", str(project), "BUILD=build/pulp",
                           "CC=cc", f"CFLAGS={flags}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    x = verify_inputs(schedule, 30, seed=7)
    outputs = run_harness(project / "build/pulp/model_test", x, int(np.prod(schedule.output["shape"]))).outputs
    expected = run_codes(schedule, quantize_input(schedule, x)).reshape(len(x), -1)
    np.testing.assert_array_equal(outputs, expected)


def test_gap8_report_names_each_mac_layers_kernel_and_counts_the_simd_layout(tmp_path):
    """The report's SIMD column says which kernel each MAC layer runs (the tile plan's), and the
    L2 fit check counts the bytes the SIMD weight layout adds (16-bit lanes for 8-bit weights)."""
    from mcugen.targets import get_target
    project = mcugen.build(conv_model(
        tmp_path, "k", [1, 3, 8, 8], w(8, 3, 3, 3), pads=[1, 1, 1, 1]), target="gap8", out=None,
        wbits=4, abits=8, input_range=(-2.0, 2.0), first_last_bits="same", decode_bits="16")
    schedule, board = project.schedule, gap8.get_board("gap8")
    plans = gap8.plan_tiles(schedule, board)
    conv = next(layer for layer in project.report["layers"] if layer["op"] == "Conv")
    assert project.report["simd"].startswith("gap8")
    assert conv["kernel"] == plans[conv["step"]].simd["simd"] == "h"
    step = next(s for s in schedule.steps if s.name == conv["step"])
    laid_out = gap8.kernel_consts(step, plans[step.name].simd)["weights"]
    extra = get_target("gap8").plan(schedule, board)[step.name]["layout_extra_bytes"]
    assert extra == laid_out.nbytes - step.consts["weights"].nbytes > 0


@pytest.mark.parametrize("name", ["oc5_3x3_s2_asym", "kernel_5x2_stride_2x1", "grouped_ocg8"])
def test_gap8_hwc_conv_reorders_the_weights_as_its_window(name, tmp_path):
    """Ungrouped, undilated convs take the hwc kernel (conv2d_hwc.c.j2): weights in (ky, kx,
    channel) order, channels padded with zeros to whole words per window row, no im2col columns
    in L1; the others keep the column kernel."""
    schedule = gap8_schedule(tmp_path, name, "8")
    plan = conv_plan(schedule, gap8.get_board("gap8"))
    p = plan.step.params
    roles = {r["role"] for r in plan.regions}
    if p["group"] != 1:
        assert not plan.simd.get("hwc") and "cols" in roles and "hwc" not in roles
        return
    simd = plan.simd
    assert simd["hwc"] and "hwc" in roles and "cols" not in roles
    assert simd["cp"] * p["k_w"] % 4 == 0 and simd["cp"] - p["in_c"] < 4
    rows = plan.step.consts["bias"].size
    w = np.asarray(plan.step.consts["weights"]).reshape(rows, p["in_c"], p["k_h"], p["k_w"])
    hwc = np.zeros((rows, p["k_h"], p["k_w"], simd["cp"]), dtype=np.int64)
    hwc[..., :p["in_c"]] = w.transpose(0, 2, 3, 1)
    expected = simd_weight_layout(hwc.reshape(rows, -1), rows, simd)
    assert np.array_equal(plan.consts["weights"], expected)
