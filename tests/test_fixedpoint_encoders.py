"""Decode tables, the accumulator bound and threshold encoders against the float encoder."""
import numpy as np
import pytest

from mcugen.errors import MCUGenError
from mcugen.lower.encoders import apply_thresholds, float_encoder, threshold_table
from mcugen.lower.fixedpoint import (ACC_LIMIT, decode_table, default_frac_bits,
                                     mac_fixed_point)
from mcugen.quant.power import Encoding, Grid, quantize_weights


def test_uniform_decode_table_is_the_identity():
    g = Grid(8, False, 1.0)
    assert np.array_equal(decode_table(g, default_frac_bits(g)), np.arange(256))
    s = Grid(8, True, 1.0)
    assert np.array_equal(decode_table(s, default_frac_bits(s)), np.arange(-127, 128))


def test_power_decode_table_fits_int16_and_is_monotone():
    for g in (Grid(8, False, 0.6), Grid(4, True, 0.8), Grid(2, False, 0.5), Grid(8, True, 0.7, "log2")):
        t = decode_table(g, default_frac_bits(g))
        assert np.abs(t).max() <= 32767
        assert np.all(np.diff(t) >= 0)


@pytest.mark.parametrize("activation", [None, ("Relu",), ("Clip", 0.0, 0.8), ("LeakyRelu", 0.1)])
@pytest.mark.parametrize("enc", [Encoding(4, False, 0.7, "power", 1.5), Encoding(3, True, 0.6, "power", 2.0),
                                 Encoding(8, False, 1.0, "power", 3.0), Encoding(4, True, 1.0, "log2", 1.0)])
def test_thresholds_equal_the_float_encoder_on_every_accumulator(enc, activation):
    if activation and activation[0] in ("Relu", "Clip") and enc.signed:
        enc = Encoding(enc.bits, False, enc.exponent, enc.scheme, enc.range)
    scale = np.array([1e-3, 3.7e-4, 2.2e-3])
    bound = 6000
    thresholds = threshold_table(enc, activation, scale, bound)
    acc = np.arange(-bound, bound + 1)
    want = float_encoder(enc, activation, scale)(np.tile(acc, (3, 1)))
    got = apply_thresholds(np.tile(acc, (1, 3, 1)), thresholds, -enc.B if enc.signed else 0)[0]
    assert np.array_equal(got, want)


def test_mac_bound_is_proven_and_fractional_bits_shrink_to_fit():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 4096))
    g = Grid(8, True, 0.7)
    codes, m, _ = quantize_weights(w, g)
    fp = mac_fixed_point("big", codes, g, m, np.zeros(8), Grid(8, False, 0.7), 1.0)
    assert fp.acc_bound <= ACC_LIMIT
    assert fp.w_frac_bits + fp.x_frac_bits < default_frac_bits(g) + default_frac_bits(Grid(8, False, 0.7))
    worst = np.abs(fp.bias) + np.abs(fp.x_table).max() * np.abs(fp.weights).sum(axis=1)
    assert worst.max() == fp.acc_bound


def test_impossible_accumulator_is_a_clear_error():
    g = Grid(8, True, 1.0)
    codes, m, _ = quantize_weights(np.ones((1, 4)), g)
    with pytest.raises(MCUGenError, match="beyond int32"):
        mac_fixed_point("huge_bias", codes, g, m, np.array([1e12]), Grid(8, False, 1.0), 1.0)
