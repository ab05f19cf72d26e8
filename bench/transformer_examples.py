"""Transformer examples (examples/make_transformer_digits.py: the ViTs with mean pooling and with a
class token, the BERT encoders): accuracy per exporter and configuration, and what attention
costs.

    python bench/transformer_examples.py [--quick] [--rtl | --rtl-only] [--rtl-inputs N]
                                         [--subsets N]
                                         [--out results.md]

Data and configurations as bench/se_examples.py: the digits split of the example scripts
(evaluation: the 360 test images), float top-1 (onnxruntime) against the integer model for
uniform W8A8, power W8A8, NUPES W4A8 and W4A4. Calibration: --subsets sets of 200 training
images (default 5: the first 200, then seeded draws from the 1,437 training images); table 1
gives the change from float per subset's mean, and its range. One test image is 0.28 point,
so a single subset moves a figure by a point or so: the mean is the figure the goals are
held to (as bench/nupes.py does).
Table 2 (power W8A8, the TorchScript opset 17 export): RV32IMC instructions of one inference
under qemu, split into softmax, LayerNorm, the attention MatMuls (Q K^T, A V), the Linears
(1x1 convs over the tokens) and the rest, with the peak activation RAM and flash.
Table 3: each softmax and LayerNorm step's worst error against the float step, as the
lowering measured or proved it (schedule info). --quick: the 64 saved images, table 1 only.
Table 4 (--rtl, or --rtl-only for it alone): cycles of one inference on the CV32E40P RTL
(board cv32e40p: SIMD kernels) of the dynamo export for uniform W8A8, power W8A8 and NUPES
W4A8, medians over --rtl-inputs test images (each run alone, checked bit-exact against the
reference), split as table 2; and the four attention MatMuls' cycles with the plain kernel (the
same steps built for the board-less rv32imc-qemu, run on the same RTL) beside the SIMD kernel.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _markdown import emit, save, table  # noqa: E402
from riscv import mcugen as mcugen_cli  # noqa: E402
from se_examples import CONFIGS, N_TEST, digits, float_top1, int_top1  # noqa: E402

import mcugen  # noqa: E402
from mcugen.verify import compare  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXPORTS = {"dynamo": "dynamo", "ts17": "TorchScript 17", "ts14": "TorchScript 14"}
PARTS = {"softmax": "softmax", "layernorm": "LayerNorm", "matmul": "attention MatMul",
         "conv2d": "Linear (1x1 conv)"}


VITS = {"vit_mean": "mean pooling", "vit_cls": "class token (nn.MultiheadAttention)"}
BERTS = {"bert_eager": "eager", "bert_sdpa": "sdpa"}


def calibration_subsets(first, count: int) -> list:
    """`count` calibration sets of len(first) training images: `first` (the example scripts'
    own), then seeded draws without replacement from the training part of the split."""
    if count <= 1:
        return [first]
    from sklearn.datasets import load_digits
    train = (load_digits().images / 16.0).astype(np.float32)[:-N_TEST, None]
    draws = [np.random.default_rng(seed).choice(len(train), len(first), replace=False)
             for seed in range(1, count)]
    return [first] + [train[np.sort(d)] for d in draws]


def accuracy_rows(subsets, x, labels) -> list:
    rows = []
    for model, kind in VITS.items():
        for export, label in EXPORTS.items():
            path = EXAMPLES / f"{model}_{export}.onnx"
            reference = float_top1(path, x, labels)
            row = [kind, label, f"{100 * reference:.2f}"]
            for config in CONFIGS.values():
                change = [100 * (int_top1(path, config, calib, x, labels) - reference)
                          for calib in subsets]
                spread = f" [{min(change):+.2f}, {max(change):+.2f}]" if len(change) > 1 else ""
                row.append(f"{np.mean(change):+.2f}{spread}")
            rows.append(row)
            print(f"  {model} {export} done", file=sys.stderr, flush=True)
    return rows


def bert_rows() -> list:
    """Per BERT and export: the integer encoder's last hidden states against onnxruntime's on
    the saved token sequences (calibration: the first half, evaluated: the second), as the
    RMS error relative to the float states' standard deviation, and their cosine similarity."""
    tokens = np.load(EXAMPLES / "bert_tokens.npy")
    calib, x = tokens[: len(tokens) // 2], tokens[len(tokens) // 2:]
    rows = []
    for model, kind in BERTS.items():
        for export, label in EXPORTS.items():
            path = EXAMPLES / f"{model}_{export}.onnx"
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            want = np.concatenate([session.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])
            want = want.reshape(len(x), -1)
            row = [kind, label]
            for config in CONFIGS.values():
                got = np.asarray(mcugen.build(path, calib=calib, **config).run(x)).reshape(len(x), -1)
                rms = np.sqrt(np.mean((got - want) ** 2)) / np.std(want)
                cosine = np.mean(np.sum(got * want, 1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1))
                row.append(f"{rms:.3f} / {cosine:.4f}")
            rows.append(row)
            print(f"  {model} {export} done", file=sys.stderr, flush=True)
    return rows


def split_parts(schedule, counts: dict) -> dict:
    """PARTS label (and "rest") -> the sum of the steps' counts (step name -> count). The first
    conv is the patch embedding, the last step the classifier: not Linears over tokens."""
    kinds = {s.name: s.kind for s in schedule.steps}
    convs = [name for name in kinds if kinds[name] == "conv2d"]
    split = {label: sum(v for k, v in counts.items() if kinds[k] == kind and
                        (kind != "conv2d" or k != convs[0])) for kind, label in PARTS.items()}
    split["rest"] = sum(counts.values()) - sum(split.values())
    return split


def cost_rows(calib) -> tuple:
    """(instruction split rows, per-step error rows) of the opset-17 export on rv32."""
    with tempfile.TemporaryDirectory(prefix="vit_bench") as tmp:
        out = Path(tmp) / "vit"
        project = mcugen.build(EXAMPLES / "vit_mean_ts17.onnx", target="rv32", out=out, calib=calib)
        mcugen_cli("simulate", out, "--on", "qemu", "--n", "1")
        report = json.loads(mcugen_cli("report", out, "--json"))
    counts = {layer["step"]: layer.get("instructions") or 0 for layer in report["layers"]}
    total = sum(counts.values())
    split = split_parts(project.schedule, counts)
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


RTL_EXPORT = "dynamo"
RTL_CONFIGS = ("uniform W8A8", "power W8A8", "NUPES W4A8")
RTL_BOARDS = {"simd": "cv32e40p", "plain": "rv32imc-qemu"}   # kernels -> board (same RTL)


def rtl_cycles(path: Path, config: dict, calib, x, work: Path) -> dict:
    """kernels ("simd", "plain") -> one list per input of {step name: cycles} on the RTL, each
    input run alone (the harness profiles a run's first inference) and checked bit-exact."""
    runs = {}
    for kernels, board in RTL_BOARDS.items():
        out = work / kernels
        project = mcugen.build(path, target="rv32", board=board, out=out, force=True, calib=calib,
                               **config)
        if kernels == "simd":
            steps = [s.name for s in project.schedule.steps if s.kind == "matmul"]
            assert all(project.plan[name].get("matmul_simd") for name in steps), steps
        runs[kernels] = (project.schedule, [])
        for i in range(len(x)):
            result = compare(out, project.schedule, x[i:i + 1], on="rtl")
            if result.mismatches:
                raise SystemExit(f"{path.name} ({board}) differs from the reference on the RTL: "
                                 f"{result.first}")
            runs[kernels][1].append({s.name: result.profile[j]
                                     for j, s in enumerate(project.schedule.steps)})
    return runs


def rtl_rows(calib, x) -> list:
    """Per configuration: median cycles of one inference, the parts' shares, and the attention
    MatMuls' cycles with the plain and the SIMD kernel."""
    rows = []
    path = EXAMPLES / f"vit_mean_{RTL_EXPORT}.onnx"
    with tempfile.TemporaryDirectory(prefix="vit_rtl") as tmp:
        for name in RTL_CONFIGS:
            runs = rtl_cycles(path, CONFIGS[name], calib, x, Path(tmp) / "p")
            median = {}
            for kernels, (schedule, counts) in runs.items():
                parts = [split_parts(schedule, c) for c in counts]
                median[kernels] = {label: statistics.median(p[label] for p in parts)
                                   for label in parts[0]}
                median[kernels]["total"] = statistics.median(sum(c.values()) for c in counts)
            simd, plain = median["simd"], median["plain"]
            mm = PARTS["matmul"]
            rows.append([name, f"{simd['total']:,.0f}",
                         *(f"{simd[label] / simd['total']:.1%}"
                           for label in (*PARTS.values(), "rest")),
                         f"{plain[mm]:,.0f}", f"{simd[mm]:,.0f}", f"{plain[mm] / simd[mm]:.1f}x",
                         f"{plain['total']:,.0f}"])
            print(f"  {name} on the RTL done", file=sys.stderr, flush=True)
    return rows


def emit_rtl(calib, x, n):
    emit(f"## Cycles of one inference on the CV32E40P RTL (board cv32e40p, SIMD kernels), "
         f"vit_mean_{RTL_EXPORT}, median of {n} test images, each bit-exact with the reference")
    emit()
    table(["configuration", "cycles", *(f"{label} share" for label in PARTS.values()),
           "rest share",
           "attention MatMuls, plain kernel", "attention MatMuls, SIMD kernel", "speedup",
           "all plain kernels (rv32imc build)"], rtl_rows(calib, x[:n]))
    emit("cycles: the steps' sum (model_run without the input's quantization); attention MatMuls: "
         "the four steps (Q K^T, A V in two blocks) together; plain: the same steps built for "
         "rv32imc-qemu (no SIMD kernel anywhere), run on the same RTL. Ideal memory (no wait "
         "states).")
    emit()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--rtl", action="store_true", help="add table 4 (the CV32E40P RTL)")
    parser.add_argument("--rtl-only", action="store_true", help="table 4 alone")
    parser.add_argument("--rtl-inputs", type=int, default=5, help="test images per RTL median")
    parser.add_argument("--subsets", type=int, default=5, help="calibration sets per accuracy figure")
    args = parser.parse_args()
    calib, x, labels = digits(args.quick)
    if args.rtl_only:
        emit_rtl(calib, x, args.rtl_inputs)
        save(args.out)
        return
    subsets = calibration_subsets(calib, 1 if args.quick else args.subsets)
    emit(f"## ViTs: top-1 (%) on {len(x)} digits test images: float, and the integer model's "
         f"change from it, mean over {len(subsets)} calibration sets of {len(calib)} images "
         f"[lowest, highest]")
    emit()
    table(["ViT", "exporter", "float", *CONFIGS], accuracy_rows(subsets, x, labels))
    emit("## BERT encoders (random weights, 64-token vocabulary, 16 tokens): last hidden states, "
         "integer vs float, RMS error / std of float, and mean cosine similarity per sequence; "
         "calibration 32 sequences, evaluated on the other 32")
    emit()
    table(["attention", "exporter", *CONFIGS], bert_rows())
    if not args.quick:
        split, errors = cost_rows(calib)
        emit("## Where one inference's RV32IMC instructions go (qemu), power W8A8, TorchScript 17")
        emit()
        table(["part", "instructions", "share"], split)
        emit("## Integer softmax and LayerNorm steps: worst error against the float step, "
             "before the output encoder")
        emit()
        table(["step", "kind", "worst error"], errors)
    if args.rtl:
        emit_rtl(calib, x, args.rtl_inputs)
    save(args.out)


if __name__ == "__main__":
    main()
