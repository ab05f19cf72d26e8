"""A target declares what it has: its build options (which become `mcugen build` options and
are checked generically), its report lines (which the report prints), where its projects run
(names in runners.RUN_PLACES); a board's SIMD ISA reaches the kernel plans, and one the plans
do not know is refused. Small models only: the whole file runs in a few seconds."""
import click
import pytest
from click.testing import CliRunner

import mcugen
from conftest import shared_model
from mcugen.boards import get_board
from mcugen.cli import cli, target_options
from mcugen.errors import MCUGenError
from mcugen.ir.schedule import Schedule
from mcugen.report import format_report
from mcugen.runners import RUN_PLACES, find_compiler
from mcugen.targets import TARGETS, get_target, options_by_name
from mcugen.targets.base import Target, TargetOption


class LanesTarget(Target):
    name = "lanes-fake"
    options = (TargetOption("lanes", "how many lanes a block takes", int, 2),
               TargetOption("order", "the loop order", str, "rows", ("rows", "columns")))


class ReuseTarget(Target):
    """Shares hls's --reuse, with its own default."""
    name = "reuse-fake"
    options = (TargetOption("reuse", "products per multiplier", int, 3),)


def one_line_error(call) -> str:
    with pytest.raises(MCUGenError) as caught:
        call()
    text = str(caught.value)
    assert "\n" not in text, text
    return text


# ---- options --------------------------------------------------------------------------------
def test_declared_options_are_checked_and_their_defaults_filled_in():
    target = LanesTarget()
    assert target.check_options({}) == {"lanes": 2, "order": "rows"}
    given = {"lanes": 8, "order": "columns"}
    assert target.check_options(given) == given
    assert "--order" in one_line_error(lambda: target.check_options({"order": "diagonal"}))
    assert "--lanes" in one_line_error(lambda: target.check_options({"lanes": "four"}))


def test_an_unknown_option_is_refused_in_one_line_naming_those_taken():
    text = one_line_error(lambda: LanesTarget().check_options({"reuse": 4}))
    assert "--reuse" in text and "--lanes" in text and "--order" in text
    text = one_line_error(lambda: get_target("host").check_options({"io": "stream"}))
    assert "host" in text and "takes no option --io" in text
    text = one_line_error(lambda: get_target("hls").check_options({"lanes": 2}))
    assert all(flag in text for flag in ("--lanes", "--reuse", "--io", "--fit"))


def test_hls_keeps_its_range_check():
    hls = get_target("hls")
    assert hls.check_options({"reuse": 1, "fit": True}) == {"reuse": 1, "io": "parallel",
                                                             "fit": True, "interval": 0,
                                                             "fps": 0.0}
    assert "--reuse must be" in one_line_error(lambda: hls.check_options({"reuse": 0}))


def test_a_fake_targets_option_joins_the_union_over_the_targets():
    union = options_by_name([*TARGETS.values(), LanesTarget(), ReuseTarget()])
    assert [name for name, _ in union["lanes"]] == ["lanes-fake"]
    assert [name for name, _ in union["reuse"]] == ["hls", "reuse-fake"]
    assert {"io", "fit"} <= set(union)


def test_targets_declaring_one_name_differently_are_refused():
    class FlagIo(Target):
        name = "flag-io"
        options = (TargetOption("io", "a flag this time", is_flag=True),)
    with pytest.raises(MCUGenError, match="--io"):
        options_by_name([get_target("hls"), FlagIo()])


def test_the_union_becomes_command_options_that_pass_on_only_what_is_given():
    seen = {}

    @click.command()
    @target_options([get_target("hls"), LanesTarget(), ReuseTarget()])
    def command(**given):
        seen.update(given)

    runner = CliRunner()
    help_text = " ".join(runner.invoke(command, ["--help"]).output.split())    # unwrapped
    assert "lanes-fake: how many lanes a block takes" in help_text
    assert "hls, reuse-fake:" in help_text             # one option, both targets named
    assert "hls 16" in help_text and "reuse-fake 3" in help_text   # each its own default
    done = runner.invoke(command, ["--lanes", "7", "--order", "columns", "--fit"])
    assert done.exit_code == 0, done.output
    assert seen == {"lanes": 7, "order": "columns", "fit": True, "reuse": None, "io": None,
                    "interval": None, "fps": None}
    assert runner.invoke(command, ["--order", "diagonal"]).exit_code != 0


