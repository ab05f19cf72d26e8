"""The command line: build, simulate, verify, report, boards. Every user error is one line on
stderr and exit status 1; nothing is written unless the whole job succeeded."""
from __future__ import annotations

import inspect
import json
import os
import sys

import click
import numpy as np

from mcugen.boards import all_boards
from mcugen.codegen.project import require_project
from mcugen.errors import MCUGenError
from mcugen.explore import Interrupted, explore as run_explore
from mcugen.explore.outputs import pareto_table
from mcugen.ir.schedule import Schedule
from mcugen.lower.encoders import ENCODERS
from mcugen.pipeline import build as run_build, load_array, load_inputs
from mcugen.reference.interpreter import dequantize_output
from mcugen.report import format_report, merge_profile
from mcugen.targets import TARGETS, options_by_name, target_of
from mcugen.verify import compare, profile_record, verify_inputs

# where a built project can run (the --on values), over every target (each checks its own)
RTL_VERIFY_INPUTS = 4
ON_CHOICES = sorted({on for t in TARGETS.values() for on in t.run_choices()})


def _progress(label):
    def report(done, total):
        end = "\n" if done == total else ""
        if sys.stderr.isatty() or done == total:
            click.echo(f"\r{label}: {done}/{total}", err=True, nl=False)
            click.echo(end, err=True, nl=False)
    return report


def _input_range(text):
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(":"))
    except ValueError:
        raise MCUGenError(f"--input-range takes LO:HI, e.g. 0:255 (got '{text}')") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise MCUGenError(f"--input-range needs finite LO < HI (got '{text}')")
    return (lo, hi)


def target_options(targets):
    """A decorator adding every target's own options (Target.options) to a command, each once,
    its help led by the targets that take it. Unset, an option is None: the command passes on
    only those given, and the target fills in its defaults (Target.check_options)."""
    def add(command):
        union = options_by_name(targets)
        clash = [name for name in union if name in inspect.signature(command).parameters]
        if clash:      # the command's own option would be shadowed
            raise MCUGenError(f"a target declares --{clash[0]}, an option of `{command.__name__}`")
        for name, takers in reversed(union.items()):
            command = click.option(takers[0][1].flag, name, default=None,
                                   help=_option_help(takers), **_value_kind(takers[0][1]))(command)
        return command
    return add


def _value_kind(option) -> dict:
    if option.is_flag:
        return {"is_flag": True}
    return {"type": click.Choice(list(option.choices)) if option.choices else option.type}


def _option_help(takers) -> str:
    """'hls: what it does [default: 16]', with each target's default where they differ."""
    names = ", ".join(name for name, _ in takers)
    text = f"{names}: {takers[0][1].help}"
    if takers[0][1].is_flag:
        return text
    defaults = {str(option.default) for _, option in takers}
    if len(defaults) == 1:
        return f"{text}  [default: {defaults.pop()}]"
    return f"{text}  [default: {', '.join(f'{name} {option.default}' for name, option in takers)}]"


@click.group()
@click.version_option(package_name="mcugen")
def cli():
    """mcugen: power-quantized, integer-only C from ONNX, bit-exact against its reference."""


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", default="host", show_default=True, type=click.Choice(list(TARGETS)),
              help="; ".join(f"{t.name}: {t.description}" for t in TARGETS.values()))
@click.option("--board", help="a board from `mcugen boards` (default: the target's own)")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="output project directory")
@click.option("--scheme", default="power", show_default=True, type=click.Choice(["power", "uniform", "log2"]))
@click.option("--wbits", default=8, show_default=True, type=int)
@click.option("--abits", default=8, show_default=True, type=int)
@click.option("--exponent", default="auto", show_default=True, help="auto | per-layer | a number")
@click.option("--first-last-bits", default="8", show_default=True, type=click.Choice(["8", "same"]))
@click.option("--objective", default="normalized", show_default=True, type=click.Choice(["normalized", "sum"]),
              help="exponent search objective")
@click.option("--method", default="powerquant", show_default=True, type=click.Choice(["powerquant", "nupes"]),
              help="powerquant: data-free exponent search; nupes: exponent, scales, rounding and bias "
                   "learned layer by layer on --calib samples (docs/nupes.md)")
@click.option("--calib", type=click.Path(dir_okay=False), help="calibration samples (.npy)")
@click.option("--percentile", type=float, help="activation range = this percentile of |x| (default: max)")
@click.option("--input-range", help="LO:HI of the model's input values, without --calib")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--weight-storage", default="auto", show_default=True, type=click.Choice(["auto", "decoded", "codes"]),
              help="decoded integers (fastest) or packed b-bit codes decoded on the fly (smallest flash); "
                   "auto: decoded when it fits the board")
