"""CV32E40P RTL benchmark: cycle-exact figures of the SIMD kernels against the plain ones.

    python bench/rtl.py [--models resnet8,kws_dscnn,mnist8] [--configs "power W4A8,power W4A4"]
                        [--keep DIR] [--out FILE]

MEASURED: cycles of one inference on one OpenHW CV32E40P core, its RTL v1.8.3 (PyPI
pythondata-cpu-cv32e40p; its docs name release v1.8.3, its git describe v1.0.1-1764-g360d272:
printed at start) with COREV_PULP=1 and no FPU, under Verilator, every memory request
answered in the next cycle (ideal memory: zero wait states; a real SoC adds them). Per shared
model (models/, input ranges as in bench/riscv.py MODELS) and configuration, uniform
W8A8 (`--scheme uniform --wbits 8 --abits 8`), power W4A8 (`--scheme power --wbits 4 --abits 8`)
and power W4A4 (`--scheme power --wbits 4 --abits 4`), every other option at its default (first
and last MAC layers at 8-bit weights), two projects are built and each run once on the RTL:

    mcugen build M.onnx --target rv32 --board cv32e40p -o SIMD --input-range=LO:HI CONFIG
    mcugen build M.onnx --target rv32 -o PLAIN --input-range=LO:HI CONFIG
    mcugen simulate SIMD --on rtl --n 1;  mcugen report SIMD --json      (and the same for PLAIN)

SIMD: the CORE-V kernels (4 x 8-bit or 2 x 16-bit dot products); PLAIN: the default board
(rv32imc-qemu), whose RV32IMC kernels are the baseline on the same core. The input is the
seeded random input of `simulate --n 1` (seed 0); cycle counts are deterministic (the same ELF and
input give the same count), so one run each, no medians. Table 1 per (model, config): MACs,
cycles and MAC/cycle of both builds, the speed-up (plain / SIMD cycles), the largest conv (the
Conv layer with the most MACs, ties broken by the most weight bytes, the last of equals: its
step name, SIMD kernel and MAC/cycle under SIMD) and the decode widths of the SIMD build's MAC
layers. Table 2: resnet8 per layer, uniform W8A8 and power W4A8.

MODELLED (table 3, not a measurement): resnet8 on GAP8's 8-core cluster, from cycles measured
on the same RTL. Per configuration the GAP8 project itself is built and run there:

    mcugen build M.onnx --target gap8 -o GAP8 --input-range=LO:HI CONFIG
    mcugen simulate GAP8 --on rtl --n 1;  mcugen report GAP8 --json

`emu.mk`'s rtl goal builds the project's model.c (its cluster kernels, CORE-V instructions of the
ISA layer included) against the project's PMSIS emulation, which runs the 8 cores' shares of
every team fork one after the other on the one simulated core and reads mcycle around each
(ideal memory). The report's estimate (mcugen/cycle_model.py layer_cycles, constants in
boards/gap8.toml [cycle_model]) takes, per cluster layer, the busiest core's cycles in each fork
plus the cluster controller's own, adds the model's fork and task costs and the DMA (bytes at
dma_bytes_per_cycle + dma_setup_cycles per transfer, overlapped with compute when double
buffered); FC layers count their cycles at the FC clock. Measured: the per-core cycles. Modelled:
everything the cores share (DMA, TCDM bank conflicts: none, fork/barrier and task costs), and
RI5CY = CV32E40P cycle for cycle. The "all cores in turn" column is the sum over the steps of
their RTL cycles less the emulation's own (DMA copies, address tokens, the fork loop): the same
work on one core, against which the estimate's speed-up is given. PULP-NN's published 15.5
MAC/cycle (int8 conv, 8 cores) is printed beside the total.

A (model, config) whose build or run fails is left out of the tables and listed under them;
the script then exits with status 1.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _markdown import emit, emit_list, save, table
from riscv import MODELS, MODELS_DIR
from riscv import mcugen as mcugen_cli

DEFAULT_MODELS = ("resnet8", "kws_dscnn", "mnist8")
CONFIGS = {"uniform W8A8": ["--scheme", "uniform", "--wbits", "8", "--abits", "8"],
           "power W4A8": ["--scheme", "power", "--wbits", "4", "--abits", "8"],
           "power W4A4": ["--scheme", "power", "--wbits", "4", "--abits", "4"],
           # 8-bit power activations forced into 8-bit lanes (auto keeps them at 16 bits: an
           # 8-bit table merges neighbouring codes); the accuracy it costs is measured in the
           # README (NUPES, resnet8: agreement with float 86.3% -> 85.3% on 400 patches)
           "power W4A8 decode 8": ["--scheme", "power", "--wbits", "4", "--abits", "8",
                                   "--decode-bits", "8"]}
PER_LAYER = ("resnet8", ("uniform W8A8", "power W4A8"))    # table 2
GAP8_MODEL = "resnet8"                                     # table 3
SIMD_BOARD = "cv32e40p"
STARTED = time.monotonic()


def progress(text):
    print(f"[{time.monotonic() - STARTED:6.1f} s] {text}", file=sys.stderr, flush=True)


def build(model: str, config: list, out: Path, *target) -> None:
    lo, hi = MODELS[model]
    mcugen_cli("build", MODELS_DIR / f"{model}.onnx", *target, "-o", out, "--force",
               f"--input-range={lo}:{hi}", *config)


def rtl_report(model: str, config: list, out: Path, board: str | None) -> dict:
    """Build for rv32 (on `board`, or the default board), run once on the RTL, read the report."""
    build(model, config, out, "--target", "rv32", *(["--board", board] if board else []))
    mcugen_cli("simulate", out, "--on", "rtl", "--n", "1")
    return json.loads(mcugen_cli("report", out, "--json"))


def measure(model: str, config_name: str, root: Path) -> dict:
    config, tag = CONFIGS[config_name], config_name.replace(" ", "_")
    runs = {}
    for kind, board in (("simd", SIMD_BOARD), ("plain", None)):
        progress(f"{model} {config_name}: {kind} build + RTL run")
        runs[kind] = rtl_report(model, config, root / f"{model}_{tag}_{kind}", board)
    return runs


def largest_conv(report: dict) -> dict | None:
    """The Conv with the most MACs, then the most weight bytes; the last of equals."""
    best = None
    for layer in report["layers"]:
        if layer["op"] == "Conv" and layer["macs"]:
            if best is None or (layer["macs"], layer["weight_bytes"]) >= (best["macs"], best["weight_bytes"]):
                best = layer
    return best


def decode_summary(report: dict) -> str:
    """e.g. "8: 9 layers, 16: 2": how many MAC layers decode to each width."""
    counts = sorted(Counter(l["decode_bits"] for l in report["layers"]
                            if l["macs"] and l.get("decode_bits")).items())
    parts = [f"{bits}: {n}" for bits, n in counts]
    if not parts:
        return "-"
    return parts[0] + (" layer" if counts[0][1] == 1 else " layers") + "".join(", " + p for p in parts[1:])


def fmt(value, digits=3):
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def summary_row(model: str, config_name: str, runs: dict) -> list:
    simd, plain = runs["simd"]["totals"], runs["plain"]["totals"]
    conv = largest_conv(runs["simd"])
    conv_text = (f"{conv['step']} ({conv.get('kernel') or '-'}, {fmt(conv.get('macs_per_cycle'))})"
                 if conv else "-")
    return [model, config_name, fmt(simd["macs"]), fmt(simd["rtl_cycles"]), fmt(simd.get("macs_per_cycle")),
            fmt(plain["rtl_cycles"]), fmt(plain.get("macs_per_cycle")),
            f"{plain['rtl_cycles'] / simd['rtl_cycles']:.2f}x", conv_text, decode_summary(runs["simd"])]


def layer_rows(config_name: str, runs: dict) -> list:
    plain = {layer["step"]: layer for layer in runs["plain"]["layers"]}
    rows = []
    for layer in runs["simd"]["layers"]:
        other = plain.get(layer["step"], {})
        rows.append([config_name, layer["step"], layer["op"], layer.get("kernel") or "-", fmt(layer["macs"]),
                     fmt(layer.get("rtl_cycles")), fmt(layer.get("macs_per_cycle")),
                     fmt(other.get("rtl_cycles"))])
    return rows


def gap8_estimate(config_name: str, root: Path) -> dict:
    """The GAP8 project of GAP8_MODEL run on the RTL; its report's estimate (docstring)."""
    out = root / f"{GAP8_MODEL}_{config_name.replace(' ', '_')}_gap8"
    progress(f"{GAP8_MODEL} {config_name}: gap8 build + RTL run (emu.mk rtl)")
    build(GAP8_MODEL, CONFIGS[config_name], out, "--target", "gap8")
    mcugen_cli("simulate", out, "--on", "rtl", "--n", "1")
    report = json.loads(mcugen_cli("report", out, "--json"))
    profile = json.loads((out / "profile.json").read_text())
    if report.get("gap8_counts") != "cycles":
        raise SystemExit(f"{out}: the GAP8 estimate was not made from RTL cycles")
    steps = profile["cycles"]["steps"]
    in_turn = sum(steps[name] - counts["emulation"] for name, counts in profile["gap8"].items())
    totals, model = report["totals"], report["gap8_model"]
    return {"macs": totals["macs"], "one_core": in_turn, "cycles": totals["est_cycles"],
            "macs_per_cycle": totals["est_macs_per_cycle"], "cores": model["cores"],
            "bounds": Counter(layer["bound"] for layer in report["layers"] if "bound" in layer),
            "l3": bool(totals.get("l3_bytes")),
            "reference": model["reference_macs_per_cycle"]}


