"""The encoders' exact analysis, its fast paths against the plain algorithms they replace:
thresholds of the index without bisection, segments compared all rows at once, the lut's
cells merged with the reference without sorting, the lut's screening on a few rows, and
auto's early stop (an encoder that cannot win is not searched to the end)."""
import numpy as np
import pytest

from mcugen.lower.encoders import ENCODERS, WEIGHED, EncodeRequest, choose, clear_cache, encoder_step_parts
from mcugen.lower.encoders.exact import Segments, compare, least_reaching
from mcugen.lower.encoders.index import index_thresholds, multipliers, requantize
from mcugen.lower.encoders.base import probe_rows
from mcugen.lower.encoders.lut import Lut, changing_span
from mcugen.numerics import activation_is_nonnegative
from mcugen.quant.power import Encoding

RNG = np.random.default_rng(21)
LUT = Lut()


def request(activation=("Relu",), bits=8, exponent=0.6, rows=6, bound=1 << 24, spread=30.0,
            budget=1, elements=100, seed=0):
    rng = np.random.default_rng(seed)
    enc = Encoding(bits, not activation_is_nonnegative(activation), exponent, "power", 4.0)
    scale = 8.0 / bound * np.exp(rng.uniform(-np.log(spread), 0.0, rows))
    return EncodeRequest(enc, activation, scale, bound, budget, elements)


@pytest.mark.parametrize("increasing", [True, False])
def test_index_thresholds_equal_the_bisection(increasing):
    for _ in range(40):
        rows = int(RNG.integers(1, 6))
        bound = int(RNG.choice([10, 1000, 1 << 20, (1 << 31) - 2]))
        mult, shift = multipliers(RNG.uniform(0, 1e-3, rows) * RNG.choice([1, 1e-6, 1e3]))
        mult[RNG.random(rows) < 0.2] = 0                      # a row whose index is constant
        if not increasing:
            mult = -mult
        targets = np.sort(RNG.integers(-5000, 5000, 30) * int(RNG.choice([1, 1 << 20, 1 << 40])))
        lo = RNG.integers(-bound, 1, rows)
        hi = np.maximum(lo, RNG.integers(0, bound + 1, rows))
        want = least_reaching(lambda acc: requantize(acc, mult[:, None], shift[:, None]),
                              targets, lo, hi, increasing)
        got = index_thresholds(mult, shift, targets, lo, hi, increasing)
        assert np.array_equal(got, want)


def per_row_compare(reference, realized, bound):
    """The comparison row by row on the union of starts (the algorithm compare vectorizes)."""
    worst = off = total_error = active = active_off = 0
    for r in range(reference.rows):
        starts = np.union1d(reference.starts[r], realized.starts[r])
        lengths = np.diff(np.append(starts, bound + 1))
        error = np.abs(realized.at(r, starts) - reference.at(r, starts))
        worst, off = max(worst, int(error.max())), off + int(lengths[error > 0].sum())
        total_error += int((lengths * error).sum())
        breaks = reference.starts[r][1:]
        if breaks.size:
            inside = (starts >= breaks[0]) & (starts < breaks[-1])
            active += int(lengths[inside].sum())
            active_off += int(lengths[inside & (error > 0)].sum())
    total = reference.rows * (2 * bound + 1)
    return worst, off / total, total_error / total, active_off / active if active else 0.0


def random_segments(rows, bound, n):
    starts = [np.unique(np.concatenate([[-bound], RNG.integers(-bound, bound + 1, n)]))
              for _ in range(rows)]
    return Segments(starts, [RNG.integers(0, 5, s.size) for s in starts])


def test_compare_equals_the_row_by_row_union():
    for _ in range(30):
        rows, bound = int(RNG.integers(1, 5)), int(RNG.integers(1, 2000))
        a, b = random_segments(rows, bound, 20), random_segments(rows, bound, 7)
        error = compare(a, b, bound)
        measured = (error.worst, error.off_share, error.mean, error.active_off_share)
        assert measured == per_row_compare(a, b, bound)


