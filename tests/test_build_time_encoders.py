"""Issue 21 (build time): the encoders' search measures every row only where it must. Counted
in work (rows x cells measured, builds run), not seconds, so that a loaded machine cannot
make these fail; bench/compile_time.py measures the seconds."""
import numpy as np
import pytest

import mcugen.lower.encoders.lut as lut_module
from mcugen.lower.encoders import ENCODERS, EncodeRequest, clear_cache, encoder_step_parts
from mcugen.quant.power import Encoding


def wide_layer(exponent=0.45, rows=96, elements=96, bound=(1 << 30) + 12345):
    """A dense layer like issue 21's autoencoder: a low exponent, many rows, few values."""
    scale = 3.0 / bound * np.exp(np.random.default_rng(2).uniform(-np.log(8.0), 0.0, rows))
    grid = Encoding(8, False, exponent, "power", 3.0)
    return EncodeRequest(grid, ("Relu",), scale, bound, 1, elements)


@pytest.fixture
def measured(monkeypatch):
    """Rows x cells of every lut candidate measured on all of its rows, and on probe rows."""
    work = {"all": [], "probe": 0}
    real = lut_module.cell_pieces

    def counting(reference, mult, shift, lo, hi, bound):
        if mult.size == reference.rows and reference.rows > 4 and mult.size > 4:
            work["all"].append(mult.size * (hi - lo + 1))
        else:
            work["probe"] += mult.size * (hi - lo + 1)
        return real(reference, mult, shift, lo, hi, bound)
    monkeypatch.setattr(lut_module, "cell_pieces", counting)
    return work


def test_the_lut_measures_every_row_only_for_a_few_sizes(measured):
    request = wide_layer()
    parts = ENCODERS["lut"].build(request)
    kept = request.rows * parts.params["enc_n"]
    # about 30 sizes are tried; all but the few near the one kept are refused on 4 rows
    assert len(measured["all"]) <= 12
    assert sum(measured["all"]) <= 12 * kept
    assert measured["probe"] < sum(measured["all"])


def test_auto_stops_a_lut_search_that_cannot_beat_pade(measured):
    request = wide_layer()
    clear_cache()
    _, params, _ = encoder_step_parts(request, "auto")
    assert params["encoder"] == "pade"
    during_auto = list(measured["all"])
    lut_alone = ENCODERS["lut"].build(request)
    # the table the budget needs costs more bytes than pade's bytes and instructions together,
    # so auto stops the lut's search before it measures a table that size on every row
    assert lut_alone.table_bytes > request.rows * 5 + 33 * request.elements
    assert sum(during_auto) < request.rows * lut_alone.params["enc_n"]


def test_lowering_again_reuses_the_built_encoders(monkeypatch):
    request = wide_layer(exponent=0.6, rows=8, elements=4096)
    clear_cache()
    built = []
    for encoder in ENCODERS.values():
        real = type(encoder).build
        monkeypatch.setattr(type(encoder), "build",
                            lambda self, req, beaten=None, real=real: built.append(self.name) or
                            real(self, req, beaten))
    first = encoder_step_parts(request, "auto")
    count = len(built)
    same = EncodeRequest(request.encoding, request.activation, request.scale.copy(), request.bound,
                         1, request.elements)
    again = encoder_step_parts(same, "auto")
    assert len(built) == count and count > 0
    assert first[1] == again[1] and all(np.array_equal(first[0][k], again[0][k]) for k in first[0])