def gap8_rows(estimates: dict) -> list:
    rows = []
    for config_name, e in estimates.items():
        bounds = ", ".join(f"{k}: {v}" for k, v in sorted(e["bounds"].items()))
        config = config_name + (" (weights in L3)" if e["l3"] else "")
        rows.append([GAP8_MODEL, config, fmt(e["macs"]), fmt(e["one_core"]), fmt(e["cycles"]),
                     f"{e['one_core'] / e['cycles']:.2f}x", fmt(e["macs_per_cycle"]), bounds, fmt(e["reference"], 1)])
    return rows


def emit_tables(results: dict, estimates: dict) -> None:
    emit("### CV32E40P RTL, one core, ideal memory: SIMD (--board cv32e40p) vs plain RV32IMC kernels")
    emit()
    table(["model", "config", "MACs", "SIMD cycles", "SIMD MAC/cycle", "plain cycles", "plain MAC/cycle",
           "speed-up (plain/SIMD)", "largest conv (kernel, SIMD MAC/cycle)", "decode bits (MAC layers)"],
          [summary_row(model, name, runs) for (model, name), runs in results.items()])
    model, names = PER_LAYER
    layers = [row for name in names if (model, name) in results for row in layer_rows(name, results[model, name])]
    if layers:
        emit(f"### {model} per layer (CV32E40P RTL cycles, one core)")
        emit()
        table(["config", "step", "op", "SIMD kernel", "MACs", "SIMD cycles", "SIMD MAC/cycle", "plain cycles"], layers)
    if estimates:
        emit(f"### MODEL for the cluster: {GAP8_MODEL} on GAP8's 8 cores, from per-core cycles measured on the "
             "CV32E40P RTL")
        emit()
        emit("The `--target gap8` project run on the RTL (`simulate --on rtl`): each core's share of every fork "
             "measured in cycles, one core at a time, ideal memory; the fork, task and DMA costs are the model's "
             "(boards/gap8.toml [cycle_model]); no TCDM bank conflicts; RI5CY = CV32E40P cycle for cycle. "
             "All cores in turn: the steps' RTL cycles without the emulation's own. Bound: layers where compute "
             "or DMA dominates (fc: on the FC).")
        emit()
        table(["model", "config", "MACs", "RTL cycles, all cores in turn (steps)", "est. cluster cycles",
               "est. speed-up", "est. MAC/cycle (8 cores)", "layers bound by", "PULP-NN MAC/cycle (published)"],
              gap8_rows(estimates))


