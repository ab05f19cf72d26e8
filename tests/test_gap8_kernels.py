"""The GAP8 conv kernel (templates/gap8/ops/conv2d.c.j2): the cores decode each tile's input
into a zero-padded band in L1, then split register blocks (output channels x pixels) over it.
The odd conv shapes of test_kernels.py, in one tile, in many tiles and with the band left out
(an L1 too small for it), bit-exact against the reference in the PMSIS emulation (ASan+UBSan)."""
import copy

import numpy as np
import pytest

import mcugen
from conftest import require_tool
from mcugen.codegen import gap8
from mcugen.errors import MCUGenError
from mcugen.verify import compare, verify_inputs
from test_gap8 import small_l1_board, write_gap8
from test_kernels import CONVS, conv_model, w


# many input channels, few outputs: the decoded band outweighs the rest of a one-row tile
WIDE_INPUT = {"pointwise_64": ([1, 64, 2, 5], (2, 64, 1, 1), {}),
              "3x3_32": ([1, 32, 3, 6], (3, 32, 3, 3), dict(pads=[1, 1, 1, 1]))}


def conv_schedule(tmp_path, name, encoder="threshold"):
    """The threshold encoder's per-channel tables make the channel blocks the tiles carry
    heavy, which is what these tests tile; lut's (a shared table) is checked too."""
    in_shape, wshape, attrs = {**CONVS, **WIDE_INPUT}[name]
    path = conv_model(tmp_path, name, in_shape, w(*wshape), **attrs)
    return mcugen.build(path, target="host", out=None, wbits=4, abits=8, input_range=(-2.0, 2.0),
                        first_last_bits="same", encoder=encoder).schedule


def conv_plan(schedule, board):
    """The conv step's plan alone (the model's other layers may need more L1)."""
    step = next(s for s in schedule.steps if s.kind == "conv2d")
    only = copy.copy(schedule)
    only.steps = [step]
    return gap8.plan_tiles(only, board)[step.name]


def has_band(plan):
    return any(r["role"] == "band" for r in plan.regions)


def bit_exact(schedule, directory, board=None):
    project = write_gap8(schedule, directory, board)
    result = compare(project, schedule, verify_inputs(schedule, 30, seed=5), sanitize=True)
    assert result.mismatches == 0, result.first


def whole_model_fits(schedule, budget):
    try:
        gap8.plan_tiles(schedule, small_l1_board(budget))
        return True
    except MCUGenError:
        return False


