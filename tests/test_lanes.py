"""Grids in 8-bit lanes (quant/lanes.py, issue 25): 4-bit weight levels and A4-A6 power levels
rounded to 8-bit integers by construction, the activation grid chosen per tensor, the choice in
the report, and the builds bit-exact."""
import subprocess
import sys

import numpy as np
import pytest

import mcugen
import mcugen.report
from conftest import MODELS, shared_model
from mcugen.lower.decode_width import inputs_fit_eight_bits, weight_cost8
from mcugen.lower.fixedpoint import code_grid, decode_table, default_frac_bits
from mcugen.quant.lanes import (NARROW_TOLERANCE, choose_grid, encoded_error, in_lanes,
                                narrow_weights, uniform_twin)
from mcugen.quant.power import Encoding, Grid, reconstruction_error, with_lanes
from mcugen.verify import compare, verify_inputs

W4A8 = dict(scheme="power", wbits=4, abits=8, first_last_bits="same")


@pytest.mark.parametrize("bits,signed,exponent", [(4, True, 0.6), (4, True, 1.3), (3, True, 0.8),
                                                  (4, False, 0.5), (6, False, 0.9), (5, True, 0.7)])
def test_lane_levels_are_the_8_bit_decode_table_exactly(bits, signed, exponent):
    grid = Grid(bits, signed, exponent, lanes=8)
    frac = default_frac_bits(grid, limit=127 if signed else 255)
    table = decode_table(grid, frac)
    assert np.abs(table).max() <= (127 if signed else 255)
    # the table is the levels themselves, not a rounding of them
    codes = grid.codes()
    levels = np.sign(codes) * grid.levels[np.abs(codes)] * grid.lane_scale
    assert np.allclose(levels, table, rtol=0, atol=1e-9)
    free = Grid(bits, signed, exponent)
    assert np.abs(grid.levels - free.levels).max() <= 0.5 / grid.lane_scale
    assert not np.array_equal(grid.levels, free.levels)


def test_levels_that_merge_in_8_bits_do_not_fit_the_lanes():
    assert Encoding(4, False, 0.5, range=1.0).fits_lanes(8)
    assert not Encoding(6, False, 0.5, range=1.0).fits_lanes(8)      # k = 1, 2 both round to 0
    assert not Encoding(8, False, 0.8, range=1.0).fits_lanes(8)
    assert not Encoding(4, False, 0.5, scheme="log2", range=1.0).fits_lanes(8)


def test_w4_lane_weights_cost_nothing_in_8_bit_tables():
    p = mcugen.build(shared_model("mnist8"), input_range=MODELS["mnist8"], lanes="8", **W4A8,
                     target="rv32", board="cv32e40p")
    for qw in p.qgraph.weights.values():
        assert qw.grid.lanes == 8 and weight_cost8(qw) == 0.0
        w_hat = qw.grid.dequantize(qw.codes, 1.0)
        assert np.allclose(w_hat * qw.grid.lane_scale, np.round(w_hat * qw.grid.lane_scale))
    free = mcugen.build(shared_model("mnist8"), input_range=MODELS["mnist8"], lanes="16", **W4A8)
    assert all(qw.grid.lanes == 0 for qw in free.qgraph.weights.values())


def test_act_grid_uniform_and_power_and_auto_without_lanes():
    path, r = shared_model("kws_dscnn"), MODELS["kws_dscnn"]
    uniform = mcugen.build(path, input_range=r, act_grid="uniform", **W4A8)
    power = mcugen.build(path, input_range=r, act_grid="power", **W4A8)
    auto_plain = mcugen.build(path, input_range=r, **W4A8)             # host: no lanes
    encodings = uniform.qgraph.encodings
    inner = [t for t in encodings if encodings[t] != encodings[uniform.qgraph.graph.input]]
    assert {uniform.qgraph.encodings[t].exponent for t in inner} == {1.0}
    assert all(power.qgraph.encodings[t].exponent != 1.0 for t in inner)
    assert all(auto_plain.qgraph.encodings[t] == power.qgraph.encodings[t] for t in inner)


def test_auto_takes_the_narrow_grid_within_the_tolerance_and_reports_the_other():
    rng = np.random.default_rng(1)
    flat = np.abs(rng.normal(size=4000))           # mostly small values: power does better
    power = Encoding(8, False, 0.6, range=float(flat.max()))

    def error(enc):
        return encoded_error(enc, flat)
    choice = choose_grid([power], 8, "auto", error)
    assert choice.encoding.exponent == 1.0
    assert choice.alternative.startswith("power") and choice.alternative_error < choice.error
    assert choice.error <= NARROW_TOLERANCE * choice.alternative_error
    # values far below the range (an outlier set it): the uniform grid loses more than a bit
    small = np.concatenate([flat * 0.01, [flat.max()]])
    picked = choose_grid([power], 8, "auto", lambda enc: encoded_error(enc, small))
    assert picked.encoding == power and picked.info()["act_lanes"] == 16
    assert picked.error * NARROW_TOLERANCE < picked.alternative_error
    # A3: the power grid fits the lanes too, so the better of the two is taken, in 8-bit lanes
    coarse = Encoding(3, False, 0.4, range=float(flat.max()))
    picked = choose_grid([coarse], 8, "auto", error)
    assert picked.encoding in (with_lanes(coarse, 8), uniform_twin(coarse))
    assert in_lanes(picked.encoding, 8) and picked.alternative == ""
    assert choose_grid([power], 0, "auto", error).encoding == power


