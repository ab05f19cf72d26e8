"""The bracket encoder (mcugen/lower/encoders/bracket.py): a cell table that narrows the code to
two neighbours, then one threshold compare. Exact on every accumulator value (brute force, not
its own measurement), its 32-bit product never wraps, auto takes it on processors and not on
FPGAs, and its C is bit-exact on the host under the sanitizers, on RV32 under qemu, in the GAP8
emulation and in HLS C simulation."""
import numpy as np
import pytest

import mcugen
from conftest import require_tool
from mcugen.errors import MCUGenError
from mcugen.lower.encoders import ENCODERS, EncodeRequest, encoder_step_parts
from mcugen.lower.encoders.bracket import BRACKETED, MAX_CELLS, bracket_table, cell_index
from mcugen.lower.encoders.exact import float_encoder
from mcugen.quant.power import Encoding
from mcugen.verify import compare, verify_inputs
from test_encoder_models import residual_model

BRACKET = ENCODERS["bracket"]


def float_codes(request, acc, rows):
    return float_encoder(request.encoding, request.activation, request.scale)(
        np.broadcast_to(acc, (request.rows, acc.size)))[rows.ravel()]


@pytest.mark.parametrize("bits, exponent, signed, activation", [
    (2, 1.0, False, ("Relu",)), (3, 0.5, True, None), (4, 0.6, False, ("Relu",)),
    (4, 1.7, True, ("Tanh",)), (5, 0.35, False, ("Sigmoid",)), (6, 0.8, True, ("LeakyRelu", 0.1))])
def test_bracket_is_exact_on_every_accumulator_of_every_row(bits, exponent, signed, activation):
    rng = np.random.default_rng(bits)
    bound = 30_000
    # scales spread over 2^6, some rows whose codes change only in a corner of the range
    scale = 6.0 / bound * np.exp2(rng.uniform(-3, 3, size=7))
    request = EncodeRequest(Encoding(bits, signed, exponent, "power", 3.0), activation, scale, bound)
    parts = BRACKET.build(request)
    assert parts is not None and parts.error.worst == 0
    acc = np.arange(-bound, bound + 1)
    rows = np.arange(request.rows)[:, None]
    got = BRACKET.run(parts.params, parts.consts, acc[None, :], rows)
    assert np.array_equal(got, float_codes(request, acc, rows))
    assert parts.consts["enc_table"].size == parts.params["enc_n"] <= MAX_CELLS


def test_the_index_product_fits_an_int32_at_the_widest_accumulator():
    bound = (1 << 31) - 2
    scale = np.array([3e-9, 1.1e-8, 4e-10])
    request = EncodeRequest(Encoding(4, False, 0.6, "power", 2.0), ("Relu",), scale, bound)
    parts = BRACKET.build(request)
    assert parts is not None
    p, consts = parts.params, parts.consts
    mult = consts["enc_mult"].astype(np.int64)
    extremes = np.array([-bound, -bound + 1, -1, 0, 1, bound - 1, bound])
    assert np.all(np.abs(extremes[:, None] >> p["enc_pre"]) * mult[None, :] < 1 << 31)
    acc = np.concatenate([extremes, np.random.default_rng(0).integers(-bound, bound, 200_000)])
    rows = np.arange(request.rows)[:, None]
    # against the exact thresholds (a brute force over 2^32 values per row is too long)
    thresholds = request.thresholds()
    want = np.stack([np.searchsorted(thresholds[r], acc, side="right") for r in range(request.rows)])
    assert np.array_equal(BRACKET.run(p, consts, acc[None, :], rows), want + p["code_min"])
    u = cell_index(acc, p["enc_pre"], mult[0], p["enc_shift_all"] if p["enc_shift_all"] >= 0 else
                   consts["enc_shift"][0])
    assert np.all(np.diff(u[np.argsort(acc)]) >= 0)          # the index moves one way


def test_a_cell_over_three_codes_refuses_the_table_and_one_code_cells_hold_the_code():
    assert bracket_table(np.array([0, 1]), np.array([1, 3]), 0) is None
    table = bracket_table(np.array([0, 9, 2, 4, 4]), np.array([1, -1, 3, 4, 4]), -7)
    # offsets 0-1: bracketed, the greater offset 1; the empty cell copies its left neighbour;
    # a one-code cell holds its code's byte (offset 4: code -3, byte 253)
    assert table.tolist() == [1 - BRACKETED, 1 - BRACKETED, 3 - BRACKETED, 253, 253]
    assert all(entry < 0 for entry in table[:3]) and all(entry >= 0 for entry in table[3:])


def test_a_grid_too_fine_for_the_table_is_a_clear_error():
    # an 8-bit grid steep near zero over a wide accumulator: > MAX_CELLS cells to bracket it
    request = EncodeRequest(Encoding(8, False, 0.25, "power", 3.0), ("Relu",), [1e-9], (1 << 31) - 2)
    with pytest.raises(MCUGenError, match="bracket.*use --encoder threshold"):
        encoder_step_parts(request, "bracket", "node 'x'")


def encoders_used(project):
    return {s.params["encoder"] for s in project.schedule.steps if "encoder" in s.params}


