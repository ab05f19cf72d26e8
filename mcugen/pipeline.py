"""The whole job: model.onnx -> Graph -> QGraph -> Schedule -> project, with a report."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mcugen.boards import get_board, narrow_decode
from mcugen.codegen.project import check_destination, write_project
from mcugen.errors import MCUGenError
from mcugen.frontend.onnx_reader import import_model, read_model
from mcugen.lower.decode_width import check_decode_bits
from mcugen.lower.encoders import EXACT_ENCODERS
from mcugen.lower.lowering import lower
from mcugen.ops.softmax import apply_output_transform
from mcugen.passes import run_flow
from mcugen.quant.calibrate import check_calibration, coerce_inputs, synthetic_inputs
from mcugen.quant.lanes import ACT_GRIDS, ACT_STORAGES, LANE_CHOICES
from mcugen.quant.methods import quantize
from mcugen.quant.power import SCHEMES
from mcugen.quant.qgraph import METHODS, QuantOptions, simulated_run
from mcugen.reference.float_ir import run_float
from mcugen.reference.interpreter import run
from mcugen.report import build_report
from mcugen.targets import TARGETS, get_target



@dataclass
class Project:
    """A built model: its Schedule (the contract), report, and where it was written."""
    schedule: object
    report: dict
    qgraph: object = None
    out: Path | None = None
    notes: list = field(default_factory=list)

    def run(self, x, raw=False):
        """The bit-exact reference on float inputs (N, ...) -> outputs."""
        return run(self.schedule, x, raw=raw)

    def run_simulated(self, x):
        """Simulated quantization in float (dequantized weights and activations)."""
        x = coerce_inputs(x, self.schedule.input["shape"])
        return apply_output_transform(self.qgraph.graph.output_transform,
                                      simulated_run(self.qgraph, x))


def check_board_target(target, board):
    if board is not None and target not in board.get("targets", []):
        raise MCUGenError(f"board '{board['name']}' does not take target '{target}' "
                          f"(it takes: {', '.join(board.get('targets', []))})")


def check_options(target, options: QuantOptions, board=None, calib_given=False):
    if target not in TARGETS:
        raise MCUGenError(f"unknown target '{target}'; known: {', '.join(TARGETS)}")
    check_board_target(target, board)
    if options.method not in METHODS:
        raise MCUGenError(f"unknown method '{options.method}'; known: {', '.join(METHODS)}")
    if options.method == "nupes" and not calib_given:
        check_calibration(None, "nupes")
    if options.scheme not in SCHEMES:
        raise MCUGenError(f"unknown scheme '{options.scheme}'; known: {', '.join(SCHEMES)}")
    for name in ("wbits", "abits"):
        if not 2 <= getattr(options, name) <= 8:
            raise MCUGenError(f"--{name} must be between 2 and 8")
    if options.act_grid not in ACT_GRIDS:
        raise MCUGenError(f"--act-grid takes {', '.join(ACT_GRIDS)}, not '{options.act_grid}'")
    if options.act_storage not in ACT_STORAGES:
        raise MCUGenError(f"--act-storage takes {', '.join(ACT_STORAGES)}, not "
                          f"'{options.act_storage}'")
    if options.exponent not in ("auto", "per-layer"):
        try:
            value = float(options.exponent)
        except (TypeError, ValueError):
            raise MCUGenError("--exponent takes auto, per-layer or a number such as 0.7") from None
        if not 0.05 <= value <= 4.0:
            raise MCUGenError("--exponent must be between 0.05 and 4")


def resolve_lanes(lanes, board, target) -> int:
    """--lanes as the quantizer takes it (quant/lanes.py): 8, or 0 for levels as the grid has
    them. auto: 8 where operands of 8 bits are the fast path (a SIMD board's 4 x 8-bit dot
    products, a FPGA's fabric multipliers), else 0."""
    lanes = str(lanes)
    if lanes not in LANE_CHOICES:
        raise MCUGenError(f"--lanes takes {', '.join(LANE_CHOICES)}, not '{lanes}'")
    if lanes == "auto":
        return 8 if board.get("simd") or target == "hls" else 0
    return 8 if lanes == "8" else 0


def resolve_act_storage(storage, board, lanes) -> str:
    """--act-storage as the quantizer takes it: levels or codes. auto: levels on boards with SIMD
    lanes (with lanes 8), where a conv then gathers 8-bit values with no decode table; the hls
    target keeps codes, whose stream ports are narrower (DESIGN section 1, levels storage)."""
    if storage == "auto":
        return "levels" if board.get("simd") and lanes == 8 else "codes"
    return storage


def safe_file_label(path) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", Path(str(path)).name)[:60] or "model"


def check_fit(target, schedule, board, plan, weights_in=None) -> None:
    short = target.shortfalls(schedule, board, plan, weights_in)
    if short:
        raise MCUGenError(f"the model does not fit board '{board['name']}': "
                          f"{'; '.join(text for _, text in short)}; {target.fit_advice()}")


def _resolve_board(target, board):
    if isinstance(board, dict):                 # a board description given directly
        return board
    return get_board(board or TARGETS[target].default_board) if target in TARGETS else None


def schedule_storage(schedule):
    return "codes" if any(s.params.get("w_codes") for s in schedule.steps) else "decoded"


def lower_for_board(qgraph, board, weight_storage, target, mac_tables="auto", encoder="auto",
                    max_code_error=1, target_options=None, decode_bits="auto"):
    """Lower with the requested weight storage; `auto` keeps decoded weights (fastest) when
    they fit the board's flash and packs the codes when only those fit. Encoders `auto` fall
    back to `auto-small` (the smallest tables) before the weights are packed. `mac_tables`: auto
    uses product tables where they fit (the most faithful), separable never (the fastest).
    `encoder` and `max_code_error` choose the encoders (mcugen/lower/encoders). On a board with
    SIMD dot products (board `simd`) or fabric multipliers for narrow operands (an FPGA's
    `narrow_decode`), `decode_bits` auto chooses 8- or 16-bit decode tables per layer and `mac_tables` auto means separable (a SIMD lane beats a table look-up); elsewhere
    auto keeps the widest tables (lower/decode_width.py).
    Returns the schedule, the target's plan of its kernels, and where its weights are read from
    at run time (Target.weights_placement)."""
    if weight_storage not in ("auto", "decoded", "codes"):
        raise MCUGenError("--weight-storage takes codes, decoded or auto")
    if mac_tables not in ("auto", "separable"):
        raise MCUGenError("--mac-tables takes auto or separable")
    if max_code_error not in (0, 1):
        raise MCUGenError("--max-code-error takes 0 (exact encoders only) or 1")
    if weight_storage == "codes" and not target.packed_weights:
        raise MCUGenError(f"--weight-storage codes is not supported by the {target.name} target "
                          f"yet (its kernels read decoded weights); use decoded")
    first = target.storage_first if weight_storage == "auto" else weight_storage
    first = first if target.packed_weights else "decoded"
    simd = bool(board.get("simd"))
    products = target.product_tables and mac_tables == "auto" and not simd
    decode_bits = check_decode_bits(decode_bits)
    if decode_bits == "auto" and not (simd or narrow_decode(board)):
        decode_bits = "wide"
    # the fastest first; then the smallest exact encoders on coarse grids (threshold: bracket's
    # cells cost bytes), then smaller encoder tables (a few % of the instructions), then packed
    # weights (~40% more instructions), each only when the board is short
    exact = [target.exact_encoders] + (
        [EXACT_ENCODERS] if encoder == "auto" and target.exact_encoders != EXACT_ENCODERS else [])
    attempts = [(first, encoder, e) for e in exact] + \
        ([(first, "auto-small", EXACT_ENCODERS)] if encoder == "auto" else [])
    if weight_storage == "auto" and target.packed_weights and first == "decoded":
        attempts += [("codes", choice, e) for _, choice, e in attempts]
    short = []
    for storage, choice, exact_encoders in attempts:
        if storage != first and short != ["flash"]:
            break                               # packed weights only save flash
        schedule = lower(qgraph, weight_storage=storage, product_tables=products, encoder=choice,
                         max_code_error=max_code_error, decode_bits=decode_bits,
                         exact_encoders=exact_encoders)
        plan = target.plan(schedule, board, target_options)
        short = [mem for mem, _ in target.shortfalls(schedule, board, plan)]
        if not short:
            break
    placement = target.weights_placement(schedule, board, plan)
    if placement != board.get("weights_in", "flash"):
        # where the weights live can change the kernels (GAP8 streams them from L3 to the band
        # kernel): the build's plan is the one made for its placement
        schedule.meta["weights_in"] = placement
        plan = target.plan(schedule, board, target_options)
    check_fit(target, schedule, board, plan, placement)
    return schedule, plan, placement


def build(model, target="host", out=None, force=False, progress=None, board=None,
          weight_storage="auto", mac_tables="auto", encoder="auto", max_code_error=1,
          target_options=None, decode_bits="auto", **quant) -> Project:
    """`target_options`: the target's own options (e.g. the hls target's reuse and io)."""
    calib = quant.pop("calib", None)
    lanes = quant.pop("lanes", "auto")
    options = QuantOptions(**quant)
    board = _resolve_board(target, board)
    check_options(target, options, board, calib_given=calib is not None)
    options.lanes = resolve_lanes(lanes, board, target)
    chosen = get_target(target)
    options.act_storage = resolve_act_storage(options.act_storage, board, options.lanes)
    target_options = chosen.check_options(target_options or {})
    decode_bits = check_decode_bits(decode_bits)
    if out is not None:
        check_destination(Path(out), force)
    # no index encoder follows a log2 grid's 2^-B steps, and an exact build has only thresholds
    graph = run_flow(import_model(read_model(model)),
                     monotone_only=options.scheme == "log2" or max_code_error == 0)
    if calib is not None:
        options.calib = check_calibration(
            coerce_inputs(calib, graph.shapes[graph.input], "calibration samples"), options.method)
    qgraph = quantize(graph, options, progress=progress)
    schedule, plan, weights_in = lower_for_board(qgraph, board, weight_storage, chosen, mac_tables,
                                                 encoder, max_code_error, target_options,
                                                 decode_bits)
    schedule.meta = {"model": safe_file_label(model), "target": target, "board": board["name"],
                     "input_range": list(qgraph.input_range), "options": _options_record(options),
                     "weight_storage": schedule_storage(schedule),
                     "weights_in": weights_in,
                     "exponent": qgraph.exponent, "notes": qgraph.notes}
    if target_options:
        schedule.meta["target_options"] = target_options
    report = build_report(schedule)
    project = Project(schedule, report, qgraph, Path(out) if out else None, qgraph.notes)
    project.board, project.plan = board, plan
    report["totals"].update(realization_cost(project))
    chosen.report_extras(report, schedule, board, plan)
    if out is not None:
        _emit(project, chosen, force)
    return project


def realization_cost(project, n=32) -> dict:
    """How far the integer realization is from simulated quantization, and both from float,
    on the calibration (or synthetic) inputs: the loss from the integers themselves."""
    qgraph = project.qgraph
    graph = qgraph.graph
    x = qgraph.options.calib[:n] if qgraph.options.calib is not None else \
        synthetic_inputs(graph.shapes[graph.input], qgraph.input_range, qgraph.options.seed + 1, n)
    real = apply_output_transform(graph.output_transform, run_float(graph, x)[graph.output]).reshape(len(x), -1)
    sim = project.run_simulated(x).reshape(len(x), -1)
    integer = project.run(x).reshape(len(x), -1)
    scale = float(np.abs(real).max()) or 1.0
    record = {"int_vs_sim_max_abs_diff": float(np.abs(integer - sim).max()) / scale,
              "sim_vs_float_max_abs_diff": float(np.abs(sim - real).max()) / scale}
    if real.shape[1] > 1:
        record["int_vs_sim_top1_agreement"] = float((integer.argmax(1) == sim.argmax(1)).mean())
        record["int_vs_float_top1_agreement"] = float((integer.argmax(1) == real.argmax(1)).mean())
    return record


def _options_record(options):
    record = {k: v for k, v in vars(options).items() if k != "calib"}
    record["calib"] = options.calib is not None
    return record


def _emit(project, target, force):
    files = target.render(project.schedule, project.schedule.meta["model"], project.board,
                          project.plan)
    files["report.json"] = json.dumps(project.report, indent=1)

    def save_extra(directory):
        project.schedule.save(directory)
    write_project(project.out, files, save_extra, force)


def load_array(path, option: str) -> np.ndarray:
    """A .npy file given on the command line, or a one-line error naming the option."""
    if not Path(path).is_file():
        raise MCUGenError(f"{option} file '{path}' not found")
    try:
        return np.load(path, allow_pickle=False)
    except Exception:
        raise MCUGenError(f"{option} '{path}' is not a .npy array (save it with numpy.save)") from None


def load_inputs(path, shape):
    return coerce_inputs(load_array(path, "--inputs"), shape)
