"""results.json and results.csv: every point of the space that has finished, in the space's
order (so the table does not depend on which worker finished first), with the Pareto fronts.
The CSV holds no timings, so the same inputs and seed give the same table."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from mcugen.explore.pareto import front
from mcugen.explore.space import AXES, EXTRA_OPTIONS, point_id
from mcugen.explore.store import MARKER, RESULTS_CSV, RESULTS_JSON, write_atomic

FIGURES = ("top1", "float_agreement", "output_error", "flash_bytes", "ram_bytes", "cost",
           "model_o_bytes", "exponent", "weight_storage_used", "macs")
TAIL = ("pareto", "shortfall", "error", "project")


def fronts(records: list[dict], meta: dict) -> dict:
    """The fronts the plots highlight (two objectives each) and the one the table prints (all)."""
    quality = (meta["quality"], meta["higher_is_better"])
    return {"accuracy_vs_flash": front(records, [quality, ("flash_bytes", False)]),
            "accuracy_vs_cost": front(records, [quality, ("cost", False)]) if meta["cost"] else [],
            "pareto": front(records, [quality, ("flash_bytes", False), ("cost", False)])}


def ordered(space: list[dict], finished: dict) -> list[dict]:
    return [finished[point_id(p)] for p in space if point_id(p) in finished]


def write_results(out: Path, config: dict, meta: dict, space: list[dict], finished: dict) -> dict:
    """Both files from the finished records; returns {"records", "fronts"}."""
    records = ordered(space, finished)
    found = fronts(records, meta)
    for record in records:
        record["pareto"] = record["id"] in found["pareto"]
    data = {MARKER: 1, "config": config, "meta": meta, "fronts": found, "points": records}
    write_atomic(out / RESULTS_JSON, json.dumps(data, indent=1))
    write_atomic(out / RESULTS_CSV, csv_text(records, space, meta))
    return {"records": records, "fronts": found}


def columns(space: list[dict], meta: dict) -> list[str]:
    options = list(AXES) + [k for k in EXTRA_OPTIONS if any(k in p for p in space)]
    figures = [f for f in FIGURES if f in meta["figures"]]
    return ["id", "status", "fits"] + options + figures + list(TAIL)


def csv_text(records: list[dict], space: list[dict], meta: dict) -> str:
    names = columns(space, meta)
    rename = {"cost": meta["cost"]["column"]} if meta["cost"] else {}
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow([rename.get(n, n) for n in names])
    for record in records:
        row = dict(record.get("options", {}), **{k: v for k, v in record.items() if k != "options"})
        writer.writerow(["" if row.get(n) is None else row[n] for n in names])
    return text.getvalue()