@click.option("--mac-tables", default="auto", show_default=True, type=click.Choice(["auto", "separable"]),
              help="auto: a table of exact products where both grids are small (W4A4; the most "
                   "faithful, about 1.4x the instructions there); separable: two decode tables "
                   "everywhere (the fastest)")
@click.option("--decode-bits", default="auto", show_default=True, type=click.Choice(["auto", "8", "16"]),
              help="width of the decoded weights and inputs of MAC layers: 8 (4 x 8-bit SIMD lanes, "
                   "coarser power tables), 16 (2 x 16-bit lanes); auto: per layer on SIMD boards and "
                   "FPGAs (8 where it costs little weight error, see the report), the widest elsewhere")
@click.option("--lanes", default="auto", show_default=True, type=click.Choice(["auto", "8", "16"]),
              help="8: 4-bit weight levels and A4-A6 power levels rounded to 8-bit integers, and "
                   "wider weights uniform unless that costs more than a bit, so decoded values ride "
                   "8-bit SIMD lanes or FPGA fabric; 16: levels as the grid has them; auto: 8 on "
                   "SIMD boards and FPGAs")
@click.option("--act-grid", default="auto", show_default=True, type=click.Choice(["auto", "power", "uniform"]),
              help="each activation's grid: power (the scheme's), uniform (a = 1: 8-bit lanes at "
                   "A8), auto: per tensor, the grid in 8-bit lanes where its error on the "
                   "calibration samples is within 4x the best, one bit (with --lanes 8; else power)")
@click.option("--act-storage", default="auto", show_default=True,
              type=click.Choice(["auto", "levels", "codes"]),
              help="how activations on a power grid in 8-bit lanes (A4-A6) are stored: levels (their "
                   "8-bit values: convs read them with no decode table) or codes; same values "
                   "either way; auto: levels on SIMD boards")
@click.option("--encoder", default="auto", show_default=True,
              type=click.Choice(["auto", *ENCODERS]),
              help="how accumulators become the next layer's codes: threshold (exact, monotone "
                   "activations), lut (index + table), pade (index + arithmetic), bracket (exact, "
                   "monotone: index + table + one threshold); auto: per layer, the smallest "
                   "constants within the error budget, exact on grids under 7 bits (docs/encoders.md)")
@click.option("--max-code-error", default=1, show_default=True, type=click.IntRange(0, 1),
              help="worst code error an encoder may make against the float encoder, over every "
                   "accumulator value (0: exact)")
@target_options(TARGETS.values())
@click.option("--force", is_flag=True, help="replace a project mcugen made earlier")
def build(model, target, board, out, scheme, wbits, abits, exponent, first_last_bits, objective,
          method, calib, percentile, input_range, seed, weight_storage, mac_tables, decode_bits,
          lanes, act_grid, act_storage, encoder, max_code_error, force, **given):
    """Quantize MODEL, lower it and emit a buildable project in OUT."""
    calib_data = load_array(calib, "--calib") if calib else None
    # `given`: the targets' own options (target_options above); the chosen target checks them
    target_options = {name: value for name, value in given.items() if value is not None}
    project = run_build(model, target=target, board=board, out=out, force=force,
                        target_options=target_options,
                        weight_storage=weight_storage, mac_tables=mac_tables,
                        decode_bits=decode_bits, lanes=lanes, act_grid=act_grid,
                        act_storage=act_storage,
                        encoder=encoder, max_code_error=max_code_error, progress=_progress(
                            "NUPES, layers done" if method == "nupes" else "exponent search"),
                        scheme=scheme, wbits=wbits, method=method,
                        abits=abits, exponent=exponent,
                        first_last_bits=8 if first_last_bits == "8" else "same",
                        objective=objective, calib=calib_data, percentile=percentile,
                        input_range=_input_range(input_range), seed=seed)
    click.echo(format_report(project.report))
    click.echo(f"wrote {out} (target {target}); next: mcugen verify {out}")


