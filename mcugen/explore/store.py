"""The explore directory: what it holds, when it may be reused, and the finished points.

An explore directory is appendable by design: each finished point is appended to
points.jsonl as it completes, so an interrupted sweep keeps its work and a rerun of the same
sweep (same model, space, data, target, board, seed and measure: its `config`) goes on
where it stopped. Anything else in the way is refused unless --force, and even --force never
deletes a file explore did not write. Points that ended in an error are tried again on a
rerun (the cause may have been fixed); ok and does-not-fit points are not.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from mcugen.errors import MCUGenError

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
LOG = "points.jsonl"
PROJECTS = "projects"
INDEX = "index.html"
PLOTS = ("accuracy_vs_flash.png", "accuracy_vs_cost.png", "best_layers.png")
OWN = {RESULTS_JSON, RESULTS_CSV, LOG, PROJECTS, INDEX, *PLOTS}
MARKER = "mcugen_explore"      # results.json's key that says explore wrote it
FINISHED = ("ok", "does not fit")


def open_directory(out: Path, config: dict, force: bool) -> bool:
    """Make `out` ready for the sweep `config`; True when it resumes an earlier run."""
    if out.exists() and not out.is_dir():
        raise MCUGenError(f"'{out}' exists and is not a directory; choose another -o")
    entries = set(os.listdir(out)) if out.is_dir() else set()
    if not entries:
        _start(out, config)
        return False
    earlier = _earlier_config(out)
    if earlier is None:
        raise MCUGenError(f"'{out}' exists and is not an mcugen explore directory; choose another -o "
                          f"(mcugen never deletes what it did not write)")
    if earlier == config and not force:
        _drop_temporaries(out)
        return True
    if not force:
        differ = sorted(k for k in set(config) | set(earlier) if config.get(k) != earlier.get(k))
        raise MCUGenError(f"'{out}' holds a sweep of other inputs (different {', '.join(differ)}); "
                          f"pass --force to replace it or choose another -o")
    foreign = sorted(e for e in entries - OWN if not (e.startswith(".") and e.endswith(".partial")))
    if foreign:
        raise MCUGenError(f"'{out}' also holds '{foreign[0]}', which explore did not write; move it "
                          f"away or choose another -o")
    for name in entries:
        path = out / name
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    _start(out, config)
    return False


def _earlier_config(out: Path) -> dict | None:
    try:
        data = json.loads((out / RESULTS_JSON).read_text())
    except (OSError, ValueError):
        return None
    return data.get("config") if isinstance(data, dict) and data.get(MARKER) else None


def _start(out: Path, config: dict) -> None:
    (out / PROJECTS).mkdir(parents=True, exist_ok=True)
    write_atomic(out / RESULTS_JSON, json.dumps({MARKER: 1, "config": config, "points": []}, indent=1))


def _drop_temporaries(out: Path) -> None:
    """A point killed while its project was written leaves mcugen's temporary directory
    (.NAME.xxxx) beside the projects: the point is built again, so it goes."""
    projects = out / PROJECTS
    if projects.is_dir():
        for entry in projects.iterdir():
            if entry.name.startswith(".") and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)


def finished_records(out: Path) -> dict:
    """id -> the last record logged for it, of the points that need no rerun."""
    return {k: r for k, r in logged_records(out).items() if r.get("status") in FINISHED}


def logged_records(out: Path) -> dict:
    """id -> the last record logged for it."""
    records = {}
    log = out / LOG
    if not log.is_file():
        return records
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue            # the last line of a run killed while writing it
        if isinstance(record, dict) and "id" in record:
            records[record["id"]] = record
    return records


def append_record(out: Path, record: dict) -> None:
    """One line per finished point, flushed at once: what an interruption keeps."""
    with open(out / LOG, "a+b") as log:
        size = log.seek(0, os.SEEK_END)
        cut = size > 0 and log.seek(size - 1) >= 0 and log.read(1) != b"\n"
        line = ("\n" if cut else "") + json.dumps(record, sort_keys=True) + "\n"
        log.write(line.encode())      # after a line a kill cut short, on a line of its own
        log.flush()
        os.fsync(log.fileno())


def write_atomic(path: Path, text: str) -> None:
    """The file is the old one or the new one, never half of one."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)
