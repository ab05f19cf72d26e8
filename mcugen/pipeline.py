"""The whole job: model.onnx -> Graph -> QGraph -> Schedule -> project, with a report."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mcugen.errors import MCUGenError
from mcugen.frontend.onnx_reader import import_model, read_model
from mcugen.lower.lowering import lower
from mcugen.passes import run_flow
from mcugen.quant.calibrate import coerce_inputs
from mcugen.quant.power import SCHEMES
from mcugen.quant.qgraph import QuantOptions, quantize
from mcugen.report import build_report

TARGETS = ("host",)


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
        from mcugen.reference.interpreter import run
        return run(self.schedule, x, raw=raw)

    def run_simulated(self, x):
        """Simulated quantization in float (dequantized weights and activations)."""
        from mcugen.ops.softmax import apply_output_transform
        from mcugen.quant.qgraph import simulated_run
        x = coerce_inputs(x, self.schedule.input["shape"])
        return apply_output_transform(self.qgraph.graph.output_transform,
                                      simulated_run(self.qgraph, x))


def check_options(target, options: QuantOptions):
    if target not in TARGETS:
        raise MCUGenError(f"unknown target '{target}'; known: {', '.join(TARGETS)}")
    if options.scheme not in SCHEMES:
        raise MCUGenError(f"unknown scheme '{options.scheme}'; known: {', '.join(SCHEMES)}")
    for name in ("wbits", "abits"):
        if not 2 <= getattr(options, name) <= 8:
            raise MCUGenError(f"--{name} must be between 2 and 8")
    if options.exponent not in ("auto", "per-layer"):
        try:
            value = float(options.exponent)
        except (TypeError, ValueError):
            raise MCUGenError("--exponent takes auto, per-layer or a number such as 0.7") from None
        if not 0.05 <= value <= 4.0:
            raise MCUGenError("--exponent must be between 0.05 and 4")


def safe_file_label(path) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", Path(str(path)).name)[:60] or "model"


def build(model, target="host", out=None, force=False, progress=None, **quant) -> Project:
    calib = quant.pop("calib", None)
    options = QuantOptions(**quant)
    check_options(target, options)
    if out is not None:
        from mcugen.codegen.project import check_destination
        check_destination(Path(out), force)
    graph = run_flow(import_model(read_model(model)))
    if calib is not None:
        options.calib = coerce_inputs(calib, graph.shapes[graph.input], "calibration samples")
    qgraph = quantize(graph, options, progress=progress)
    schedule = lower(qgraph)
    schedule.meta = {"model": safe_file_label(model), "target": target,
                     "input_range": list(qgraph.input_range), "options": _options_record(options),
                     "exponent": qgraph.exponent, "notes": qgraph.notes}
    report = build_report(schedule)
    project = Project(schedule, report, qgraph, Path(out) if out else None, qgraph.notes)
    if out is not None:
        _emit(project, target, force)
    return project


def _options_record(options):
    record = {k: v for k, v in vars(options).items() if k != "calib"}
    record["calib"] = options.calib is not None
    return record


def _emit(project, target, force):
    from mcugen.codegen import host
    from mcugen.codegen.project import write_project
    files = host.render(project.schedule, project.schedule.meta["model"])
    files["report.json"] = json.dumps(project.report, indent=1)

    def save_extra(directory):
        project.schedule.save(directory)
    write_project(project.out, files, save_extra, force)


def load_inputs(path, shape):
    path = Path(path)
    if not path.is_file():
        raise MCUGenError(f"inputs file '{path}' not found")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception:
        raise MCUGenError(f"'{path}' is not a .npy array (save inputs with numpy.save)") from None
    return coerce_inputs(data, shape)