@cli.command()
@click.argument("project", type=click.Path(file_okay=False))
@click.option("--inputs", type=click.Path(dir_okay=False), help="float inputs (.npy), (N, *input_shape) or (N, flat)")
@click.option("--output", type=click.Path(dir_okay=False), help="where to save the outputs (.npy)")
@click.option("--raw", is_flag=True, help="save the integer codes/accumulators instead of floats")
@click.option("--n", default=8, show_default=True, help="random inputs when --inputs is not given")
@click.option("--on", "on", default="host", show_default=True, type=click.Choice(ON_CHOICES),
              help="qemu: RV32IMC under qemu, recording per-layer instruction counts; rtl: the "
                   "CV32E40P RTL (rv32 and gap8 projects; SIMD kernels with --board cv32e40p or "
                   "gap8), recording per-layer cycles (gap8: each core's share, one core at a time)")
def simulate(project, inputs, output, raw, n, on):
    """Build the generated C and run it on every input (host cc, RV32 under qemu, or the CV32E40P RTL)."""
    path = require_project(project)
    schedule = Schedule.load(path)
    target = target_of(schedule)
    target.check_run_place(on, schedule)
    x = load_inputs(inputs, schedule.input["shape"]) if inputs else verify_inputs(schedule, n, 0)[2:]
    click.echo(f"compiling {path} for {on} ...", err=True)
    exe = target.build(path, on=on)
    click.echo(f"running {len(x)} inputs ...", err=True)
    run = target.run(exe, schedule, x.astype(np.float32), on=on)
    if on in ("qemu", "rtl"):
        _record_profile(path, schedule, run.profile, on)
    out = run.outputs.reshape((len(x),) + tuple(schedule.output["shape"][1:]))
    result = out if raw else dequantize_output(schedule, out)
    if output:
        np.save(output, result)
        click.echo(f"ran {len(x)} inputs; {'raw' if raw else 'float'} outputs {list(result.shape)} saved to {output}")
    else:
        click.echo(f"ran {len(x)} inputs; outputs {list(result.shape)} (--output y.npy saves them)")
    if not raw and result.ndim == 2 and result.shape[1] > 1:
        click.echo("predicted class per input: " + " ".join(map(str, result.argmax(axis=1))))
    elif not output:
        with np.printoptions(precision=4, suppress=True, linewidth=120, threshold=64):
            click.echo(str(result))


def _record_profile(path, schedule, profile, on):
    """profile.json: per-step instructions (qemu) or cycles (the RTL) of one inference on RV32,
    and the model's sections."""
    (path / "profile.json").write_text(json.dumps(profile_record(path, schedule, profile, on), indent=1))
    counted = "cycles" if on == "rtl" else "instructions"
    where = "the CV32E40P RTL" if on == "rtl" else "RV32IMC"
    click.echo(f"{counted} per inference on {where}: {profile.get('total'):,} "
               f"(per layer: mcugen report {path})")


@cli.command()
@click.argument("project", type=click.Path(file_okay=False))
@click.option("--n", type=int, help="random inputs over the calibrated range (default 200; 4 on "
              "the RTL, which simulates about a million cycles a second)")
@click.option("--inputs", type=click.Path(dir_okay=False), help="more inputs (.npy) to check")
@click.option("--seed", default=1, show_default=True)
@click.option("--sanitize", is_flag=True, help="build with -fsanitize=address,undefined")
@click.option("--on", "on", default="host", show_default=True, type=click.Choice(ON_CHOICES))
def verify(project, n, inputs, seed, sanitize, on):
    """Generated code == reference, bit for bit (exit 1 on the first difference)."""
    path = require_project(project)
    schedule = Schedule.load(path)
    extra = load_inputs(inputs, schedule.input["shape"]) if inputs else None
    if sanitize and on != "host":
        raise MCUGenError("--sanitize runs on the host only")
    if n is None:
        n = RTL_VERIFY_INPUTS if on == "rtl" else 200
    x = verify_inputs(schedule, n, seed, extra)
    click.echo(f"compiling and running {len(x)} inputs on {on}{' under ASan/UBSan' if sanitize else ''} ...", err=True)
    result = compare(path, schedule, x, sanitize=sanitize, on=on)
    if result.mismatches:
        click.echo(f"verify: FAILED, {result.mismatches} of {result.n} inputs differ; first: {result.first}")
        sys.exit(1)
    click.echo(f"verify: {result.n} inputs on {on}, 0 differences (bit-exact)")
    if result.dataflow:
        click.echo(f"dataflow cycle simulation: no deadlock with the planned FIFO depths; interval "
                   f"{result.dataflow['interval']:,} cycles, latency {result.dataflow['latency']:,}")