def test_mcugen_build_help_shows_the_hls_options():
    text = " ".join(CliRunner().invoke(cli, ["build", "--help"]).output.split())
    for flag in ("--reuse", "--io", "--fit"):
        assert flag in text
    assert "hls: products per multiplier" in text


# ---- report lines ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reports():
    sine = shared_model("sine")
    return {name: mcugen.build(sine, target=name, input_range=(0.0, 6.2832)).report
            for name in TARGETS}


def test_format_report_prints_each_targets_report_lines(reports):
    assert set(reports) == set(TARGETS)
    for name, report in reports.items():
        lines = get_target(name).report_lines(report)
        text = format_report(report)
        if lines:
            assert "\n".join(lines) in text, name
    assert any("GAP8" in line for line in get_target("gap8").report_lines(reports["gap8"]))
    assert any("HLS estimate" in line for line in get_target("hls").report_lines(reports["hls"]))


def test_the_reports_target_chooses_the_lines(reports):
    gap8 = reports["gap8"]
    assert "GAP8: L1 up to" in format_report(gap8)
    assert "GAP8: L1 up to" not in format_report({**gap8, "target": "host"})
    hls = reports["hls"]
    assert "HLS estimate" in format_report(hls)
    assert "HLS estimate" not in format_report({**hls, "target": "host"})


# ---- SIMD ISAs --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sine_schedule():
    return mcugen.build(shared_model("sine"), target="rv32", board="cv32e40p",
                        input_range=(0.0, 6.2832)).schedule


@pytest.mark.parametrize("target, board", [("rv32", "cv32e40p"), ("gap8", "gap8")])
def test_an_unknown_simd_isa_is_refused(sine_schedule, target, board):
    typo = {**get_board(board), "simd": "xcorve"}
    text = one_line_error(lambda: get_target(target).plan(sine_schedule, typo))
    assert "xcorve" in text and "xcorev" in text and "xpulpv2" in text


def test_the_boards_isa_gives_the_simd_kernels_their_lanes(sine_schedule):
    plan = get_target("rv32").plan(sine_schedule, get_board("cv32e40p"))
    simd = [p for p in plan.values() if p.get("simd")]
    assert simd, "the cv32e40p board plans no SIMD kernel for sine"
    for p in simd:                 # 4 lanes of 8 bits or 2 of 16 bits in a 32-bit word
        assert p["padded_k"] == p["k_words"] * (2 if p["simd"] == "h" else 4)
    plain = get_target("rv32").plan(sine_schedule, get_board("rv32imc-qemu"))
    assert not any(p.get("simd") for p in plain.values())


# ---- run places -------------------------------------------------------------------------------
def test_the_run_places():
    assert {"host", "qemu", "rtl", "csim"} <= set(RUN_PLACES)
    for target in TARGETS.values():
        assert set(target.runs_on) <= set(RUN_PLACES), target.name
        assert "host" in target.run_choices(), target.name     # `--on host` is every default


def test_hls_runs_its_c_simulation_on_the_host(monkeypatch):
    hls = get_target("hls")
    place = hls.run_place("host")
    assert place is RUN_PLACES["csim"] and place.program == "csim"
    monkeypatch.setenv("CXX", "/opt/some/g++")
    assert find_compiler(place.compiler) == "/opt/some/g++"
    assert "runs on host, not 'qemu'" in one_line_error(lambda: hls.run_place("qemu"))


def test_act_storage_is_a_build_option_the_quantizer_gets(tmp_path):
    """--act-storage (not a target's option: every target takes it) reaches QuantOptions,
    resolved for the board: auto stores levels on a SIMD board."""
    text = " ".join(CliRunner().invoke(cli, ["build", "--help"]).output.split())
    assert "--act-storage [auto|levels|codes]" in text
    for given, stored in (("auto", "levels"), ("codes", "codes")):
        out = tmp_path / given
        done = CliRunner().invoke(cli, ["build", str(shared_model("mnist8")), "--target", "rv32",
                                        "--board", "cv32e40p", "--input-range", "0:255",
                                        "--wbits", "4", "--abits", "4", "--act-storage", given,
                                        "-o", str(out)])
        assert done.exit_code == 0, done.output
        assert Schedule.load(out).meta["options"]["act_storage"] == stored
    assert "act-storage" not in options_by_name(list(TARGETS.values()))
