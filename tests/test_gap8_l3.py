"""GAP8 with the weights in L3 (HyperRAM): chosen when they do not fit L2, written to
model_l3.bin, loaded through the BSP's read-only file system, and streamed per layer into L2
staging slots; the emulated project is compared bit for bit, and the loader's bookkeeping is
checked by breaking it."""
import copy

import numpy as np
import pytest

import mcugen
from conftest import MODELS, require_tool, shared_model
from mcugen.boards import get_board
from mcugen.codegen.gap8_l3 import board_layout, kept_in_l2, staging_need, streamed_steps
from mcugen.errors import MCUGenError
from mcugen.verify import compare, verify_inputs


def board_with_l2(l2_bytes):
    board = copy.deepcopy(get_board("gap8"))
    board["name"] = f"gap8-l2-{l2_bytes}"
    board["memory"]["l2"]["bytes"] = board["memory"]["ram"]["bytes"] = l2_bytes
    return board


@pytest.fixture(scope="module")
def resnet8_l3(tmp_path_factory):
    """resnet8 at W4A8 with threshold encoders and power activations in 16-bit lanes does not
    fit GAP8's 512 KB L2 with its weights (514 KB of constants; with the default encoders, or
    the default grids in 8-bit lanes, it fits)."""
    out = tmp_path_factory.mktemp("l3") / "resnet8"
    project = mcugen.build(shared_model("resnet8"), target="gap8", out=out, wbits=4, abits=8,
                           input_range=MODELS["resnet8"], encoder="threshold", lanes="16",
                           act_grid="power")
    return project, out


def test_weights_that_do_not_fit_l2_go_to_l3_and_stay_bit_exact(resnet8_l3, host_cc):
    project, out = resnet8_l3
    schedule = project.schedule
    assert schedule.meta["weights_in"] == "l3"
    layout = board_layout(schedule, get_board("gap8"))
    assert layout["slots"] == 2                                 # room to prefetch the next layer
    image = (out / "model_l3.bin").read_bytes()
    assert len(image) == layout["bytes"]
    for step in streamed_steps(schedule):                       # every array where the C reads it
        place = layout["steps"][step.name]
        for key, value in step.consts.items():
            at = place["l3_offset"] + place["arrays"][key] - place["staging"]
            stored = np.frombuffer(image, dtype=value.dtype.newbyteorder("<"), count=value.size, offset=at)
            assert np.array_equal(stored, value.reshape(-1)), (step.name, key)
    assert "_weights[" not in (out / "model.c").read_text()    # no weight array left in L2
    assert "READFS_FILES" in (out / "Makefile").read_text()
    result = compare(out, schedule, verify_inputs(schedule, 50, seed=21))
    assert result.n == 52 and result.mismatches == 0, result.first


def test_l3_streaming_under_sanitizers(resnet8_l3, host_cc):
    project, out = resnet8_l3
    result = compare(out, project.schedule, verify_inputs(project.schedule, 4, seed=22), sanitize=True)
    assert result.mismatches == 0, result.first


def _tampered(out, old, new, count=1):
    model_c = out / "model.c"
    text = model_c.read_text()
    assert text.count(old) >= count
    model_c.write_text(text.replace(old, new, count))
    return text


def test_a_missing_wait_or_a_read_into_the_busy_slot_is_caught(resnet8_l3, host_cc):
    """The emulated async read fills its slot with garbage until it is waited for."""
    project, out = resnet8_l3
    x = verify_inputs(project.schedule, 2, seed=23)
    layout = board_layout(project.schedule, get_board("gap8"))
    original = _tampered(out, "    pi_task_wait_on(&model_l3_task);\n", "")
    try:
        with pytest.raises(MCUGenError, match="still pending"):
            compare(out, project.schedule, x)
        (out / "model.c").write_text(original)
        second = layout["steps"][list(layout["steps"])[1]]      # prefetched into slot 1 ...
        _tampered(out, f"&model_staging.u8[{second['staging']}],",
                  "&model_staging.u8[0],")                     # ... now into slot 0, still in use
        assert compare(out, project.schedule, x).mismatches > 0
    finally:
        (out / "model.c").write_text(original)


def test_a_single_staging_slot_on_rv32_under_qemu(tmp_path, host_cc):
    """An L2 too small for two slots: one blocking read per layer, also on RV32 under qemu."""
    for tool in ("riscv64-unknown-elf-gcc", "qemu-system-riscv32"):
        require_tool(tool)
    out = tmp_path / "mnist8"
    options = dict(wbits=4, abits=4, input_range=MODELS["mnist8"], encoder="threshold")
    fits = mcugen.build(shared_model("mnist8"), target="gap8", **options)
    in_l2 = fits.schedule
    # an L2 with room for the arena, the kernels' stack buffers, the FC's tables and one staging
    # slot (the largest layer's constants): too small for all the weights and for two slots
    _, slot = staging_need(in_l2)
    base = in_l2.arena_bytes + fits.report["totals"]["kernel_stack_bytes"]
    l2 = base + kept_in_l2(in_l2) + slot
    assert l2 < base + sum(in_l2.step_consts_bytes(s) for s in in_l2.steps)
    project = mcugen.build(shared_model("mnist8"), target="gap8", board=board_with_l2(l2), out=out, **options)
    assert project.schedule.meta["weights_in"] == "l3"
    assert project.report["totals"]["l3_slots"] == 1
    x = verify_inputs(project.schedule, 6, seed=24)
    assert compare(out, project.schedule, x).mismatches == 0
    result = compare(out, project.schedule, x, on="qemu")
    assert result.n == 8 and result.mismatches == 0, result.first


def test_too_small_even_for_one_staged_layer_fails_cleanly(tmp_path):
    out = tmp_path / "proj"
    with pytest.raises(MCUGenError, match=r"does not fit board 'gap8-l2-20000': ram needs [\d,]+ B "
                                          r"\(.*one layer's weights staged from L3\) of 20,000 B"):
        mcugen.build(shared_model("mnist8"), target="gap8", board=board_with_l2(20_000), out=out,
                     wbits=4, abits=4, input_range=MODELS["mnist8"], encoder="threshold")
    assert not out.exists()
