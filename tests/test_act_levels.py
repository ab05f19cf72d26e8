"""Levels storage (`--act-storage`, DESIGN section 1, issue 25): an activation on a power grid in
8-bit lanes stored as its levels' 8-bit values, not its codes. Same values, so the reference
gives the same outputs; the consumers read an identity (uniform-like) tensor; every target is
bit-exact with it."""
import numpy as np
import pytest
from onnx import helper

import mcugen
from conftest import MODELS, require_tool, shared_model
from mcugen.lower.fixedpoint import decode_table, default_frac_bits, stores_levels
from mcugen.quant.power import Encoding, levels_encoding, levels_storable
from mcugen.verify import compare, verify_inputs
from onnx_factory import make_model, save, tensor
from test_every_kind_renders import every_kind_model, token_model
from test_hls import assert_bit_exact, assert_roms_fit_their_widths, build_hls
from test_hls_stream import kinds, residual

# power grids on every inner activation, their levels in 8-bit lanes (a host build has no lanes)
A4 = dict(scheme="power", wbits=4, abits=4, first_last_bits="same", lanes="8", act_grid="power",
          mac_tables="separable")      # (a product table indexes codes: DESIGN section 1)


def stored(project):
    return [enc for enc in project.qgraph.encodings.values() if stores_levels(enc)]


@pytest.mark.parametrize("bits,signed,exponent", [(4, False, 0.6), (4, True, 0.7), (5, False, 0.9),
                                                  (6, True, 0.95), (3, False, 0.5)])
def test_levels_are_the_codes_decode_tables_at_every_width(bits, signed, exponent):
    codes = Encoding(bits, signed, exponent, range=3.0, lanes=8)
    assert levels_storable(codes) and codes.fits_lanes(8)
    levels = levels_encoding(codes)
    assert levels.ctype == ("int8" if signed else "uint8") and levels.B == codes.lane_scale
    assert levels.bits == bits        # the resolution is the codes'; the byte holds the value
    x = np.linspace(-4.0, 4.0, 997)
    # the source's rounding, its values: the same reals, written as whole 8-bit values
    assert np.array_equal(levels.decode(levels.encode(x)), codes.decode(codes.encode(x)))
    written = levels.written()
    # each code writes its level as a whole 8-bit value, in the codes' order (a MaxPool on the
    # stored values picks the same code)
    every = np.arange(codes.code_min, codes.B + 1)
    assert np.array_equal(levels.decode(written[every + codes.table_offset]), codes.decode(every))
    assert np.all(np.diff(written[every + codes.table_offset]) > 0)
    assert np.abs(written).max() <= (127 if signed else 255)
    for limit in (127 if signed else 255, (1 << 15) - 1, (1 << 31) - 1):
        f_codes, f_levels = default_frac_bits(codes, limit=limit), default_frac_bits(levels, limit=limit)
        # the stored grid's table is its codes' table with the unwritten values in between
        assert (codes.B << f_codes) == (levels.B << f_levels)
        assert np.array_equal(decode_table(levels, f_levels)[written + levels.table_offset],
                              decode_table(codes, f_codes))
    assert not levels_storable(Encoding(4, False, 1.0, range=1.0))         # uniform: already values
    assert not levels_storable(Encoding(4, False, 0.6, range=1.0))         # levels not in the lanes
    assert not levels_storable(levels)


def both(path, **options):
    """The same build with codes and with levels storage."""
    return [mcugen.build(path, act_storage=storage, **options) for storage in ("codes", "levels")]


def same_outputs(codes, levels, n=40, seed=3):
    x = verify_inputs(codes.schedule, n, seed=seed)
    raw_codes, raw_levels = codes.run(x, raw=True), levels.run(x, raw=True)
    assert np.array_equal(raw_codes, raw_levels)
    assert np.array_equal(codes.run(x), levels.run(x))


def test_every_kind_gives_the_same_outputs_with_levels(tmp_path):
    codes, levels = both(every_kind_model(tmp_path / "kinds.onnx"), input_range=(-1.0, 1.0), **A4)
    assert len(stored(levels)) >= 8 and not stored(codes)
    assert any(enc.signed for enc in stored(levels))          # sign-magnitude grids too
    encoders = [s for s in levels.schedule.steps if s.params.get("levels_max")]
    assert {s.kind for s in encoders} >= {"conv2d", "add", "avgpool", "mul", "matmul", "softmax",
                                          "layernorm", "reduce_sum"}
    same_outputs(codes, levels)


@pytest.mark.parametrize("encoder", ["lut", "pade"])
def test_index_encoders_write_levels_too(encoder, tmp_path):
    codes, levels = both(every_kind_model(tmp_path / "kinds.onnx"), input_range=(-1.0, 1.0),
                         encoder=encoder, **A4)
    steps = [s for s in levels.schedule.steps if s.params.get("levels_max")]
    assert steps and all(s.params["encoder"] == encoder for s in steps)
    # a lut holds the values in its own table; pade reads one more
    assert all(("enc_levels" in s.consts) == (encoder == "pade") for s in steps)
    same_outputs(codes, levels)


def test_tokens_and_shared_models_give_the_same_outputs(tmp_path):
    same_outputs(*both(token_model(tmp_path / "tokens.onnx"), input_range=(-1.0, 1.0), **A4))
    for name in ("mnist8", "resnet8"):
        codes, levels = both(shared_model(name), input_range=MODELS[name], target="rv32",
                             board="cv32e40p", scheme="power", wbits=4, abits=4,
                             first_last_bits="same")
        same_outputs(codes, levels, n=12)
        # the convs read the stored values with no decode table, in 8-bit lanes
        convs = [s for s in levels.schedule.steps if s.kind == "conv2d"][1:]
        assert convs and all(s.params["identity_dx"] == 1 and s.info["decode_bits"] == 8
                             for s in convs)
        assert all(s.params["identity_dx"] == 0
                   for s in [s for s in codes.schedule.steps if s.kind == "conv2d"][1:])


