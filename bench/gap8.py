"""GAP8 benchmark: the cycle estimate of one inference on the 8-core cluster.

    python bench/gap8.py [--models resnet8,kws_dscnn,mnist8] [--keep DIR]

For each model in models/ ( input ranges as in tests/conftest.py MODELS), power
W4A4 (`--wbits 4 --abits 4`, first/last MAC layers 8-bit weights as by default):
`mcugen.build(..., target="gap8")`, `mcugen simulate --on qemu --n 1`, then `report --json`.
Prints one markdown table: MACs; busiest-core instructions per MAC (the busiest core's
instructions over the MACs one core would do with an even 8-way split) for the largest conv
(by MACs) and for the worst conv (the depthwise ones, where there are any); the estimated
cycles and MAC/cycle of the whole model; and the PULP-NN reference row (15.5 MAC/cycle, from
boards/gap8.toml). The estimate is a MODEL (mcugen/cycle_model.py: qemu's exact instruction
counts on plain RV32IMC, 1 cycle each, plus DMA), not a measurement; no timing is asserted.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import mcugen
from riscv import MODELS, MODELS_DIR
from riscv import mcugen as mcugen_cli

FITS = ("resnet8", "kws_dscnn", "mnist8")        # the shared models that fit the gap8 board


def per_core(layer, cores):
    """Busiest-core instructions per MAC of an even split over the cores."""
    return layer["busiest_core_instructions"] / (layer["macs"] / cores)


def measure(model: str, out: Path) -> dict:
    mcugen.build(MODELS_DIR / f"{model}.onnx", target="gap8", out=out, force=True, wbits=4, abits=4,
                 input_range=MODELS[model])
    mcugen_cli("simulate", out, "--on", "qemu", "--n", "1")
    report = json.loads(mcugen_cli("report", out, "--json"))
    cores, totals = report["gap8_model"]["cores"], report["totals"]
    convs = [layer for layer in report["layers"] if layer["op"] == "Conv" and layer.get("macs")]
    largest = max(convs, key=lambda layer: layer["macs"])
    worst = max(convs, key=lambda layer: per_core(layer, cores))
    return {"macs": totals["macs"], "largest": per_core(largest, cores), "largest_name": largest["step"],
            "worst": per_core(worst, cores), "worst_name": worst["step"],
            "cycles": totals["est_cycles"], "macs_per_cycle": totals["est_macs_per_cycle"],
            "reference": report["gap8_model"]["reference_macs_per_cycle"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(FITS))
    ap.add_argument("--keep", help="keep the generated projects under this directory")
    args = ap.parse_args(argv)
    missing = [tool for tool in ("riscv64-unknown-elf-gcc", "qemu-system-riscv32") if not shutil.which(tool)]
    if missing:
        raise SystemExit(f"not found: {', '.join(missing)} (see bench/riscv.py for the packages)")
    rows, reference = [], None
    print("| model | MACs | largest conv: busiest-core instr/MAC | worst conv: busiest-core instr/MAC "
          "| est. cycles | est. MAC/cycle |")
    print("|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="mcugen-bench-gap8") as tmp:
        root = Path(args.keep or tmp)
        for model in args.models.split(","):
            r = measure(model, root / model)
            reference = r["reference"]
            print(f"| {model} | {r['macs']:,} | {r['largest']:.2f} ({r['largest_name'][:12]}) "
                  f"| {r['worst']:.2f} ({r['worst_name'][:12]}) | {r['cycles']:,} "
                  f"| {r['macs_per_cycle']:.3f} |", flush=True)
            rows.append((model, r))
    if reference is not None:
        print(f"| PULP-NN int8 conv, 8 cores (published) | - | - | - | - | {reference} |")
    return rows


if __name__ == "__main__":
    main()
