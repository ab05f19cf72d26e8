"""Decode tables, the accumulator bound and threshold encoders against the float encoder."""
import numpy as np
import pytest

from mcugen.errors import MCUGenError
from mcugen.lower.encoders import ENCODERS
from mcugen.lower.encoders.exact import float_encoder
from mcugen.lower.encoders.threshold import threshold_table
from mcugen.lower.fixedpoint import (ACC_LIMIT, WIDE_TABLE_LIMIT, decode_table,
                                     default_frac_bits, mac_fixed_point)
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
    params = {"code_min": enc.code_min}
    got = ENCODERS["threshold"].run(params, {"enc_thresholds": thresholds}, np.tile(acc, (3, 1)),
                                    np.arange(3)[:, None])
    assert np.array_equal(got, want)


def test_mac_bound_is_proven_and_fractional_bits_shrink_to_fit():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 4096))
    g = Grid(8, True, 0.7)
    codes, m, _ = quantize_weights(w, g)
    fp = mac_fixed_point("big", codes, g, m, np.zeros(8), Grid(8, False, 0.7), 1.0)
    assert fp.acc_bound <= ACC_LIMIT
    assert fp.w_frac_bits + fp.x_frac_bits < default_frac_bits(g) + default_frac_bits(Grid(8, False, 0.7))


def test_mac_bound_is_reached_by_an_input_and_never_exceeded():
    rng = np.random.default_rng(1)
    g, x = Grid(4, True, 0.7), Grid(4, False, 0.7)
    codes, m, _ = quantize_weights(rng.normal(size=(6, 50)), g)
    fp = mac_fixed_point("small", codes, g, m, rng.normal(size=6), x, 1.0)
    acc = lambda xcodes: fp.bias + (fp.weights * fp.x_table[xcodes]).sum(axis=1)
    # the adversarial inputs: every weight's input at the table end that pushes acc one way
    up = np.where(fp.weights > 0, x.B, 0)
    down = np.where(fp.weights < 0, x.B, 0)
    reached = max(np.abs(acc(up)).max(), np.abs(acc(down)).max())
    assert fp.acc_bound >= reached >= 0.9 * fp.acc_bound      # beta alone may add the rest
    random_codes = rng.integers(0, x.B + 1, size=(1000, 6, 50))
    assert max(np.abs(acc(c)).max() for c in random_codes) <= fp.acc_bound
    # an unsigned input roughly halves the old |beta| + max Dx * sum |Dw| bound
    old = (np.abs(fp.bias) + fp.x_table.max() * np.abs(fp.weights).sum(axis=1)).max()
    assert fp.acc_bound < 0.75 * old


def test_impossible_accumulator_is_a_clear_error():
    g = Grid(8, True, 1.0)
    codes, m, _ = quantize_weights(np.ones((1, 4)), g)
    with pytest.raises(MCUGenError, match="beyond int32"):
        mac_fixed_point("huge_bias", codes, g, m, np.array([1e12]), Grid(8, False, 1.0), 1.0)


def test_an_identity_input_table_lets_the_weight_table_widen_within_the_bound():
    rng = np.random.default_rng(2)
    g, x = Grid(8, True, 0.7), Grid(8, False, 1.0)        # x: raw 8-bit codes, Fx = 0
    codes, m, _ = quantize_weights(rng.normal(size=(4, 27)), g)
    narrow = mac_fixed_point("first", codes, g, m, np.zeros(4), x, 255.0)
    wide = mac_fixed_point("first", codes, g, m, np.zeros(4), x, 255.0, w_limit=WIDE_TABLE_LIMIT)
    assert narrow.w_frac_bits == default_frac_bits(g)                   # capped by int16
    assert wide.w_frac_bits > narrow.w_frac_bits and wide.acc_bound <= ACC_LIMIT
    assert np.abs(wide.weights).max() > (1 << 15)                        # needs int32 now
    exact = lambda fp: g.levels[np.abs(codes)] * np.sign(codes) * (g.B << fp.w_frac_bits)
    error = lambda fp: np.abs(fp.weights - exact(fp)).max() / (g.B << fp.w_frac_bits)
    assert error(wide) < error(narrow) / 8


def test_average_pool_table_is_as_fine_as_its_int32_sum_allows():
    from mcugen.ops.pool import sum_frac_bits
    x = Encoding(4, False, 0.7, "power", 3.0)
    frac = sum_frac_bits(None, None, x, 64)            # an 8x8 global average
    assert frac > default_frac_bits(x)                 # past the int16 cap
    assert np.abs(decode_table(x, frac)).max() * 64 <= ACC_LIMIT
    assert np.abs(decode_table(x, frac + 1)).max() * 64 > ACC_LIMIT


def test_add_of_8_bit_power_codes_matches_the_simulated_sum_for_every_pair():
    from types import SimpleNamespace
    from mcugen.ir.graph import Node
    from mcugen.ops.add import Add
    encodings = {"a": Encoding(8, True, 0.7, "power", 3.1), "b": Encoding(8, False, 0.7, "power", 1.7),
                 "y": Encoding(8, False, 0.7, "power", 3.5)}
    node = Node("add", "Add", ["a", "b"], "y", attrs={"activation": ("Relu",), "negate_b": False})
    from mcugen.lower.encoders import EncodeRequest, encoder_step_parts

    def threshold_parts(node, activation, scale, bound):     # exact: compared with == below
        request = EncodeRequest(encodings[node.output], activation, scale, bound)
        return encoder_step_parts(request, "threshold")
    ctx = SimpleNamespace(encoding=encodings.get, shape=lambda t: (1, 4), encoder_parts=threshold_parts,
                          step=lambda node, kind, params, consts, info: SimpleNamespace(params=params, consts=consts))
    step = Add().lower(node, ctx)
    qa, qb = np.meshgrid(encodings["a"].codes(), encodings["b"].codes(), indexing="ij")
    got = Add().run_int(step, [qa.reshape(1, -1), qb.reshape(1, -1)])
    total = encodings["a"].decode(qa) + encodings["b"].decode(qb)
    want = encodings["y"].encode(np.maximum(total, 0.0)).reshape(1, -1)
    assert np.array_equal(got, want)
