"""Transformer examples (examples/vit_mean_*.onnx, the ViT with mean pooling that mcugen builds
from every export): accuracy per exporter and configuration, and what attention costs.

    python bench/transformer_examples.py [--quick] [--out results.md]

Data and configurations as bench/se_examples.py: the digits split of the example scripts
(calibration: 200 training images; evaluation: the 360 test images), float top-1 (onnxruntime)
against the integer model for uniform W8A8, power W8A8, NUPES W4A8 and W4A4.
Table 2 (power W8A8, the TorchScript opset 17 export): RV32IMC instructions of one inference
under qemu, split into softmax, LayerNorm, the attention MatMuls (Q K^T, A V), the Linears
(1x1 convs over the tokens) and the rest, with the peak activation RAM and flash.
Table 3: each softmax and LayerNorm step's worst error against the float step, as the
lowering measured or proved it (schedule info). --quick: the 64 saved images, table 1 only.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _markdown import emit, save, table  # noqa: E402
from riscv import mcugen as mcugen_cli  # noqa: E402
from se_examples import CONFIGS, digits, float_top1, int_top1  # noqa: E402

import mcugen  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXPORTS = {"dynamo": "dynamo", "ts17": "TorchScript 17", "ts14": "TorchScript 14"}
PARTS = {"softmax": "softmax", "layernorm": "LayerNorm", "matmul": "attention MatMul",
         "conv2d": "Linear (1x1 conv)"}


def accuracy_rows(calib, x, labels) -> list:
    rows = []
    for export, label in EXPORTS.items():
        path = EXAMPLES / f"vit_mean_{export}.onnx"
        reference = float_top1(path, x, labels)
        row = [label, f"{100 * reference:.2f}"]
        for config in CONFIGS.values():
            top1 = int_top1(path, config, calib, x, labels)
            row.append(f"{100 * top1:.2f} ({100 * (top1 - reference):+.2f})")
        rows.append(row)
        print(f"  {export} done", file=sys.stderr, flush=True)
    return rows


def cost_rows(calib) -> tuple:
    """(instruction split rows, per-step error rows) of the opset-17 export on rv32."""
    with tempfile.TemporaryDirectory(prefix="vit_bench") as tmp:
        out = Path(tmp) / "vit"
        project = mcugen.build(EXAMPLES / "vit_mean_ts17.onnx", target="rv32", out=out, calib=calib)
        mcugen_cli("simulate", out, "--on", "qemu", "--n", "1")
        report = json.loads(mcugen_cli("report", out, "--json"))
    kinds = {s.name: s.kind for s in project.schedule.steps}
    counts = {layer["step"]: layer.get("instructions") or 0 for layer in report["layers"]}
    total = sum(counts.values())
    # the first conv is the patch embedding, the last step the classifier: not Linears over tokens
    convs = [name for name in kinds if kinds[name] == "conv2d"]
    split = {label: sum(v for k, v in counts.items() if kinds[k] == kind and
                        (kind != "conv2d" or k != convs[0])) for kind, label in PARTS.items()}
    split["rest"] = total - sum(split.values())
    totals = report["totals"]
    rows = [[label, f"{count:,}", f"{count / total:.1%}"] for label, count in split.items()]
    rows.append(["total", f"{total:,}", f"peak RAM {totals['peak_ram_bytes']:,} B, "
                                         f"flash {totals['flash_bytes']:,} B"])
    errors = []
    for step in project.schedule.steps:
        if step.kind == "softmax":
            errors.append([step.name, "softmax", f"{step.info['softmax_error_bound']:.2e} (bound)"])
        elif step.kind == "layernorm":
            errors.append([step.name, "LayerNorm", f"{step.info['ln_max_error']:.2e} (measured)"])
    return rows, errors


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    calib, x, labels = digits(args.quick)
    emit(f"## ViT (mean pooling): top-1 (%) on {len(x)} digits test images, float vs integer "
         f"(difference to float in brackets); calibration {len(calib)} images")
    emit()
    table(["exporter", "float", *CONFIGS], accuracy_rows(calib, x, labels))
    if not args.quick:
        split, errors = cost_rows(calib)
        emit("## Where one inference's RV32IMC instructions go (qemu), power W8A8, TorchScript 17")
        emit()
        table(["part", "instructions", "share"], split)
        emit("## Integer softmax and LayerNorm steps: worst error against the float step, "
             "before the output encoder")
        emit()
        table(["step", "kind", "worst error"], errors)
    save(args.out)


if __name__ == "__main__":
    main()