def smallest_budget(schedule, fits):
    """The smallest L1 budget (a multiple of 16 B: the emulation's pi_l1_malloc rounds sizes up
    to 8) whose conv plan satisfies `fits`."""
    budget = -(-conv_plan(schedule, gap8.get_board("gap8")).l1_bytes // 16) * 16
    found = None
    while budget > 0:
        try:
            plan = conv_plan(schedule, small_l1_board(budget))
        except MCUGenError:
            break
        if fits(plan):
            found = budget
        budget -= 16
    return found


@pytest.mark.parametrize("encoder", ["threshold", "lut"])
@pytest.mark.parametrize("name", list(CONVS))
def test_gap8_conv_kernel_is_bit_exact_in_one_tile_and_many(name, encoder, tmp_path, host_cc):
    schedule = conv_schedule(tmp_path, name, encoder)
    assert has_band(conv_plan(schedule, gap8.get_board("gap8")))
    bit_exact(schedule, tmp_path / "one")
    budget = smallest_budget(schedule, has_band)              # as many tiles as the band allows
    while not whole_model_fits(schedule, budget):               # (the dense layer after it)
        budget += 16
    plan = conv_plan(schedule, small_l1_board(budget))
    assert has_band(plan) and plan.l1_bytes <= budget
    if name != "tiny_1x1_output" and encoder == "threshold":
        assert len(plan.tiles) > 1
    bit_exact(schedule, tmp_path / "many", small_l1_board(budget))


@pytest.mark.parametrize("name", list(WIDE_INPUT))
def test_gap8_conv_without_room_for_the_band_computes_from_the_codes(name, tmp_path, host_cc):
    schedule = conv_schedule(tmp_path, name)
    budget = smallest_budget(schedule, lambda plan: True)
    plan = conv_plan(schedule, small_l1_board(budget))
    assert not has_band(plan) and plan.l1_bytes <= budget
    bit_exact(schedule, tmp_path / "proj", small_l1_board(budget))


def test_gap8_band_is_one_l1_slot_counted_in_the_plan(tmp_path):
    schedule = conv_schedule(tmp_path, "oc5_3x3_s2_asym")
    budget = smallest_budget(schedule, lambda plan: has_band(plan) and len(plan.tiles) > 1)
    plan = conv_plan(schedule, small_l1_board(budget))
    band = next(r for r in plan.regions if r["role"] == "band")
    assert band["offs"][0] == band["offs"][1]                    # one slot, though tiles overlap
    ends = [off + size for r in plan.regions for off in set(r["offs"])
            for size in [r["count"] * r["itemsize"] if r["role"] == "static" else 0]]
    assert max(ends) <= plan.l1_bytes <= budget
    # every tile's band rows fit the region; work counts match the tile
    rows = band["kernel"]["band_c"] // band["kernel"]["band_w"]
    for tile, work in zip(plan.tiles, band["work"]):
        counts = dict(zip(band["work_fields"], work))
        assert counts["band_h"] <= rows and counts["n_rows"] == tile.nic * counts["band_h"]


@pytest.mark.parametrize("ocpg,icpg,oc_block", [(5, 2, 4), (1, 1, 1), (8, 3, 4), (3, 2, 1)])
def test_gap8_register_blocks_cover_each_channel_once_within_its_group(ocpg, icpg, oc_block):
    g = {"ocpg": ocpg, "icpg": icpg}
    channels = 4 * ocpg
    for c0 in range(channels):
        for c1 in range(c0 + 1, channels + 1):
            ic0 = (c0 // ocpg) * icpg
            blocks = gap8._register_blocks(g, c0, c1, ic0, oc_block)
            covered = [c0 + ocl + i for ocl, _, n in blocks for i in range(n)]
            assert sorted(covered) == list(range(c0, c1))
            for ocl, icl0, n in blocks:
                group = (c0 + ocl) // ocpg
                assert (c0 + ocl + n - 1) // ocpg == group and icl0 == group * icpg - ic0
                assert n in (1, oc_block)


def residual_model(tmp_path, relu, shape=(1, 3, 5, 7)):
    """x -> Conv 1x1 (a), x -> Conv 3x3 pad 1 (b), Add(a, b) [-> Relu] -> Flatten -> Gemm(3):
    an Add of two activations of an odd size (105: every core's share has a remainder)."""
    from onnx import helper
    from onnx_factory import make_model, save, tensor
    c, n = shape[1], int(np.prod(shape))
    nodes = [helper.make_node("Conv", ["x", "aw", "ab"], ["a"], name="conv_a"),
             helper.make_node("Conv", ["x", "bw", "bb"], ["b"], name="conv_b", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["a", "b"], ["s"], name="add")]
    last = "s"
    if relu:
        nodes.append(helper.make_node("Relu", ["s"], ["r"]))
        last = "r"
    nodes += [helper.make_node("Flatten", [last], ["f"]),
              helper.make_node("Gemm", ["f", "gw", "gb"], ["y"], name="fc", transB=1)]
    # its own generator: the weights (and so the L1 the tiling tests shrink to) do not depend
    # on which tests ran before in the same process
    rng = np.random.default_rng(21)
    draw = lambda *dims: rng.normal(size=dims) * 0.5
    inits = [("aw", draw(c, c, 1, 1)), ("ab", draw(c)), ("bw", draw(c, c, 3, 3)), ("bb", draw(c)),
             ("gw", draw(3, n)), ("gb", draw(3))]
    return save(make_model(nodes, [tensor("x", list(shape))], [tensor("y", [1, 3])], inits),
                tmp_path / f"residual_{int(relu)}.onnx")


# (scheme, wbits, abits, Add followed by Relu, lowered for[, activation storage]) -> the lookup
# add_plan.py picks and its variant (the fold's clamp, the pair's maps). Lowered for gap8, 8-bit activations take uniform-like grids; the host target's
# power grid (rendered for GAP8 as test_gap8 does) has a requantizing lut of its own.
ADDS = {("uniform", 8, 8, True, "gap8"): ("fold", 9),      # codes 0..255: one cv.clipu
        ("uniform", 8, 8, False, "gap8"): ("fold", 0),     # signed codes: cv.max + cv.min
        ("power", 4, 8, True, "host"): ("fold", None),     # a power grid: the encoder's table
        # 4-bit activations: one table of every pair, read through the maps of the levels
        # stored (the default) or at the codes themselves
        ("power", 4, 4, False, "gap8"): ("pair", 1),
        ("power", 4, 4, False, "gap8", "codes"): ("pair", 0)}


def add_schedule(tmp_path, scheme, wbits, abits, relu, target="gap8", storage="auto"):
    """(gap8: the lowering's choices for the target; host: product tables off at these widths)"""
    return mcugen.build(residual_model(tmp_path, relu), target=target, out=None, scheme=scheme,
                        wbits=wbits, abits=abits, input_range=(-2.0, 2.0),
                        first_last_bits="same", act_storage=storage).schedule


def add_plan_of(schedule, board=None):
    step = next(s for s in schedule.steps if s.kind == "add")
    return gap8.plan_tiles(schedule, board or gap8.get_board("gap8"))[step.name]


@pytest.mark.parametrize("config", list(ADDS))
def test_gap8_add_lookups_are_bit_exact(config, tmp_path, host_cc):
    """Each of the Add's lookups, in one tile and in many (an L1 too small for one), with the
    codes saturating at both ends (verify's inputs include the range's ends; the Relu's
    zeros), against the reference under ASan + UBSan."""
    schedule = add_schedule(tmp_path, *config)
    plan = add_plan_of(schedule)
    kernel, variant = ADDS[config]   # the fold's clip_bits, the pair's pair_map
    assert plan.kernel["add_kernel"] == kernel and "table_a" not in plan.consts
    if kernel == "pair":
        assert plan.kernel["pair_map"] == variant
    elif variant is not None:
        assert plan.kernel["clip_bits"] == variant and plan.kernel["fold_table"] == 0
    elif kernel == "fold":
        assert plan.kernel["fold_table"] == 1 and "enc_table" in plan.consts
    bit_exact(schedule, tmp_path / "one")
    tables = sum(gap8._align(v.nbytes) for v in plan.consts.values())
    board = small_l1_board(tables + 2 * 3 * 16)          # tiles of 16 elements, double buffered
    while not whole_model_fits(schedule, board["memory"]["l1"]["bytes"]):
        board = small_l1_board(board["memory"]["l1"]["bytes"] + 16)
    assert len(add_plan_of(schedule, board).tiles) > 1
    bit_exact(schedule, tmp_path / "many", board)


def test_gap8_add_fold_is_bit_exact_on_rv32(tmp_path, host_cc):
    """The fold's C (no CORE-V block) on RV32IMC under qemu."""
    require_tool("qemu-system-riscv32")
    schedule = add_schedule(tmp_path, "uniform", 8, 8, True)
    project = write_gap8(schedule, tmp_path / "proj")
    result = compare(project, schedule, verify_inputs(schedule, 6, seed=5), on="qemu")
    assert result.mismatches == 0, result.first


def test_gap8_add_fold_refuses_what_it_cannot_check(tmp_path):
    """Weights streamed from L3 keep the step's own constants (the L3 image holds them), a
    threshold encoder on 8-bit codes has no fold (only a lut's index folds), and codes wider
    than 8 bits no lookup (their pairs are not checked)."""
    schedule = add_schedule(tmp_path, "uniform", 8, 8, True)
    schedule.meta["weights_in"] = "l3"
    assert not add_plan_of(schedule).kernel
    step = next(s for s in add_schedule(tmp_path, "uniform", 8, 8, True).steps if s.kind == "add")
    from mcugen.codegen.add_plan import _fold_plan
    threshold = copy.copy(step)
    threshold.params = dict(step.params, encoder="threshold")
    assert _fold_plan(threshold, None, None, None, None, None) == {}
    # codes wider than 8 bits: more pairs than the plan checks
    from mcugen.codegen.add_plan import MAX_PAIRS, add_kernel_plan
    wide = copy.copy(step)
    wide.consts = dict(step.consts, table_a=np.zeros(MAX_PAIRS // len(step.consts["table_b"]) + 1, np.int32))
    assert add_kernel_plan(wide, ("int16", "uint8", "uint8")) == {}
    assert add_kernel_plan(step, ("uint8", "int8", "uint8"))["add_kernel"] == "fold"


def test_gap8_large_add_takes_two_tiles_in_the_same_l1(tmp_path):
    """An Add of ADD_SPLIT_ELEMENTS or more is cut in two so that half its transfers overlap the
    cores; its two slots of half a tile take the L1 one whole tile would. resnet8's Adds
    (16 k, 8 k, 4 k elements), bit-exact in test_gap8.py's emulation runs."""
    from test_gap8 import schedule_of
    schedule = schedule_of("resnet8")
    plans = gap8.plan_tiles(schedule, gap8.get_board("gap8"))
    adds = [s for s in schedule.steps if s.kind == "add"]
    assert adds and all(s.params["size"] >= gap8.ADD_SPLIT_ELEMENTS for s in adds)
    for step in adds:
        plan = plans[step.name]
        assert len(plan.tiles) == 2 and sum(t.nc for t in plan.tiles) == step.params["size"]
        tables = sum(gap8._align(v.nbytes) for v in plan.consts.values())
        assert plan.l1_bytes <= tables + 3 * gap8._align(step.params["size"]) + 16
    assert len(add_plan_of(add_schedule(tmp_path, "uniform", 8, 8, True)).tiles) == 1   # 105