def test_auto_takes_bracket_on_processors_and_threshold_on_fpgas(tmp_path):
    path = residual_model(tmp_path, "Relu")
    options = dict(wbits=4, abits=4, input_range=(-2.0, 2.0), first_last_bits="same")
    for target in ("host", "rv32", "gap8"):
        assert encoders_used(mcugen.build(str(path), target=target, **options)) == {"bracket"}
    assert encoders_used(mcugen.build(str(path), target="hls", **options)) == {"threshold"}
    wide = mcugen.build(str(path), target="host", **dict(options, abits=8))
    assert "bracket" not in encoders_used(wide)      # auto never weighs it on finer grids


@pytest.mark.parametrize("activation, attrs, storage", [("Relu", None, "codes"), ("Tanh", None, "levels"),
                                                        ("LeakyRelu", {"alpha": 0.1}, "levels")])
def test_bracket_is_bit_exact_on_every_target(activation, attrs, storage, tmp_path, host_cc):
    """Codes, and levels (one-code cells hold the level, the compare's code reads enc_out)."""
    for tool in ("riscv64-unknown-elf-gcc", "qemu-system-riscv32", "g++", "verilator"):
        require_tool(tool)
    path = residual_model(tmp_path, activation, attrs)
    options = dict(wbits=4, abits=4, input_range=(-2.0, 2.0), encoder="bracket", act_storage=storage,
                   lanes="8", act_grid="power")
    host = mcugen.build(str(path), out=tmp_path / "host", **options)
    assert encoders_used(host) == {"bracket"}
    steps = [s for s in host.schedule.steps if s.params.get("encoder") == "bracket"]
    assert any("enc_out" in s.consts for s in steps) == (storage == "levels")
    entries = np.concatenate([s.consts["enc_table"] for s in steps])
    assert (entries >= 0).any() and (entries < 0).any()     # both paths are taken
    x = verify_inputs(host.schedule, 200, seed=6)
    result = compare(tmp_path / "host", host.schedule, x, sanitize=True)
    assert result.mismatches == 0, result.first
    for target, place, n in (("rv32", "qemu", 12), ("rv32", "rtl", 4), ("gap8", None, 20),
                             ("hls", None, 6)):
        out = tmp_path / f"{target}_{place}"
        project = mcugen.build(str(path), out=out, target=target, **options)
        kwargs = {"on": place} if place else {}
        result = compare(out, project.schedule, x[:n], **kwargs)
        assert result.n >= n and result.mismatches == 0, (target, place, result.first)
    # the RTL run took the single-instruction index (cv.mulsN) where the shift is shared
    shared = [s for s in host.schedule.steps if s.params.get("enc_shift_all", -1) >= 0]
    assert shared and "0x5b, 4" in (tmp_path / "rv32_rtl" / "model.c").read_text()


def test_a_layer_that_encodes_many_values_takes_a_finer_table_with_fewer_compares():
    """The table size weighs bytes against instructions (auto's exchange rate): one value per
    inference keeps the smallest table; a million take a finer one, with fewer two-code cells."""
    scale = np.array([1.0, 0.83, 0.61]) * 4.0 / 30_000
    tables = {}
    for elements in (1, 1_000_000):
        request = EncodeRequest(Encoding(4, True, 0.6, "power", 3.0), None, scale, 30_000,
                                elements=elements)
        parts = BRACKET.build(request)
        assert parts is not None and parts.error.worst == 0
        tables[elements] = parts.consts["enc_table"]
    few, many = tables[1], tables[1_000_000]
    assert many.size > few.size
    assert np.mean(many[1:-1] < 0) < np.mean(few[1:-1] < 0)


def test_a_board_short_of_flash_keeps_exact_encoders_with_threshold(tmp_path):
    """Bracket's cells cost bytes: where they do not fit, auto lowers again with threshold (as
    exact, smaller) before it gives up exactness (auto-small)."""
    from mcugen.targets import get_target
    path = residual_model(tmp_path, "Relu")
    options = dict(wbits=4, abits=4, input_range=(-2.0, 2.0), first_last_bits="same")
    host = get_target("host")

    def flash(project):
        return host.needs(project.schedule, project.board, project.plan, "flash")["flash"][0]
    fast = mcugen.build(str(path), target="host", **options)
    small = mcugen.build(str(path), target="host", encoder="threshold", **options)
    assert encoders_used(fast) == {"bracket"} and flash(small) < flash(fast)
    memory = {**fast.board["memory"], "flash": {**fast.board["memory"]["flash"],
                                                "bytes": (flash(small) + flash(fast)) // 2}}
    tight = mcugen.build(str(path), target="host", board={**fast.board, "memory": memory}, **options)
    assert encoders_used(tight) == {"threshold"}
    assert all(s.info["encoder_max_code_error"] == 0 for s in tight.schedule.steps if "encoder" in s.params)


def test_the_cli_builds_with_bracket_and_verifies(tmp_path, host_cc):
    import subprocess
    import sys
    path = residual_model(tmp_path, "Relu")
    out = tmp_path / "proj"
    run = lambda *args: subprocess.run([sys.executable, "-m", "mcugen", *map(str, args)],
                                       capture_output=True, text=True)
    built = run("build", path, "-o", out, "--wbits", "4", "--abits", "4", "--input-range", "-2:2",
                "--encoder", "bracket")
    assert built.returncode == 0, built.stderr
    assert "bracket/" in built.stdout                      # the report's encoder column
    verified = run("verify", out)
    assert verified.returncode == 0 and "0 differences" in verified.stdout, verified.stdout
