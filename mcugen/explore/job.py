"""`mcugen explore` as a function: check the inputs, open (or resume) the explore directory,
run the points that are not finished, and leave the results, plots and page."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from mcugen.codegen.project import resolve_out
from mcugen.errors import MCUGenError
from mcugen.explore.cluster import connect
from mcugen.explore.evaluate import resolve_evaluation
from mcugen.explore.measure import resolve_measure
from mcugen.explore.metrics import float_outputs, quality_metric
from mcugen.explore.outputs import write_outputs
from mcugen.explore.point import Context
from mcugen.explore.results import write_results
from mcugen.explore.space import load_space, point_id
from mcugen.explore.store import (FINISHED, PROJECTS, append_record, finished_records,
                                  logged_records, open_directory)
from mcugen.explore.sweep import run_points
from mcugen.frontend.onnx_reader import import_model, read_model
from mcugen.passes import run_flow
from mcugen.pipeline import _resolve_board, check_board_target
from mcugen.quant.calibrate import coerce_inputs
from mcugen.targets import get_target


@dataclass
class Sweep:
    out: Path
    meta: dict
    records: list            # finished points, in the space's order
    fronts: dict             # name -> ids (see results.fronts)
    total: int               # points in the space
    resumed: int             # points found finished at the start
    plots: list


class Interrupted(Exception):
    """Ctrl-C: `kept` points are saved in `out`."""
    def __init__(self, out, kept, total):
        super().__init__(f"interrupted: {kept} of {total} points are kept in {out}; run the same "
                         f"command again to finish the other {total - kept}")


def explore(model, calib, eval_x, labels=None, target="rv32", board=None, space="default",
            out="explore", jobs=1, force=False, seed=0, measure="auto", evaluate="auto",
            scheduler=None, progress=None, calib_path=None) -> Sweep:
    """calib, eval_x, labels: arrays. progress(done, total) after each point. Every check of
    the inputs comes before the directory is touched."""
    points = load_space(space)
    out = resolve_out(out)
    context, meta, config = _prepare(model, calib, eval_x, labels, target, board, seed, measure,
                                     evaluate, out, points)
    meta["calib_path"] = calib_path
    if jobs < 1:
        raise MCUGenError(f"--jobs takes a positive number of processes, not {jobs}")
    client = connect(scheduler) if scheduler else None
    try:
        open_directory(out, config, force)
        return _sweep(out, context, meta, config, points, jobs, client, progress)
    finally:
        if client is not None:
            client.close()


def _prepare(model, calib, eval_x, labels, target, board, seed, measure, evaluate, out, points):
    """The points' shared Context, the results' meta, and the config a rerun must match."""
    tgt, board_dict = _target_and_board(target, board)
    how = resolve_measure(measure, tgt, board_dict)
    evaluation = resolve_evaluation(evaluate, tgt)
    graph = _float_graph(model)
    calib, eval_x, labels = _check_data(graph, calib, eval_x, labels)
    with threadpool_limits(1):      # as every point (point.run_point)
        reference = float_outputs(graph, eval_x)
    meta = _meta(model, tgt.name, board_dict["name"], seed, how, reference, labels)
    meta["evaluated_on"] = evaluation
    config = {"model_sha256": _digest(Path(model).read_bytes()), "target": tgt.name,
              "board": board_dict["name"], "seed": seed, "measure": how, "space": points,
              "calib_sha256": _array_digest(calib), "eval_sha256": _array_digest(eval_x),
              "labels_sha256": None if labels is None else _array_digest(labels)}
    context = Context(str(Path(model).resolve()), tgt.name, board_dict["name"], seed, how,
                      evaluation, calib, eval_x, labels, reference, str(out / PROJECTS))
    return context, meta, config


def _sweep(out, context, meta, config, points, jobs, client, progress) -> Sweep:
    """Run the points not finished yet; results rewritten as each one completes."""
    ids = {point_id(p) for p in points}
    finished = {k: v for k, v in finished_records(out).items() if k in ids}
    resumed = len(finished)
    written = write_results(out, config, meta, points, finished)

    def done(record):
        append_record(out, record)
        finished[record["id"]] = record
        written.update(write_results(out, config, meta, points, finished))
        if progress:
            progress(len(finished), len(points))
    if progress:
        progress(len(finished), len(points))
    try:
        run_points(context, [p for p in points if point_id(p) not in finished], done, jobs,
                   client)
    except KeyboardInterrupt:       # it may have cut a point's recording short: the log rules
        kept = {k: v for k, v in logged_records(out).items() if k in ids}
        write_results(out, config, meta, points, kept)
        raise Interrupted(out, sum(r["status"] in FINISHED for r in kept.values()),
                          len(points)) from None
    plots = write_outputs(out, meta, written["records"], written["fronts"])
    return Sweep(out, meta, written["records"], written["fronts"], len(points), resumed, plots)


def _target_and_board(target, board):
    tgt = get_target(target)
    board_dict = _resolve_board(tgt.name, board)
    check_board_target(tgt.name, board_dict)
    return tgt, board_dict


def _float_graph(model):
    if not Path(model).is_file():
        raise MCUGenError(f"model file '{model}' not found")
    return run_flow(import_model(read_model(model)))


def _check_data(graph, calib, eval_x, labels):
    shape = graph.shapes[graph.input]
    calib = coerce_inputs(calib, shape, "calibration samples")
    eval_x = coerce_inputs(eval_x, shape, "evaluation inputs")
    if not np.isfinite(eval_x).all():
        raise MCUGenError("evaluation inputs hold NaN or infinite values: remove them from --eval")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.dtype.kind not in "iu" or labels.shape != (len(eval_x),):
            raise MCUGenError(f"--labels must be {len(eval_x)} integer class indices, one per "
                              f"evaluation input (got {labels.dtype} {list(labels.shape)})")
    return calib, eval_x, labels


def _meta(model, target, board, seed, how, reference, labels) -> dict:
    quality, higher = quality_metric(labels, reference.shape[1])
    cost = get_target(target).cost_spec(how)
    figures = [quality] + (["float_agreement"] if reference.shape[1] > 1 else [])
    figures = list(dict.fromkeys(figures + ["output_error", "flash_bytes", "ram_bytes", "exponent",
                                            "weight_storage_used", "macs"]))
    figures += (["cost"] if cost else []) + (["model_o_bytes"] if how in ("qemu", "rtl") else [])
    float_top1 = (float(np.mean(reference.argmax(1) == labels))
                  if labels is not None and reference.shape[1] > 1 else None)
    return {"model": Path(model).name, "model_path": str(model),
            "target": target, "board": board, "seed": seed, "measure": how, "cost": cost,
            "quality": quality, "higher_is_better": higher, "figures": figures,
            "float_quality": float_top1 if quality == "top1" else None,
            "n_eval": int(reference.shape[0])}


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _array_digest(array: np.ndarray) -> str:
    array = np.ascontiguousarray(array)
    return _digest(f"{array.dtype.str}{array.shape}".encode() + array.tobytes())


