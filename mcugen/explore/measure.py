"""What a point costs to run, per inference and per layer, and what that figure is.

`qemu`: the project cross-compiled for RV32IMC runs one inference under qemu and minstret
counts its instructions, exactly (C targets on boards without SIMD instructions, which qemu
does not run). `rtl`: cycles of the CV32E40P RTL (SIMD boards; about a million cycles a
second). Without a run, the hls target has its latency estimate (a model). The run's outputs
are checked against the reference, so a measured point is also a verified one.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np

from mcugen.errors import MCUGenError
from mcugen.report import merge_profile
from mcugen.verify import compare, profile_record

MEASURES = ("auto", "qemu", "rtl", "none")


def resolve_measure(measure: str, target, board: dict) -> str:
    """`auto`: qemu for C targets on boards without SIMD, the RTL on SIMD boards, else none
    (GAP8 and HLS projects are not run: HLS has its estimate, GAP8 only flash and RAM)."""
    if measure not in MEASURES:
        raise MCUGenError(f"--measure takes {', '.join(MEASURES)}, not '{measure}'")
    if measure == "auto":
        if not target.host_harness:
            return "none"
        return "rtl" if board.get("simd") else "qemu"
    if measure != "none":
        target.check_run_place(measure)
        if measure == "qemu" and board.get("simd"):
            raise MCUGenError(f"board '{board['name']}' has SIMD kernels qemu cannot run: "
                              f"use --measure rtl or --measure none")
    return measure


def measure_point(path: Path, project, measure: str, x1: np.ndarray) -> dict:
    """{"cost", "layer_costs" (step -> count), "model_o_bytes"} of a built point; {} if none."""
    report = project.report
    if measure == "none":
        if "hls" not in report:
            return {}
        return {"cost": report["hls"]["latency_cycles"],
                "layer_costs": {layer["step"]: layer.get("cycles") for layer in report["layers"]}}
    profile = _run_profile(path, project.schedule, measure, x1)
    (path / "profile.json").write_text(json.dumps(profile, indent=1))   # as `mcugen simulate` does
    merged = merge_profile(copy.deepcopy(report), profile)
    key = "est_cycles" if "gap8_model" in report else {"rtl": "rtl_cycles"}.get(measure, "instructions")
    sections = profile["sections"]
    return {"cost": merged["totals"].get(key),
            "layer_costs": {layer["step"]: layer.get(key) for layer in merged["layers"]},
            "model_o_bytes": sections["text"] + sections["rodata"] + sections["data"]}


def _run_profile(path: Path, schedule, measure: str, x1: np.ndarray) -> dict:
    """One inference on qemu or the RTL, checked against the reference; profile.json's record."""
    result = compare(path, schedule, x1.astype(np.float32), on=measure)
    if result.mismatches:
        raise MCUGenError(f"the generated C on {measure} differs from the reference on the first "
                          f"evaluation input (run `mcugen verify {path} --on {measure}`)")
    return profile_record(path, schedule, result.profile, measure)
