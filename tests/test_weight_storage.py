"""--weight-storage codes: packed b-bit weight codes decoded on the fly, bit-exact, smaller."""
import numpy as np
import pytest

import mcugen
from conftest import MODELS, require_tool, shared_model
from mcugen.errors import MCUGenError
from mcugen.lower.fixedpoint import pack_codes, unpack_codes
from mcugen.verify import compare, verify_inputs


@pytest.mark.parametrize("bits", range(2, 9))
def test_pack_then_unpack_is_the_identity(bits):
    big_b = (1 << (bits - 1)) - 1
    codes = np.random.default_rng(bits).integers(-big_b, big_b + 1, size=(5, 37))
    packed, row_bytes = pack_codes(codes, bits, big_b)
    assert row_bytes == (37 * bits + 7) // 8 and packed.size == 5 * row_bytes + 1
    assert np.array_equal(unpack_codes(packed, 5, 37, bits, row_bytes), codes + big_b)


@pytest.mark.parametrize("name", ["mnist8", "mnist_mlp_bn", "kws_dscnn"])
def test_packed_codes_are_bit_exact_and_smaller(name, tmp_path, host_cc):
    common = dict(wbits=4, abits=8, input_range=MODELS[name])
    decoded = mcugen.build(shared_model(name), weight_storage="decoded", **common)
    out = tmp_path / "codes"
    codes = mcugen.build(shared_model(name), out=out, weight_storage="codes", **common)
    result = compare(out, codes.schedule, verify_inputs(codes.schedule, 100, seed=4))
    assert result.mismatches == 0, result.first
    x = verify_inputs(codes.schedule, 10, seed=9)
    assert np.array_equal(codes.run(x, raw=True), decoded.run(x, raw=True))   # same numbers
    for packed, plain in zip(codes.report["layers"], decoded.report["layers"]):
        if plain["wbits"] == 4:                 # 4-bit codes vs int16 decoded weights
            assert packed["weight_bytes"] < plain["weight_bytes"] / 3


def test_packed_codes_run_bit_exact_on_rv32(tmp_path, host_cc):
    for tool in ("riscv64-unknown-elf-gcc", "qemu-system-riscv32"):
        require_tool(tool)
    out = tmp_path / "codes"
    project = mcugen.build(shared_model("resnet8"), target="rv32", out=out, wbits=4,
                           weight_storage="codes", input_range=(0, 255))
    result = compare(out, project.schedule, verify_inputs(project.schedule, 4, seed=4), on="qemu")
    assert result.mismatches == 0, result.first


def test_auto_shrinks_the_encoders_then_packs_only_when_the_board_is_short():
    def build(board=None, **kw):
        return mcugen.build(shared_model("mnist_mlp_bn"), wbits=4, input_range=(0, 1),
                            **({"target": "rv32", "board": board} if board else {}), **kw)

    def flash(**kw):
        return build(**kw).report["totals"]["flash_bytes"]
    need = {(s, e): flash(weight_storage=s, encoder=e)
            for s in ("decoded", "codes") for e in ("auto", "auto-small")}
    assert need["codes", "auto-small"] < need["codes", "auto"] < need["decoded", "auto"]
    assert need["decoded", "auto-small"] < need["decoded", "auto"]

    def board(size):
        return {"name": "test-board", "targets": ["rv32"], "memory": {"flash": {"bytes": size}, "ram": {"bytes": 1 << 20}}}

    def chosen(size):
        schedule = build(board(size)).schedule
        return schedule.meta["weight_storage"], schedule.steps[0].params["encoder"], \
            sum(schedule.step_consts_bytes(s) for s in schedule.steps)
    roomy = chosen(need["decoded", "auto"])
    assert roomy == ("decoded", build().schedule.steps[0].params["encoder"], need["decoded", "auto"])
    smaller = chosen(need["decoded", "auto"] - 1)         # smaller encoders, weights decoded
    assert smaller[0] == "decoded" and smaller[2] == need["decoded", "auto-small"]
    packed = chosen(need["decoded", "auto-small"] - 1)
    assert packed[0] == "codes" and packed[2] <= need["decoded", "auto-small"] - 1
    with pytest.raises(MCUGenError, match="flash needs"):
        build(board(need["codes", "auto-small"] - 1))
