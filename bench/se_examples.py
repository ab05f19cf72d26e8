"""Squeeze-excitation examples (examples/se_*.onnx): accuracy per exporter and configuration,
and what the SE blocks cost on RV32 and GAP8.

    python bench/se_examples.py [--quick] [--out results.md]

Data: scikit-learn's digits as examples/make_se_digits.py splits them (the first 1,437 images
train, the last 360 test; pixels / 16). Calibration: the first 200 training images.
Table 1, per network and exporter (dynamo, TorchScript opset 13 and 17): float top-1 on the
360 test images (onnxruntime), and the integer model's (mcugen's reference, which the
generated code matches bit for bit) for uniform W8A8, power W8A8, NUPES W4A8 and NUPES W4A4
(first and last MAC layers at 8 bits, as by default), with the difference to float.
Table 2, per network (the TorchScript opset 17 export), power W8A8: RV32IMC instructions of
one inference under qemu (minstret), split into the SE blocks (each gate's global pool, its two
1x1 convs and the broadcast Mul) and the rest; and the GAP8 cluster estimate (a model on qemu
counts, mcugen/cycle_model.py), split the same way. --quick: the 64 saved test images and
table 1 only.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _markdown import emit, save, table  # noqa: E402
from riscv import mcugen as mcugen_cli  # noqa: E402

import mcugen  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NETWORKS = ("mbv3", "effnet")
EXPORTS = {"dynamo": "dynamo", "ts13": "TorchScript 13", "ts17": "TorchScript 17"}
CONFIGS = {"uniform W8A8": dict(scheme="uniform", wbits=8, abits=8),
           "power W8A8": dict(scheme="power", wbits=8, abits=8),
           "NUPES W4A8": dict(method="nupes", wbits=4, abits=8),
           "NUPES W4A4": dict(method="nupes", wbits=4, abits=4)}
N_TEST, N_CALIB = 360, 200


def digits(quick: bool):
    """(calibration, test images, test labels) as the example script splits the digits."""
    if quick:
        x = np.load(EXAMPLES / "se_digits_inputs.npy")
        return x, x, np.load(EXAMPLES / "se_digits_labels.npy")
    from sklearn.datasets import load_digits
    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]
    return x[:N_CALIB], x[-N_TEST:], data.target[-N_TEST:]


def float_top1(path: Path, x, labels) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    logits = np.concatenate([session.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])
    return float(np.mean(logits.argmax(axis=1) == labels))


def int_top1(path: Path, config: dict, calib, x, labels) -> float:
    project = mcugen.build(path, calib=calib, **config)
    return float(np.mean(np.asarray(project.run(x)).reshape(len(x), -1).argmax(axis=1) == labels))


def accuracy_rows(calib, x, labels) -> list:
    rows = []
    for network in NETWORKS:
        for export, label in EXPORTS.items():
            path = EXAMPLES / f"se_{network}_{export}.onnx"
            reference = float_top1(path, x, labels)
            row = [network, label, f"{100 * reference:.2f}"]
            for config in CONFIGS.values():
                top1 = int_top1(path, config, calib, x, labels)
                row.append(f"{100 * top1:.2f} ({100 * (top1 - reference):+.2f})")
            rows.append(row)
            print(f"  {network} {export} done", file=sys.stderr, flush=True)
    return rows


def se_steps(schedule) -> set:
    """Each Mul's gate: the steps from its global pool to the Mul, found by walking back from
    the Mul's smaller operand through steps whose outputs are smaller than the Mul's."""
    producer = {step.output: step for step in schedule.steps}
    found = set()
    for mul in (s for s in schedule.steps if s.kind == "mul"):
        size = schedule.buffers[mul.output].size
        gate = min(mul.inputs, key=lambda name: schedule.buffers[name].size)
        found.add(mul.name)
        while gate in producer and schedule.buffers[gate].size < size:
            step = producer[gate]
            found.add(step.name)
            if step.kind == "avgpool":
                break
            gate = step.inputs[0]
    return found


def cost_split(path: Path, target: str, column: str, calib, work: Path) -> tuple:
    """(SE blocks, the rest) of one inference's measured column, power W8A8."""
    out = work / f"{path.stem}_{target}"
    project = mcugen.build(path, target=target, out=out, force=True, calib=calib)
    mcugen_cli("simulate", out, "--on", "qemu", "--n", "1")
    report = json.loads(mcugen_cli("report", out, "--json"))
    se = se_steps(project.schedule)
    counts = {layer["step"]: layer.get(column) or 0 for layer in report["layers"]}
    inside = sum(v for k, v in counts.items() if k in se)
    return inside, sum(counts.values()) - inside


def cost_rows(calib) -> list:
    rows = []
    with tempfile.TemporaryDirectory(prefix="se_bench") as tmp:
        for network in NETWORKS:
            path = EXAMPLES / f"se_{network}_ts17.onnx"
            rv_se, rv_rest = cost_split(path, "rv32", "instructions", calib, Path(tmp))
            g8_se, g8_rest = cost_split(path, "gap8", "est_cycles", calib, Path(tmp))
            rows.append([network, f"{rv_se:,}", f"{rv_rest:,}", f"{rv_se / (rv_se + rv_rest):.1%}",
                         f"{g8_se:,}", f"{g8_rest:,}", f"{g8_se / (g8_se + g8_rest):.1%}"])
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    calib, x, labels = digits(args.quick)
    emit(f"## SE examples: top-1 (%) on {len(x)} digits test images, float vs integer "
         f"(difference to float in brackets); calibration {len(calib)} images")
    emit()
    table(["network", "exporter", "float", *CONFIGS], accuracy_rows(calib, x, labels))
    if not args.quick:
        emit("## SE blocks' cost, power W8A8, TorchScript opset 17 export: one inference")
        emit()
        table(["network", "RV32 instr, SE", "RV32 instr, rest", "SE share",
               "GAP8 est. cycles, SE", "GAP8 est. cycles, rest", "SE share"], cost_rows(calib))
    save(args.out)


if __name__ == "__main__":
    main()
