"""The quantizer math against DESIGN section 1, written out independently with Python floats."""
import math

import numpy as np
import pytest

from mcugen.numerics import round_half_away
from mcugen.quant.power import Encoding, Grid, quantize_weights, reconstruction_error


def spec_round(v):
    return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)


def test_round_half_away_from_zero():
    assert list(round_half_away([0.5, 1.5, 2.5, -0.5, -1.5, 0.49999])) == [1, 2, 3, -1, -2, 0]


@pytest.mark.parametrize("bits,a", [(8, 0.7), (4, 0.55), (3, 1.0), (8, 1.3)])
def test_signed_weights_follow_the_formula(bits, a):
    rng = np.random.default_rng(bits)
    w = rng.normal(size=(5, 7))
    codes, m, w_hat = quantize_weights(w, Grid(bits, True, a))
    big_b = 2 ** (bits - 1) - 1
    for c in range(5):
        mc = max(abs(v) for v in w[c])
        assert m[c] == pytest.approx(mc)
        for k in range(7):
            v = w[c, k]
            q = int(math.copysign(spec_round(big_b * (abs(v) / mc) ** a), v))
            assert codes[c, k] == q
            expect = math.copysign(mc * (abs(q) / big_b) ** (1 / a), q) if q else 0.0
            assert w_hat[c, k] == pytest.approx(expect, rel=1e-12, abs=1e-15)


def test_unsigned_activation_clips_and_rounds():
    enc = Encoding(4, False, 0.5, "power", 2.0)
    x = np.array([-1.0, 0.0, 0.3, 1.0, 2.0, 5.0])
    expect = [0, 0, spec_round(15 * (0.15 ** 0.5)), spec_round(15 * (0.5 ** 0.5)), 15, 15]
    assert list(enc.encode(x)) == expect


def test_uniform_is_exponent_one():
    enc = Encoding(8, False, 1.0, "power", 255.0)
    x = np.arange(256, dtype=float)
    assert np.array_equal(enc.encode(x), np.arange(256))       # integer pixels are exact
    assert np.array_equal(enc.decode(np.arange(256)), x)


def test_log2_grid_levels_and_rounding():
    g = Grid(4, True, scheme="log2")          # B = 7: levels 2^-6 .. 1
    assert g.levels[1:] == pytest.approx([2.0 ** (k - 7) for k in range(1, 8)])
    q = g.quantize(np.array([1.0, 0.5, 0.70, 0.72, -0.25, 0.0]), 1.0)
    # 0.70 < sqrt(0.5) = 0.7071 rounds down to 0.5 in the log domain; 0.72 rounds up to 1
    assert list(q) == [7, 6, 6, 7, -5, 0]


def test_all_zero_channel_has_zero_codes_and_no_division_by_zero():
    w = np.zeros((3, 4))
    w[1] = [0.5, -0.25, 0.0, 0.1]
    codes, m, w_hat = quantize_weights(w, Grid(8, True, 0.7))
    assert np.all(codes[0] == 0) and np.all(codes[2] == 0)
    assert np.all(np.isfinite(m)) and np.all(w_hat[0] == 0)
    assert reconstruction_error(np.zeros((2, 2)), Grid(4, True, 0.7)) == 0.0


def test_power_beats_uniform_on_gaussian_weights_at_4_bits():
    # the point of the method: bell-shaped weights are reconstructed better with a < 1
    w = np.random.default_rng(0).normal(size=(16, 512))
    power = reconstruction_error(w, Grid(4, True, 0.7))
    uniform = reconstruction_error(w, Grid(4, True, 1.0))
    assert power < uniform


def _inner_ranges(project, samples):
    """(encoding, max |value| on the samples, the values) of every activation code root."""
    from mcugen.reference.float_ir import run_float
    graph = project.qgraph.graph
    values = run_float(graph, samples)
    roots = {n.output for n in graph.nodes if n.output in project.qgraph.encodings
             and n.output in values}
    return [(project.qgraph.encodings[t], float(np.abs(values[t]).max()), values[t]) for t in roots]


def test_a_uniform_grid_clips_its_range_where_that_lowers_the_error():
    import dataclasses

    import mcugen
    from conftest import shared_model
    from mcugen.quant.lanes import encoded_error
    rng = np.random.default_rng(3)
    calib = (rng.standard_normal((24, 49, 10)) * 8.0).astype(np.float32)
    path = shared_model("kws_dscnn")
    uniform = _inner_ranges(mcugen.build(path, calib=calib, scheme="uniform", wbits=8, abits=4),
                            calib)
    clipped = [(enc, peak, v) for enc, peak, v in uniform if enc.range < 0.99 * peak]
    assert clipped, "no uniform range was clipped"
    for enc, peak, values in clipped:
        at_max = dataclasses.replace(enc, range=peak)
        assert encoded_error(enc, values) < encoded_error(at_max, values)
    # a power grid keeps the observed maximum, and a --percentile is the range as given
    power = mcugen.build(path, calib=calib, scheme="power", wbits=8, abits=4)
    assert all(enc.range >= 0.999 * peak for enc, peak, _ in _inner_ranges(power, calib))
    chosen = mcugen.build(path, calib=calib, scheme="uniform", wbits=8, abits=4, percentile=99.0)
    for enc, _, values in _inner_ranges(chosen, calib):
        assert enc.range >= 0.999 * np.percentile(np.abs(values), 99.0)
