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
Stages are interleaved (one run of each per round) so that load from other processes spreads
over all of them; CPU time (user+sys, this process and its children) is printed next to wall
time. Everything runs in a temporary directory, removed at the end.
"""
from __future__ import annotations

import argparse
import os
import resource
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
    """(wall s, CPU s) of fn(): CPU is this process's plus its children's user+sys time."""
    def cpu():
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + kids.ru_utime + kids.ru_stime
    t, c = time.perf_counter(), cpu()
    fn()
    return time.perf_counter() - t, cpu() - c


def stats(times):
    return statistics.median(times), min(times), max(times)


def loadavg():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


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

    stages = {"quantize + lower + report (out=None)": None,
              "full build (out=DIR, force)": None,
              "CLI `mcugen build` (subprocess)": None,
              "C compile: make (cc -O2 model.c main.c)": None}
    rows = {name: [] for name in stages}
    failed = []
    load = [loadavg()]
    with tempfile.TemporaryDirectory(prefix="mcugen-bench-") as tmp:
        out = Path(tmp) / "project"
        cli_out = Path(tmp) / "cli"
        cmd = [sys.executable, "-m", "mcugen", "build", model, "-o", str(cli_out), "--force",
               "--scheme", args.scheme, "--wbits", str(args.wbits), "--abits", str(args.abits),
               "--input-range", f"{lo}:{hi}"]

        def cli():
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"CLI build failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr}")

        def make():
            shutil.rmtree(out / "build" / "bench", ignore_errors=True)
            r = subprocess.run(["make", "-s", "-C", str(out), "BUILD=build/bench"],
                               capture_output=True, text=True)
            shutil.rmtree(out / "build" / "bench", ignore_errors=True)   # not mcugen's: --force would refuse
            if r.returncode != 0:
                raise RuntimeError(f"make failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")

        stages["quantize + lower + report (out=None)"] = lambda: mcugen.build(model, **opts)
        stages["full build (out=DIR, force)"] = \
            lambda: mcugen.build(model, out=out, force=True, **opts)
        stages["CLI `mcugen build` (subprocess)"] = None if args.no_cli else cli
        stages["C compile: make (cc -O2 model.c main.c)"] = make
        # interleaved (one run of every stage per round) so that load from other processes
        # spreads over all stages instead of hitting one
        for _ in range(args.runs):
            for name, fn in stages.items():
                if fn is None or name in failed:
                    continue
                try:
                    rows[name].append(timed(fn))
                except Exception as exc:          # noqa: BLE001 - report and go on
                    print(f"*** {name}: {exc}", file=sys.stderr)
                    failed.append(name)
        load.append(loadavg())
        sizes = {f.name: f.stat().st_size for f in out.iterdir() if f.is_file()} \
            if out.is_dir() else {}
        binary = out / "build" / "bench" / "model_test"
        bin_size = binary.stat().st_size if binary.is_file() else None
    rows = {k: v for k, v in rows.items() if v and k not in failed}

    print(f"## mcugen compile time: {args.model} ({args.scheme} W{args.wbits}A{args.abits}, "
          f"input_range {lo:g}:{hi:g}), {args.runs} runs")
    print()
    print(f"Host: {cc_version[0] if cc_version else cc}; Python {sys.version.split()[0]}.")
    print()
    print(f"1-minute load average: {load[0]:.2f} before, {load[1]:.2f} after (2 cores; this run "
          "adds about 1: well above that, other processes competed, so trust min and CPU).")
    print()
    print("| stage | median s | min s | max s | CPU median s |")
    print("|---|---|---|---|---|")
    for name, samples in rows.items():
        med, mn, mx = stats([w for w, _ in samples])
        print(f"| {name} | {med:.3f} | {mn:.3f} | {mx:.3f} | "
              f"{statistics.median(c for _, c in samples):.3f} |")
    a = rows.get("quantize + lower + report (out=None)")
    b = rows.get("full build (out=DIR, force)")
    if a and b:
        med = statistics.median(w for w, _ in b) - statistics.median(w for w, _ in a)
        mn = min(w for w, _ in b) - min(w for w, _ in a)
        cpu = statistics.median(c for _, c in b) - statistics.median(c for _, c in a)
        print(f"| emit: render + write (full - out=None) | {med:.3f} | {mn:.3f} (of mins) | | "
              f"{cpu:.3f} |")
    print()
    print("Generated files: " + ", ".join(f"{k} {v / 1024:.1f} KiB" for k, v in sorted(sizes.items()))
          + (f"; host binary {bin_size / 1024:.1f} KiB" if bin_size else ""))
    print()
    print(f"Run time: {time.perf_counter() - start:.1f} s.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