@cli.command()
@click.argument("project", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="machine-readable")
def report(project, as_json):
    """The per-layer table of a generated project."""
    path = require_project(project)
    data = json.loads((path / "report.json").read_text())
    if (path / "profile.json").is_file():
        merge_profile(data, json.loads((path / "profile.json").read_text()))
    click.echo(json.dumps(data, indent=1) if as_json else format_report(data))


@cli.command()
def boards():
    """The boards mcugen knows, with their memories."""
    for name, board in all_boards().items():
        mems = ", ".join(f"{k} {v['bytes']:,} B" for k, v in board.get("memory", {}).items())
        if "fpga" in board:
            f = board["fpga"]
            mems = (f"{f['part']} @ {f['clock_mhz']} MHz: DSP {f['dsp']:,}, BRAM_18K "
                    f"{f['bram_18k']:,}, LUT {f['lut']:,} (LUTRAM {f.get('lutram', 0):,}), FF {f['ff']:,}")
        click.echo(f"{name:14s} targets {','.join(board.get('targets', [])):10s} {mems}\n"
                   f"{'':14s} {board.get('description', '')}")


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--calib", required=True, type=click.Path(dir_okay=False),
              help="calibration samples (.npy), as for build")
@click.option("--eval", "eval_inputs", required=True, type=click.Path(dir_okay=False),
              help="evaluation inputs (.npy), kept apart from the calibration samples")
@click.option("--labels", type=click.Path(dir_okay=False),
              help="their classes (.npy of integers): accuracy is top-1; without, agreement "
                   "with the float model")
@click.option("--target", default="rv32", show_default=True, type=click.Choice(list(TARGETS)))
@click.option("--board", help="a board from `mcugen boards` (default: the target's own); points "
              "that do not fit it are marked, not dropped")
@click.option("--space", default="default", show_default=True,
              help="default | full | FILE.toml (docs/explore.md)")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(1),
              help="points built in parallel processes")
@click.option("--scheduler", help="tcp://HOST:PORT of a dask.distributed scheduler to run the "
              "points on (pip install 'mcugen[cluster]'; workers must see the same paths)")
@click.option("--measure", default="auto", show_default=True,
              type=click.Choice(["auto", "qemu", "rtl", "none"]),
              help="how each point's cost is counted: qemu (instructions, RV32IMC), rtl (cycles, "
                   "CV32E40P), none; auto: qemu for host/rv32, rtl on SIMD boards")
@click.option("--evaluate", default="auto", show_default=True,
              type=click.Choice(["auto", "host", "reference"]),
              help="what computes the integer outputs: the generated C on the host (checked "
                   "against the reference on 16 inputs; fast) or the Python reference; auto: host "
                   "for host/rv32")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False),
              help="explore directory (rerun to resume it)")
@click.option("--force", is_flag=True, help="replace an explore directory of another sweep")
def explore(model, calib, eval_inputs, labels, target, board, space, jobs, scheduler, measure,
            evaluate, seed, out, force):
    """Build MODEL over a space of configurations; tabulate and plot accuracy, flash, RAM and
    cost with the Pareto front."""
    try:
        sweep = run_explore(model, load_array(calib, "--calib"), load_array(eval_inputs, "--eval"),
                            load_array(labels, "--labels") if labels else None, target=target,
                            board=board, space=space, out=out, jobs=jobs, force=force, seed=seed,
                            measure=measure, evaluate=evaluate, scheduler=scheduler,
                            calib_path=calib,
                            progress=_progress("explore, points done"))
    except Interrupted as exc:
        click.echo(f"mcugen: {exc}", err=True)
        sys.exit(130)
    failed = [r for r in sweep.records if r["status"] == "error"]
    misfits = sum(r["status"] == "does not fit" for r in sweep.records)
    click.echo(pareto_table(sweep.meta, sweep.records, sweep.fronts["pareto"]))
    for record in failed:
        click.echo(f"failed: {record['id']}: {record['error']}")
    click.echo(f"explore: {sweep.total} points ({sweep.resumed} from an earlier run, {misfits} do "
               f"not fit {sweep.meta['board']}, {len(failed)} failed); results in {out} "
               f"(results.csv, index.html)")


def main():
    try:
        cli.main(standalone_mode=False)
    except MCUGenError as exc:
        click.echo(f"mcugen: error: {exc}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("mcugen: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug in mcugen: still one line unless asked for more
        if os.environ.get("MCUGEN_DEBUG"):
            raise
        click.echo(f"mcugen: internal error: {type(exc).__name__}: {exc} "
                   f"(set MCUGEN_DEBUG=1 for a traceback)", err=True)
        sys.exit(2)
