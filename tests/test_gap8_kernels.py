"""The GAP8 conv kernel (templates/gap8/ops/conv2d.c.j2): the cores decode each tile's input
into a zero-padded band in L1, then split register blocks (output channels x pixels) over it.
The odd conv shapes of test_kernels.py, in one tile, in many tiles and with the band left out
(an L1 too small for it), bit-exact against the reference in the PMSIS emulation (ASan+UBSan)."""
import copy

import pytest

import mcugen
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