ACTIVATIONS = [("Relu",), None, ("Clip", 0.0, 2.0), ("LeakyRelu", -0.3), ("PRelu", (0.2, -0.1, 0.0)),
               ("SiLU",), ("Tanh",)]


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=lambda a: a[0] if a else "identity")
def test_lut_cells_without_sorting_measure_what_the_merge_measures(activation):
    rows = 3 if activation and activation[0] == "PRelu" else 7
    for seed, size in ((0, 20), (1, 45), (2, 300)):
        req = request(activation, rows=rows, seed=seed)
        parts = LUT.build_size(req, changing_span(req), size)
        assert parts.error == LUT.measure(req, parts.params, parts.consts)


def test_screening_refuses_only_what_the_full_measure_refuses():
    screened = 0
    for seed in range(6):
        req = request(exponent=0.45, rows=12, seed=seed, spread=float(RNG.choice([1.5, 100.0])))
        span = changing_span(req)
        for size in (16, 32, 64, 128, 256, 700, 2000):
            parts = LUT.build_size(req, span, size)
            if LUT.build_size(req, span, size, screen=True) is None:
                screened += 1
                assert not req.accepts(parts.error)
    assert screened > 0
    assert probe_rows(np.arange(10.0)) == [0, 3, 6, 9]


@pytest.mark.parametrize("exponent, rows, elements",
                         [(0.45, 64, 64), (0.6, 16, 20000), (0.75, 8, 1), (1.0, 16, 500), (0.6, 3, 50)])
@pytest.mark.parametrize("choice", ["auto", "auto-small"])
def test_auto_stops_early_but_chooses_what_building_everything_chooses(exponent, rows, elements,
                                                                       choice):
    for activation in (("Relu",), ("LeakyRelu", 0.1), None):
        req = request(activation, exponent=exponent, rows=rows, elements=elements, bound=1 << 26)
        clear_cache()
        consts, params, _ = encoder_step_parts(req, choice)
        # what auto weighs (on these 8-bit grids: bracket is only asked for)
        built = [p for p in (ENCODERS[n].build(req) for n in WEIGHED if ENCODERS[n].supports(activation))
                 if p is not None]
        want = choose(built, elements, small=choice == "auto-small")
        assert params == want.params
        assert consts.keys() == want.consts.keys()
        assert all(np.array_equal(consts[k], want.consts[k]) for k in consts)


def test_cached_parts_are_copies():
    req = request(rows=4)
    clear_cache()
    consts, params, _ = encoder_step_parts(req, "lut")
    consts["enc_table"][:] = 0
    params["enc_lo"] = 12345
    again, again_params, _ = encoder_step_parts(req, "lut")
    assert again["enc_table"].any() and again_params["enc_lo"] != 12345


def test_pade_screening_refuses_only_what_the_full_measure_refuses():
    from mcugen.lower.encoders.pade import Pade, negative_slopes
    pade, screened = Pade(), 0
    for activation in (("Relu",), ("LeakyRelu", -0.3), None):
        req = request(activation, exponent=0.6, rows=16, seed=3, spread=50.0)
        slopes = negative_slopes(activation, req.rows)
        for F in range(1, 16):
            parts = pade.candidate(req, slopes, (1, 1), F)
            if pade.candidate(req, slopes, (1, 1), F, screen=True) is None:
                screened += 1
                assert parts is None or not req.accepts(parts.error)
    assert screened > 0


def test_the_active_share_counts_the_values_between_each_rows_first_and_last_breakpoint():
    bound = 100
    reference = Segments([[-bound, -10, 20, 50], [-bound]], [[0, 1, 2, 3], [0]])
    realized = Segments([[-bound, -5, 30], [-bound, 0]], [[0, 2, 2], [0, 1]])
    error = compare(reference, realized, bound)
    # row 0 changes on [-10, 50): off there on [-10, -5) (0 for 1) and [-5, 20) (2 for 1), 30
    # of 60 values, and on [50, 100] (2 for 3) outside; row 1 never changes (no active values)
    # and its 101 values from 0 on are off
    assert error.active_off_share == pytest.approx(30 / 60)
    assert error.off_share == pytest.approx((30 + 51 + 101) / 402)