def check_tools() -> None:
    from mcugen.errors import MCUGenError
    from mcugen.rtl.simulator import rtl_version, verilator_version
    if shutil.which("riscv64-unknown-elf-gcc") is None:
        raise SystemExit("riscv64-unknown-elf-gcc not found: apt-get install gcc-riscv64-unknown-elf "
                         "picolibc-riscv64-unknown-elf")
    try:
        progress(f"RTL: {rtl_version()}; {verilator_version()}")
    except MCUGenError as error:
        raise SystemExit(str(error)) from None


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--configs", default=",".join(CONFIGS), help="a subset of: " + ", ".join(CONFIGS))
    ap.add_argument("--keep", help="keep the generated projects under this directory")
    ap.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    args = ap.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [m for m in args.models if m not in MODELS] + [c for c in args.configs if c not in CONFIGS]
    if unknown:
        ap.error(f"unknown model/config: {', '.join(unknown)} (models: {', '.join(MODELS)}; "
                 f"configs: {', '.join(CONFIGS)})")
    return args


def main(argv=None):
    args = parse_args(argv)
    check_tools()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="mcugen-bench-rtl"))
    results, estimates, failures = {}, {}, []
    try:
        for model in args.models:
            for name in args.configs:
                try:
                    results[model, name] = measure(model, name, root)
                    if model == GAP8_MODEL:
                        estimates[name] = gap8_estimate(name, root)
                except SystemExit as error:      # a failing mcugen command: go on with the others
                    progress(f"{model} {name}: FAILED\n{error}")
                    failures.append(f"{model} {name}: {last_line(str(error))}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    emit_tables(results, estimates)
    emit(f"Run time: {time.monotonic() - STARTED:.0f} s ({len(results) * 2 + len(estimates)} RTL runs).")
    emit_list("Failed (not in the tables):", failures)
    save(args.out)
    if failures:
        sys.exit(1)
    return results, estimates


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else text


if __name__ == "__main__":
    main()