def test_auto_stores_levels_on_simd_boards_only():
    """On rv32's cv32e40p and on gap8 (whose Add reads the levels through its pair table's
    maps); not on hls (its ports carry codes), not on a board without SIMD lanes."""
    path, r = shared_model("mnist8"), MODELS["mnist8"]
    options = dict(input_range=r, scheme="power", wbits=4, abits=4, first_last_bits="same")
    assert stored(mcugen.build(path, target="rv32", board="cv32e40p", **options))
    assert stored(mcugen.build(path, target="gap8", **options))
    assert not stored(mcugen.build(path, target="gap8", act_storage="codes", **options))
    assert not stored(mcugen.build(path, target="hls", **options))
    assert not stored(mcugen.build(path, **options))
    with pytest.raises(mcugen.MCUGenError, match="--act-storage takes"):
        mcugen.build(path, act_storage="values", **options)


def check_bit_exact(project, out, n=30, **compare_options):
    result = compare(out, project.schedule, verify_inputs(project.schedule, n, seed=9), **compare_options)
    assert result.mismatches == 0, result.first


@pytest.mark.parametrize("target,board", [("host", None), ("gap8", None), ("hls", None),
                                          ("rv32", "cv32e40p")])
def test_levels_are_bit_exact_on_every_target(target, board, tmp_path, host_cc):
    for name, model in (("kinds", every_kind_model), ("tokens", token_model)):
        out = tmp_path / name
        project = mcugen.build(model(tmp_path / f"{name}.onnx"), target=target, board=board,
                               out=out, input_range=(-1.0, 1.0), act_storage="levels", **A4)
        assert stored(project)
        check_bit_exact(project, out, sanitize=target == "host")


@pytest.mark.parametrize("target,board", [("rv32", "cv32e40p"), ("gap8", None)])
def test_levels_are_bit_exact_under_qemu(target, board, tmp_path, host_cc):
    for tool in ("riscv64-unknown-elf-gcc", "qemu-system-riscv32"):
        require_tool(tool)
    out = tmp_path / "proj"
    project = mcugen.build(shared_model("resnet8"), target=target, board=board, out=out,
                           input_range=MODELS["resnet8"], scheme="power", wbits=4, abits=4,
                           act_storage="levels")
    assert stored(project)
    check_bit_exact(project, out, n=4, on="qemu")


def test_levels_stream_bit_exact_through_the_hls_dataflow(tmp_path, host_cc):
    """io stream: the ports carry the stored values (8 bits, no longer 4), every layer streams."""
    require_tool("g++")
    out = tmp_path / "hls"
    project = build_hls(residual(tmp_path / "m.onnx"), out, io="stream", fit=True,
                        input_range=(-1.0, 1.0), act_storage="levels", **A4)
    assert stored(project) and set(kinds(project).values()) == {"conv", "add", "pool", "dense"}
    assert_roms_fit_their_widths(out)
    assert_bit_exact(project, out, n=6)


def test_levels_are_bit_exact_on_the_rtl(tmp_path, host_cc):
    """The CORE-V SIMD kernels reading stored levels (the default on cv32e40p), on the RTL."""
    for tool in ("riscv64-unknown-elf-gcc", "verilator", "g++"):
        require_tool(tool)
    out = tmp_path / "proj"
    project = mcugen.build(shared_model("mnist8"), target="rv32", board="cv32e40p", out=out,
                           input_range=MODELS["mnist8"], scheme="power", wbits=4, abits=4)
    assert stored(project)
    assert {project.plan[s.name].get("simd") for s in project.schedule.steps} & {"b", "ub"}
    result = compare(out, project.schedule, verify_inputs(project.schedule, 1, seed=2), on="rtl")
    assert result.n == 3 and result.mismatches == 0, result.first


def test_reports_count_codes_not_stored_values(tmp_path):
    codes, levels = both(every_kind_model(tmp_path / "kinds.onnx"), input_range=(-1.0, 1.0), **A4)
    for a, b in zip(codes.schedule.steps, levels.schedule.steps):
        for key in ("abits", "encoder_max_code_error", "acc_bound", "ln_max_code_error",
                    "ln_max_error", "ln_bound_ratio", "ln_max_output_error"):
            assert a.info.get(key) == b.info.get(key), (a.name, key)


def pooled_output(path):
    """Conv -> Relu -> GlobalAveragePool: the network's output is an encoded tensor."""
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["y"], name="pool")]
    inits = [("w", rng.normal(size=(4, 2, 3, 3))), ("b", rng.normal(size=4) * 0.1)]
    return save(make_model(nodes, [tensor("x", [1, 2, 5, 5])], [tensor("y", [1, 4, 1, 1])], inits),
                path)


def test_an_encoded_network_output_stored_as_levels(tmp_path, host_cc):
    codes, levels = both(pooled_output(tmp_path / "pool.onnx"), input_range=(-1.0, 1.0), **A4)
    assert levels.schedule.output["kind"] == "codes" and stored(levels)
    # the host maps each stored value to its real value: the same reals as the codes gave
    assert len(levels.schedule.output["values"]) == levels.qgraph.encodings["y"].B + 1
    x = verify_inputs(codes.schedule, 40, seed=3)
    assert np.array_equal(codes.run(x), levels.run(x))
    out = tmp_path / "proj"
    project = mcugen.build(tmp_path / "pool.onnx", out=out, input_range=(-1.0, 1.0),
                           act_storage="levels", **A4)
    check_bit_exact(project, out, sanitize=True)
