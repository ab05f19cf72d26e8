"""`mcugen explore` on resnet8: the default space, calibrated on 200 photo patches and
evaluated on 800 others (bench/_data.py; no labels, so accuracy is top-1 agreement with the
float model), on RV32IMC with instructions measured on qemu.

    python bench/explore.py [--jobs 2] [--space default] [--out DIR] [--md results.md]

Prints the Pareto points as a markdown table, the counts and the run time, and copies the
accuracy-vs-flash and accuracy-vs-instructions plots to docs/img/explore_resnet8*.png.
Deterministic (seeded data, seed 0, BLAS on one thread in every point): only seconds vary.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _data  # noqa: E402
from _markdown import emit, save  # noqa: E402

from mcugen.explore import explore  # noqa: E402
from mcugen.explore.outputs import pareto_table  # noqa: E402

IMG = Path(__file__).resolve().parent.parent / "docs" / "img"
N_EVAL, N_CALIB = 800, 200


def progress(done, total):
    print(f"\rpoints done: {done}/{total}", end="\n" if done == total else "", file=sys.stderr,
          flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--space", default="default")
    ap.add_argument("--out", type=Path, help="explore directory (default: a fresh temporary one)")
    ap.add_argument("--md", type=Path, help="also write the markdown to this file")
    ap.add_argument("--no-images", action="store_true", help="leave docs/img alone")
    args = ap.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="explore_resnet8_")) / "explore"
    x, calib = _data.resnet8_data(N_EVAL, N_CALIB)
    start = time.perf_counter()
    sweep = explore(_data.model_path("resnet8"), calib, x, target="rv32", space=args.space,
                    out=out, jobs=args.jobs, progress=progress, calib_path="calib.npy")
    seconds = time.perf_counter() - start
    records = sweep.records
    emit(f"## mcugen explore: resnet8, {args.space} space, rv32 ({sweep.meta['board']})")
    emit()
    emit(pareto_table(sweep.meta, records, sweep.fronts["pareto"]).split("\n\nbuild commands:")[0])
    emit()
    counts = {s: sum(r["status"] == s for r in records) for s in ("ok", "does not fit", "error")}
    emit(f"{sweep.total} points ({counts['ok']} ok, {counts['does not fit']} do not fit, "
         f"{counts['error']} failed), {len(sweep.fronts['pareto'])} on the Pareto front; "
         f"{N_CALIB} calibration / {N_EVAL} evaluation patches; --jobs {args.jobs}; "
         f"{seconds:.0f} s ({seconds / 60:.1f} min) in all, points {sum(r['seconds'] for r in records):.0f} "
         f"s of work. Results: {out}")
    for r in records:
        if r["status"] == "error":
            emit(f"- failed: {r['id']}: {r['error']}")
    save(args.md)
    if not args.no_images:
        IMG.mkdir(parents=True, exist_ok=True)
        shutil.copy(out / "accuracy_vs_flash.png", IMG / "explore_resnet8.png")
        shutil.copy(out / "accuracy_vs_cost.png", IMG / "explore_resnet8_instructions.png")
    return 1 if counts["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
