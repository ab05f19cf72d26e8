"""RV32IMC benchmark: exact instruction counts of one inference under qemu (-icount, minstret).

    python bench/riscv.py [--models resnet8,mnist8] [--keep DIR]

For each model in models/ ( input ranges as in tests/conftest.py MODELS) and two
configurations, uniform W8A8 (`--scheme uniform --wbits 8 --abits 8`) and power W4A8
(`--scheme power --wbits 4 --abits 8`, first/last MAC layers 8-bit weights as by default):
`mcugen build --target rv32`, `mcugen simulate --on qemu --n 1`, then the report. Prints one
markdown table: instructions, instructions per MAC (whole model, and the largest conv by MACs,
the last of equals), text/rodata/bss of model.c (RV32IMC -O2, from profile.json), peak
activation RAM (report totals.peak_ram_bytes), and the power/uniform instruction ratio. The
onnx2c reference row (float C, soft float on rv32imc, same toolchain) is quoted from issue 4.
Instruction counts are exact and deterministic (qemu -icount shift=0), so one run is enough.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _data import require_rv32_tools

REPO = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO / "models"
MODELS = {"mnist8": (0.0, 255.0), "mnist_mlp_bn": (0.0, 1.0), "sine": (0.0, 6.2832),
          "resnet8": (0.0, 255.0), "kws_dscnn": (-30.0, 30.0)}      # tests/conftest.py MODELS
CONFIGS = {"uniform W8A8": ["--scheme", "uniform", "--wbits", "8", "--abits", "8"],
           "power W4A8": ["--scheme", "power", "--wbits", "4", "--abits", "8"]}
ONNX2C = {"resnet8": {"instr_per_mac": 169, "bss": 199_984}, "mnist8": {"bss": 63_792},
          "kws_dscnn": {"bss": 67_384}}                               # issue 4, measured there


def mcugen(*args):
    done = subprocess.run([sys.executable, "-m", "mcugen", *map(str, args)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"mcugen {' '.join(map(str, args))} failed:\n{done.stderr or done.stdout}")
    return done.stdout


def measure(model: str, config: list, out: Path) -> dict:
    lo, hi = MODELS[model]
    mcugen("build", MODELS_DIR / f"{model}.onnx", "--target", "rv32", "-o", out, "--force",
           f"--input-range={lo}:{hi}", *config)
    mcugen("simulate", out, "--on", "qemu", "--n", "1")
    report = json.loads(mcugen("report", out, "--json"))
    sections = json.loads((out / "profile.json").read_text())["sections"]
    totals = report["totals"]
    convs = [layer for layer in report["layers"] if layer["op"] == "Conv" and layer.get("macs")]
    largest = max(convs, key=lambda layer: layer["macs"]) if convs else None
    biggest = [layer for layer in convs if largest and layer["macs"] == largest["macs"]]
    return {"instructions": totals["instructions"], "macs": totals["macs"],
            "instr_per_mac": totals["instructions"] / max(totals["macs"], 1),
            "largest_conv": max((l["instructions"] / l["macs"] for l in biggest), default=None),
            "largest_conv_name": biggest[-1]["name"] if biggest else "",
            "text": sections["text"], "rodata": sections["rodata"], "bss": sections["bss"],
            "peak_ram": totals["peak_ram_bytes"]}


def fmt(value, digits=2):
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--keep", help="keep the generated projects under this directory")
    args = ap.parse_args(argv)
    require_rv32_tools()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="mcugen-bench"))
    rows = []
    print("| model | config | instructions | instr/MAC | largest conv instr/MAC | text B | rodata B "
          "| bss B | peak RAM B | power/uniform |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    try:
        for model in args.models.split(","):
            results = {}
            for name, config in CONFIGS.items():
                r = results[name] = measure(model, config, root / f"{model}_{name.split()[0]}")
                ratio = (f"{r['instructions'] / results['uniform W8A8']['instructions']:.3f}"
                         if name == "power W4A8" else "")
                print(f"| {model} | {name} | {fmt(r['instructions'])} | {fmt(r['instr_per_mac'])} "
                      f"| {fmt(r['largest_conv'])} | {fmt(r['text'])} | {fmt(r['rodata'])} "
                      f"| {fmt(r['bss'])} | {fmt(r['peak_ram'])} | {ratio} |", flush=True)
                rows.append((model, name, r))
            if model in ONNX2C:
                ref = ONNX2C[model]
                print(f"| {model} | onnx2c float (reference) | - | {fmt(ref.get('instr_per_mac'))} "
                      f"| - | - | - | {fmt(ref['bss'])} | - | |", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return rows


if __name__ == "__main__":
    main()
