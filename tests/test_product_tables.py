"""Product tables (mcugen/lower/product.py): one rounding per product, a proven bound, far finer
than two decode tables, and bit-exact C (packed codes included); GAP8 keeps decode tables."""
import subprocess
import sys

import numpy as np
import pytest

import mcugen
from conftest import MODELS, shared_model
from mcugen.errors import MCUGenError
from mcugen.ir.schedule import Schedule
from mcugen.lower.fixedpoint import ACC_LIMIT, mac_fixed_point
from mcugen.lower.product import mac_product_table, product_table_fits
from mcugen.quant.power import Grid, quantize_weights
from mcugen.verify import compare, verify_inputs
from onnx_factory import conv_relu_gemm, save

RNG = np.random.default_rng(11)
W4, X4 = Grid(4, True, 0.7), Grid(4, False, 0.7)


def layer(rows=6, k=144):
    codes, m, _ = quantize_weights(RNG.normal(size=(rows, k)), W4)
    return codes, m, RNG.normal(size=rows) * 0.1


def test_only_small_power_grids_get_a_product_table():
    assert product_table_fits(W4, X4)
    assert not product_table_fits(Grid(8, True, 0.7), Grid(8, False, 0.7))    # 64 K entries
    assert not product_table_fits(W4, Grid(8, False, 1.0))                     # identity input


def test_every_entry_is_its_product_rounded_once():
    codes, m, bias = layer()
    pt = mac_product_table("t", codes, W4, m, bias, X4, 2.0)
    table = pt.table.reshape(2 * W4.B + 1, X4.B + 1)
    signed_w = np.sign(W4.codes()) * W4.levels[np.abs(W4.codes())]
    exact = np.outer(signed_w, X4.levels) * 2.0 ** pt.frac_bits
    assert np.abs(table - exact).max() <= 0.5
    assert not table[:, 0].any()                      # input code 0 (and the padding) adds 0
    assert np.array_equal(pt.w_index, (codes + W4.B) * (X4.B + 1))


def test_the_bound_is_proven_and_reached():
    codes, m, bias = layer()
    pt = mac_product_table("t", codes, W4, m, bias, X4, 2.0)
    table = pt.table

    def acc(x):
        return pt.bias + table[pt.w_index + x].sum(axis=1)
    extremes = [np.where(codes > 0, X4.B, 0), np.where(codes < 0, X4.B, 0)]
    reached = max(np.abs(acc(x)).max() for x in extremes)
    assert reached <= pt.acc_bound <= ACC_LIMIT
    assert reached > ACC_LIMIT / 4                    # F is as large as the bound allows
    for x in RNG.integers(0, X4.B + 1, size=(300,) + codes.shape):
        assert np.abs(acc(x)).max() <= pt.acc_bound


def test_product_tables_are_far_finer_than_two_decode_tables():
    codes, m, bias = layer()
    x = RNG.integers(0, X4.B + 1, size=(200, codes.shape[1]))
    w_real = np.sign(codes) * W4.levels[np.abs(codes)] * m[:, None]
    want = X4.levels[x] * 2.0 @ w_real.T + bias        # the simulated pre-activation, R = 2
    pt = mac_product_table("t", codes, W4, m, bias, X4, 2.0)
    got_pt = (pt.bias + pt.table[pt.w_index[None] + x[:, None]].sum(axis=2)) * pt.acc_scale
    fp = mac_fixed_point("t", codes, W4, m, bias, X4, 2.0)
    got_fp = (fp.bias + fp.x_table[x] @ fp.weights.T) * fp.acc_scale
    err_pt, err_fp = np.abs(got_pt - want).max(), np.abs(got_fp - want).max()
    assert err_pt < err_fp / 100, (err_pt, err_fp)


@pytest.mark.parametrize("storage", ["decoded", "codes"])
def test_w4a4_product_tables_are_bit_exact_in_c(storage, tmp_path, host_cc):
    path = save(conv_relu_gemm(extra_dim=5), tmp_path / "m.onnx")
    out = tmp_path / storage
    project = mcugen.build(path, out=out, wbits=4, abits=4, first_last_bits="same",
                           weight_storage=storage, input_range=(-2.0, 2.0))
    products = [s for s in project.schedule.steps if s.params.get("product")]
    assert [s.kind for s in products] == ["dense"]    # the conv reads the 8-bit uniform input
    result = compare(out, project.schedule, verify_inputs(project.schedule, 60, seed=3))
    assert result.mismatches == 0, result.first


def test_gap8_keeps_decode_tables(tmp_path):
    path = save(conv_relu_gemm(extra_dim=5), tmp_path / "m.onnx")
    common = dict(wbits=4, abits=4, first_last_bits="same", input_range=(-2.0, 2.0))
    gap8 = mcugen.build(path, target="gap8", **common)
    assert not any(s.params.get("product") for s in gap8.schedule.steps)
    host = mcugen.build(path, **common)
    from mcugen.codegen.gap8 import render
    with pytest.raises(MCUGenError, match="product tables"):
        render(host.schedule, "m")


def test_mac_tables_separable_keeps_decode_tables(tmp_path):
    """--mac-tables separable: the fastest realization, no product table anywhere."""
    out = tmp_path / "sep"
    done = subprocess.run([sys.executable, "-m", "mcugen", "build", str(shared_model("mnist8")), "-o", str(out),
                           "--wbits", "4", "--abits", "4", "--first-last-bits", "same",
                           "--input-range", "0:255", "--mac-tables", "separable"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    steps = Schedule.load(out).steps
    assert not any(s.params.get("product") for s in steps)
    auto = mcugen.build(shared_model("mnist8"), wbits=4, abits=4, first_last_bits="same",
                        input_range=MODELS["mnist8"])
    assert any(s.params.get("product") for s in auto.schedule.steps)


def test_an_all_zero_batch_runs_through_product_tables(tmp_path, host_cc):
    """Every product of a blank image is zero: the reference still returns one row per input,
    and the C agrees."""
    out = tmp_path / "p"
    project = mcugen.build(shared_model("mnist8"), out=out, wbits=4, abits=4, input_range=(0, 255))
    assert any(s.params.get("product") for s in project.schedule.steps)
    blank = np.zeros((1, 1, 28, 28), np.float32)
    assert project.run(blank).shape == (1, 10)
    result = compare(out, project.schedule, np.concatenate([blank, blank]))
    assert result.mismatches == 0, result.first