def test_the_default_on_a_simd_board_rides_8_bit_lanes_and_says_what_it_chose(tmp_path, host_cc):
    out = tmp_path / "proj"
    p = mcugen.build(shared_model("resnet8"), target="rv32", board="cv32e40p", out=out,
                     input_range=MODELS["resnet8"], **W4A8)
    macs = [s for s in p.schedule.steps if s.info.get("macs")]
    # an input grid in 8-bit lanes and 4-bit lane weights: the layer's decoded operands are 8-bit
    assert all((s.info["decode_bits"] == 8) == (s.info["act_lanes"] == 8) for s in macs[1:])
    assert sum(s.info["macs"] for s in macs if s.info["decode_bits"] == 8) > \
        0.8 * sum(s.info["macs"] for s in macs)
    wide = mcugen.build(shared_model("resnet8"), target="rv32", board="cv32e40p",
                        input_range=MODELS["resnet8"], lanes="16", act_grid="power", **W4A8)
    # (the first layer reads the network's 8-bit uniform input: 8-bit lanes whatever the grids)
    assert all(s.info["decode_bits"] == 16 for s in wide.schedule.steps[1:] if s.info.get("macs"))
    text = mcugen.report.format_report(p.report)
    assert "input grids chosen" in text and ": uniform in 8-bit lanes" in text
    result = compare(out, p.schedule, verify_inputs(p.schedule, 60, seed=5), sanitize=True)
    assert result.mismatches == 0, result.first


@pytest.mark.parametrize("abits", [4, 6])
def test_lane_activations_are_bit_exact_with_nupes(abits, tmp_path, host_cc):
    calib = np.random.default_rng(2).uniform(*MODELS["kws_dscnn"], size=(40, 1, 49, 10))
    out = tmp_path / "proj"
    p = mcugen.build(shared_model("kws_dscnn"), target="rv32", board="cv32e40p", out=out,
                     calib=calib, method="nupes", scheme="power", wbits=4, abits=abits)
    # (stored as their levels' values on this board: the codes' grid is the source's)
    grids = {t: code_grid(enc) for t, enc in p.qgraph.encodings.items()}
    lanes = {grid.lanes for t, grid in grids.items() if t != p.qgraph.graph.input}
    assert 8 in lanes or abits == 6
    macs = [s for s in p.schedule.steps if s.info.get("macs")]
    assert all(s.info["act_lanes"] == 8 for s in macs[1:] if s.info["decode_bits"] == 8)
    assert any(s.info["decode_bits"] == 8 for s in macs[1:])
    assert all(inputs_fit_eight_bits(grid) for grid in grids.values() if grid.lanes)
    result = compare(out, p.schedule, verify_inputs(p.schedule, 40, seed=6))
    assert result.mismatches == 0, result.first


def test_bad_lane_options_are_one_line(tmp_path):
    out = tmp_path / "proj"
    for flag, value in (("--lanes", "4"), ("--act-grid", "log")):
        done = subprocess.run([sys.executable, "-m", "mcugen", "build", str(shared_model("sine")),
                               flag, value, "-o", str(out)], capture_output=True, text=True)
        assert done.returncode != 0 and "Traceback" not in done.stderr
        assert flag in done.stderr and not out.exists()
    with pytest.raises(mcugen.MCUGenError, match="--lanes takes"):
        mcugen.build(shared_model("sine"), lanes="12")
    with pytest.raises(mcugen.MCUGenError, match="--act-grid takes"):
        mcugen.build(shared_model("sine"), act_grid="log")


def test_eight_bit_weights_take_the_uniform_grid_unless_it_costs_more_than_a_bit():
    rng = np.random.default_rng(3)
    gaussian = rng.normal(size=(8, 64))
    power = Grid(8, True, 0.7)

    def error_of(w):
        return lambda grid: reconstruction_error(w, grid)
    assert narrow_weights(power, 8, error_of(gaussian)).exponent == 1.0
    assert narrow_weights(power, 0, error_of(gaussian)) is power          # no lanes: no choice
    # most weights far below each row's largest: uniform 8-bit codes lose them
    spiky = rng.normal(size=(8, 64)) * 1e-3
    spiky[:, 0] = 1.0
    assert reconstruction_error(spiky, Grid(8, True, 1.0)) ** 2 > \
        NARROW_TOLERANCE * reconstruction_error(spiky, power) ** 2
    assert narrow_weights(power, 8, error_of(spiky)) is power
    p = mcugen.build(shared_model("mnist8"), input_range=MODELS["mnist8"], scheme="power",
                     wbits=4, abits=8, target="rv32", board="cv32e40p")
    grids = [qw.grid for qw in p.qgraph.weights.values()]
    assert [g.bits for g in grids] == [8, 4, 8]          # the first and last layers keep 8 bits
    assert grids[0].exponent == 1.0 and grids[1].lanes == 8
