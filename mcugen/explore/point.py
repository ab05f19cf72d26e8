"""One point of a sweep: build its project, evaluate its integer reference, measure its cost.
Whatever goes wrong becomes the point's one-line error; the sweep goes on.

A point that does not fit the board is still measured, marked and kept: it is built against
the board with its flash and RAM unbounded (so with `auto` storage and encoders it is their
fastest choice), and the board's shortfall is recorded.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

import mcugen
from mcugen.boards import get_board
from mcugen.errors import MCUGenError
from mcugen.explore.evaluate import integer_outputs
from mcugen.explore.measure import measure_point
from mcugen.explore.metrics import accuracy_figures
from mcugen.explore.space import point_id
from mcugen.targets import get_target

UNBOUNDED = 1 << 40     # bytes: more than any budget a board states


@dataclass
class Context:
    """What every point of a sweep shares (sent once to each worker)."""
    model: str                    # absolute path
    target: str
    board: str
    seed: int
    measure: str                  # qemu | rtl | none (resolved)
    evaluate: str                 # host | reference (resolved)
    calib: np.ndarray
    eval_x: np.ndarray
    labels: np.ndarray | None
    float_out: np.ndarray         # (N, K): the float model on eval_x
    projects: str                 # absolute path of the directory of the points' projects


def run_point(context: Context, point: dict) -> dict:
    """The point's record: its options, status (ok, does not fit, error) and figures. BLAS runs
    on one thread: the exponent search moves with the thread count (bench/nupes.py), and a
    point must come out the same in any worker, local or on a cluster."""
    start = time.perf_counter()
    record = {"id": point_id(point), "options": point}
    try:
        with threadpool_limits(1):
            record.update(_measured(context, point, Path(context.projects) / record["id"]))
    except MCUGenError as exc:
        record.update(status="error", error=one_line(str(exc)))
    except Exception as exc:     # a bug in mcugen: the point reports it, the sweep goes on
        record.update(status="error", error=one_line(f"internal error: {type(exc).__name__}: {exc}"))
    record["seconds"] = round(time.perf_counter() - start, 2)
    return record


def one_line(text: str) -> str:
    return " ".join(text.split()) or "failed without a message"


def _measured(context: Context, point: dict, out: Path) -> dict:
    project, shortfall = build_point(context, point, out)
    outputs = integer_outputs(out, project, context.evaluate, context.eval_x)
    totals = project.report["totals"]
    figures = {"status": "does not fit" if shortfall else "ok", "fits": not shortfall,
               "shortfall": "; ".join(shortfall) or None,
               "project": f"{Path(context.projects).name}/{out.name}",
               "exponent": project.qgraph.exponent,
               "weight_storage_used": project.schedule.meta["weight_storage"],
               "flash_bytes": totals["flash_bytes"],
               "ram_bytes": totals["peak_ram_bytes"] + totals.get("kernel_stack_bytes", 0),
               "macs": totals["macs"]}
    figures.update(accuracy_figures(outputs, context.float_out, context.labels))
    cost = measure_point(out, project, context.measure, context.eval_x[:1])
    figures["cost"] = cost.get("cost")
    figures["model_o_bytes"] = cost.get("model_o_bytes")
    layer_costs = cost.get("layer_costs", {})
    figures["layers"] = [{"step": layer["step"], "op": layer["op"],
                          "flash_bytes": layer["const_bytes"], "cost": layer_costs.get(layer["step"])}
                         for layer in project.report["layers"]]
    return figures


def build_point(context: Context, point: dict, out: Path):
    """(project, shortfall phrases); the project is written to `out` either way."""
    board = get_board(context.board)
    options = dict(point, calib=context.calib, seed=context.seed)
    project = mcugen.build(context.model, target=context.target, board=unbounded(board),
                           out=out, force=True, **options)
    short = get_target(context.target).shortfalls(project.schedule, board, project.plan,
                                                   project.schedule.meta["weights_in"])
    if short and "auto" in (point.get("weight_storage"), point.get("encoder")):
        try:    # auto may fall back to smaller encoder tables or packed weights that do fit
            return mcugen.build(context.model, target=context.target, board=board, out=out,
                                force=True, **options), []
        except MCUGenError:
            pass
    return project, [text for _, text in short]


def unbounded(board: dict) -> dict:
    """The board with flash and RAM budgets no model exceeds (its other limits kept)."""
    board = copy.deepcopy(board)
    for name in ("flash", "ram"):
        if name in board.get("memory", {}):
            board["memory"][name]["bytes"] = UNBOUNDED
    return board
