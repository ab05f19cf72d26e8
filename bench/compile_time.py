"""Compile-time benchmark: how long `mcugen build` and the C compiler take on one model.

    python bench/compile_time.py [--model resnet8] [--runs 5] [--scheme power --wbits 4 --abits 8]

Stages, each timed over --runs runs (median, min, max wall time):
  1. quantize + lower + report  `mcugen.build(model, out=None)` (exponent search, calibration
                                on synthetic inputs, lowering, report; nothing written)
  2. full build                 `mcugen.build(model, out=DIR, force=True)` (stage 1 + render
                                the C project + write it, golden vectors included)
     emit                       stage 2 - stage 1 (difference of medians)
  3. CLI                        `mcugen build ... -o DIR --force` as a subprocess (adds Python
                                start-up and imports)
  4. C compile                  `make -s -C DIR BUILD=build/bench` (cc -O2 of model.c + main.c,
                                link), from a clean build directory each time
Everything runs in a temporary directory, removed at the end.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _data  # noqa: E402

import mcugen  # noqa: E402


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def stats(times):
    return statistics.median(times), min(times), max(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet8", choices=sorted(_data.INPUT_RANGES))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--scheme", default="power")
    ap.add_argument("--wbits", type=int, default=4)
    ap.add_argument("--abits", type=int, default=8)
    ap.add_argument("--no-cli", action="store_true", help="skip the CLI subprocess stage")
    args = ap.parse_args(argv)

    model = _data.model_path(args.model)
    lo, hi = _data.INPUT_RANGES[args.model]
    opts = dict(scheme=args.scheme, wbits=args.wbits, abits=args.abits, input_range=(lo, hi))
    cc = shutil.which("cc") or "cc"
    cc_version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.splitlines()
    start = time.perf_counter()

    # warm-up (imports, first-call caches) outside the measurements
    mcugen.build(model, **opts)

    rows = {}
    with tempfile.TemporaryDirectory(prefix="mcugen-bench-") as tmp:
        out = Path(tmp) / "project"
        rows["quantize + lower + report (out=None)"] = [
            timed(lambda: mcugen.build(model, **opts)) for _ in range(args.runs)]
        rows["full build (out=DIR, force)"] = [
            timed(lambda: mcugen.build(model, out=out, force=True, **opts))
            for _ in range(args.runs)]
        if not args.no_cli:
            cmd = [sys.executable, "-m", "mcugen", "build", model, "-o", str(out), "--force",
                   "--scheme", args.scheme, "--wbits", str(args.wbits), "--abits", str(args.abits),
                   "--input-range", f"{lo}:{hi}"]
            cli_times = []
            for _ in range(args.runs):
                t = time.perf_counter()
                r = subprocess.run(cmd, capture_output=True, text=True)
                cli_times.append(time.perf_counter() - t)
                if r.returncode != 0:
                    print(f"CLI build failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr}",
                          file=sys.stderr)
                    cli_times = None
                    break
            if cli_times:
                rows["CLI `mcugen build` (subprocess)"] = cli_times
            # the CLI may have failed half-way: leave a project of our own for the C stage
            mcugen.build(model, out=out, force=True, **opts)
        sizes = {f.name: f.stat().st_size for f in out.iterdir() if f.is_file()}
        make_times = []
        for _ in range(args.runs):
            shutil.rmtree(out / "build" / "bench", ignore_errors=True)
            t = time.perf_counter()
            r = subprocess.run(["make", "-s", "-C", str(out), "BUILD=build/bench"],
                               capture_output=True, text=True)
            make_times.append(time.perf_counter() - t)
            if r.returncode != 0:
                print(f"make failed ({r.returncode}):\n{r.stdout}\n{r.stderr}", file=sys.stderr)
                make_times = None
                break
        if make_times:
            rows["C compile: make (cc -O2 model.c main.c)"] = make_times
        binary = out / "build" / "bench" / "model_test"
        bin_size = binary.stat().st_size if binary.is_file() else None

    print(f"## mcugen compile time: {args.model} ({args.scheme} W{args.wbits}A{args.abits}, "
          f"input_range {lo:g}:{hi:g}), {args.runs} runs")
    print()
    print(f"Host: {cc_version[0] if cc_version else cc}; Python {sys.version.split()[0]}.")
    print()
    print("| stage | median s | min s | max s |")
    print("|---|---|---|---|")
    for name, times in rows.items():
        med, mn, mx = stats(times)
        print(f"| {name} | {med:.3f} | {mn:.3f} | {mx:.3f} |")
    a = rows.get("quantize + lower + report (out=None)")
    b = rows.get("full build (out=DIR, force)")
    if a and b:
        print(f"| emit (render + write; difference of medians) | "
              f"{statistics.median(b) - statistics.median(a):.3f} | | |")
    print()
    print("Generated files: " + ", ".join(f"{k} {v / 1024:.1f} KiB" for k, v in sorted(sizes.items()))
          + (f"; host binary {bin_size / 1024:.1f} KiB" if bin_size else ""))
    print()
    print(f"Run time: {time.perf_counter() - start:.1f} s.")
    return 0 if make_times and a and b else 1


if __name__ == "__main__":
    sys.exit(main())
