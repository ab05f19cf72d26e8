"""The encoder seam: every encoder has its C for every target, and the exact error analysis
(segments over the whole accumulator range) agrees with brute force over every accumulator."""
import warnings

import numpy as np
import pytest
from onnx import helper as onnx_helper

import mcugen
from mcugen.codegen.render import environment
from mcugen.errors import MCUGenError
from mcugen.lower.encoders import ENCODERS, WEIGHED, EncodeRequest, choose, encoder_step_parts, lut
from mcugen.lower.encoders.exact import float_encoder
from mcugen.quant.power import Encoding
from onnx_factory import make_model, save, tensor

TARGETS_THAT_ENCODE = ("host", "gap8")
ACTIVATIONS = [None, ("Relu",), ("Clip", 0.0, 2.0), ("LeakyRelu", 0.1), ("LeakyRelu", -0.3),
               ("PRelu", (0.2, -0.1, 0.0)), ("Sigmoid",), ("Tanh",), ("HardSigmoid", 0.2, 0.5),
               ("HardSwish",), ("Elu", 1.0), ("Selu", 1.6732632, 1.0507010), ("Softplus",),
               ("SiLU",), ("Gelu",), ("GeluTanh",), ("Mish",)]


def encoding_for(activation, bits=8, exponent=0.75, scheme="power", rng=3.0):
    from mcugen.numerics import activation_is_nonnegative
    return Encoding(bits, not activation_is_nonnegative(activation), exponent, scheme, rng)


@pytest.mark.parametrize("target", TARGETS_THAT_ENCODE)
@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_every_encoder_has_a_snippet_for_every_target(name, target):
    env = environment(target)
    assert env.get_template(f"encoders/{name}.c.j2") is not None


def brute_force(encoder, parts, request):
    """Worst error and off count over EVERY accumulator value of every row."""
    acc = np.arange(-request.bound, request.bound + 1)
    rows = np.arange(request.rows)[:, None]
    want = float_encoder(request.encoding, request.activation, request.scale)(
        np.broadcast_to(acc, (request.rows, acc.size)))
    got = encoder.run(parts.params, parts.consts, acc[None, :], rows)
    error = np.abs(got - want)
    return int(error.max()), float((error > 0).mean()), float(error.mean())


SUPPORTED = [(name, a) for name in sorted(ENCODERS) for a in ACTIVATIONS if ENCODERS[name].supports(a)]


@pytest.mark.parametrize("name, activation", SUPPORTED,
                         ids=[f"{n}-{a[0] if a else 'identity'}" for n, a in SUPPORTED])
def test_measured_code_error_equals_brute_force_over_every_accumulator(name, activation):
    encoder = ENCODERS[name]
    # three rows whose scales put the whole code range inside +-bound (every code reached)
    bound = 40_000
    scale = np.array([1.0, 0.61, 0.27]) * 12.0 / bound
    for enc in (encoding_for(activation), encoding_for(activation, bits=4, exponent=0.6)):
        request = EncodeRequest(enc, activation, scale, bound, max_code_error=1)
        parts = encoder.build(request)
        assert parts is not None, f"{name} failed a budget of 1 on {activation}"
        worst, off, mean = brute_force(encoder, parts, request)
        assert parts.error.worst == worst
        assert parts.error.off_share == pytest.approx(off, abs=1e-12)
        assert parts.error.mean == pytest.approx(mean, abs=1e-12)
        assert worst <= 1


def test_threshold_refuses_a_non_monotone_activation():
    request = EncodeRequest(encoding_for(("SiLU",)), ("SiLU",), [1e-4], 100_000)
    with pytest.raises(MCUGenError, match="threshold encoder cannot realize activation SiLU"):
        encoder_step_parts(request, "threshold", "node 'x'")


def test_an_unmet_budget_is_a_clear_error():
    # an exact lut of a steep 8-bit power grid over a wide accumulator needs more than 16 bits
    request = EncodeRequest(encoding_for(("SiLU",)), ("SiLU",), [3e-8], (1 << 31) - 2, max_code_error=0)
    with pytest.raises(MCUGenError, match="within a code error of 0"):
        encoder_step_parts(request, "lut", "node 'x'")


def test_auto_weighs_bytes_against_instructions_and_auto_small_takes_the_smallest():
    request = EncodeRequest(encoding_for(("Relu",)), ("Relu",), np.full(8, 1e-6), 1 << 26)
    built = [ENCODERS[n].build(request) for n in WEIGHED if ENCODERS[n].supports(("Relu",))]
    built = [p for p in built if p is not None]
    assert len(built) == 3
    smallest = choose(built, 1, small=True)
    assert smallest.table_bytes == min(p.table_bytes for p in built)
    fastest = min(built, key=lambda p: p.ops_per_element)
    # a layer encoding a million values a run: instructions decide
    assert choose(built, 1_000_000) is fastest
    # one value a run: bytes decide
    assert choose(built, 1) is smallest
    assert all(p.params["encoder"] != "threshold" for p in (fastest, smallest))


def test_lut_search_never_tries_a_table_that_spans_no_cell(tmp_path, monkeypatch):
    """A nearly constant layer is accepted at the first table size (16); the bisection below
    it must stop at 4 cells (size - 3 cell steps): a size of 3 or less divided by zero or
    stepped backwards (NaN cells, a RuntimeWarning) before."""
    rng = np.random.default_rng(0)
    node = onnx_helper.make_node
    model = make_model([node("Conv", ["x", "w", "b"], ["c"], name="c"),
                        node("Sigmoid", ["c"], ["s"], name="s"), node("Flatten", ["s"], ["f"]),
                        node("Gemm", ["f", "gw", "gb"], ["y"], transB=1)],
                       [tensor("x", [1, 2, 3, 3])], [tensor("y", [1, 2])],
                       [("w", rng.normal(size=(2, 2, 1, 1)) * 1e-3), ("b", np.zeros(2)),
                        ("gw", rng.normal(size=(2, 18))), ("gb", np.zeros(2))])
    sizes, build_size = [], lut.Lut.build_size

    def spy(self, request, span, size, screen=False):
        sizes.append(size)
        return build_size(self, request, span, size, screen)
    monkeypatch.setattr(lut.Lut, "build_size", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        mcugen.build(save(model, tmp_path / "flat.onnx"), input_range=(-1.0, 1.0), encoder="lut",
                     first_last_bits="same")
    assert sizes and min(sizes) >= lut.SMALLEST_SIZE and 16 in sizes
