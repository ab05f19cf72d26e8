"""Encoders: code error, table bytes and RV32 instructions per encoder and activation, and what
each encoder does to whole models (constants, instructions, accuracy).

    python bench/encoders.py [--sections a,b,c] [--models resnet8,kws_dscnn] [--keep DIR]

(a) per encoder x activation, on a real layer's accumulator (resnet8's second conv: its scales
    and proven bound, 8-bit power grid): worst and mean code error and the share of accumulator
    values off, exact over the whole accumulator range (mcugen/lower/encoders/exact.py); table
    bytes; RV32IMC instructions per encoded element, measured under qemu (-icount, minstret) on
    a one-input Gemm with 1,024 outputs followed by the activation, minus the same Gemm as the
    model's last layer (int32 out, no encoder).
(b) per model (power W4A8, --weight-storage codes, rv32) and encoder: constants (flash B of
    the report), RV32 instructions of one inference, their ratio to the threshold build, and
    the encoders' share (encoded elements x (a)'s instructions per element / total).
(c) examples/act_digits.onnx (SiLU, GELU, Tanh, Sigmoid, HardSwish, PRelu, LeakyRelu; trained
    by examples/make_act_digits.py): float and quantized top-1 on its held-out digits per
    encoder, the integer C run on the host.
Instruction counts are exact and deterministic (qemu -icount shift=0): one run is enough.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from _data import require_rv32_tools
from mcugen.reference.float_ir import run_float

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
MODELS_DIR = REPO / "models"
MODELS = {"mnist8": (0.0, 255.0), "resnet8": (0.0, 255.0), "kws_dscnn": (-30.0, 30.0)}
ENCODERS = ("threshold", "lut", "pade", "auto")
ACTIVATIONS = {"Relu": ("Relu", {}), "LeakyRelu(0.1)": ("LeakyRelu", {"alpha": 0.1}),
               "Sigmoid": ("Sigmoid", {}), "Tanh": ("Tanh", {}), "HardSwish": ("HardSwish", {}),
               "Elu": ("Elu", {}), "Softplus": ("Softplus", {})}
MICRO_OUTPUTS = 1024


def mcugen(*args, check=True):
    done = subprocess.run([sys.executable, "-m", "mcugen", *map(str, args)], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise SystemExit(f"mcugen {' '.join(map(str, args))} failed:\n{done.stderr or done.stdout}")
    return done


def fmt(value, digits=2):
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


# ---- (a) -----------------------------------------------------------------------------------

def real_layer():
    """The encode request of resnet8's second conv at power W4A8 (a real accumulator: its
    per-channel scales and proven bound), recorded while lowering."""
    import mcugen.lower.lowering as lowering
    from mcugen.pipeline import build
    requests, original = [], lowering.encoder_step_parts
    lowering.encoder_step_parts = lambda request, *a: requests.append(request) or original(request, *a)
    try:
        build(str(MODELS_DIR / "resnet8.onnx"), target="host", wbits=4, abits=8,
              input_range=(0.0, 255.0), encoder="threshold")
    finally:
        lowering.encoder_step_parts = original
    return requests[1]


def micro_model(path, activation, attrs, last):
    """x[1,1] -> Gemm(1 -> N) [-> activation -> Gemm(N -> 1)] as an ONNX file."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(MICRO_OUTPUTS, 1)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(size=MICRO_OUTPUTS).astype(np.float32), "b1")]
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1)]
    out, shape = "h", [1, MICRO_OUTPUTS]
    if not last:
        nodes.append(helper.make_node(activation, ["h"], ["a"], **attrs))
        inits.append(numpy_helper.from_array(rng.normal(size=(1, MICRO_OUTPUTS)).astype(np.float32), "w2"))
        nodes.append(helper.make_node("Gemm", ["a", "w2"], ["y"], transB=1))
        out, shape = "y", [1, 1]
    graph = helper.make_graph(nodes, "micro", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, shape)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def step_instructions(model, out, encoder):
    """RV32 instructions of the first step, or None when the encoder does not apply."""
    built = mcugen("build", model, "--target", "rv32", "-o", out, "--force", "--input-range=-3:3",
                   "--encoder", encoder, check=False)
    if built.returncode != 0:
        return None
    mcugen("simulate", out, "--on", "qemu", "--n", "1")
    report = json.loads(mcugen("report", out, "--json").stdout)
    return report["layers"][0]["instructions"], report["layers"][0]


def section_a(root):
    from mcugen.lower.encoders import ENCODERS as REGISTRY, EncodeRequest
    from mcugen.quant.power import Encoding
    from mcugen.numerics import activation_is_nonnegative
    layer = real_layer()
    enc, scale, bound = layer.encoding, layer.scale, layer.bound
    base_model = root / "micro_base.onnx"
    micro_model(base_model, None, {}, last=True)
    base, _ = step_instructions(base_model, root / "micro_base", "auto")
    print(f"(a) real layer: resnet8's second conv, {scale.size} channels, |acc| <= {bound:,}, "
          f"8-bit power grid a = {enc.exponent:.3f}; RV32 instructions per element over a bare "
          f"Gemm(1->{MICRO_OUTPUTS}) output ({base / MICRO_OUTPUTS:.1f} instr/element)\n")
    print("| activation | encoder | worst code error | mean code error | share off | table B | index | RV32 instr/element |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for label, (op, attrs) in ACTIVATIONS.items():
        spec = _spec(op, attrs)
        grid = Encoding(8, not activation_is_nonnegative(spec), enc.exponent, "power",
                        activation_range(spec, enc.range))
        model = root / f"micro_{op}.onnx"
        micro_model(model, op, attrs, last=False)
        for name in ENCODERS[:-1]:
            encoder = REGISTRY[name]
            if not encoder.supports(spec):
                continue
            parts = encoder.build(EncodeRequest(grid, spec, scale, bound, 1))
            measured = step_instructions(model, root / f"micro_{op}_{name}", name)
            per = (measured[0] - base) / MICRO_OUTPUTS if measured else None
            if parts is None:
                print(f"| {label} | {name} | over budget | | | | | |", flush=True)
                continue
            print(f"| {label} | {name} | {parts.error.worst} | {parts.error.mean:.4f} | "
                  f"{parts.error.off_share:.2%} | {fmt(parts.table_bytes)} | "
                  f"{index_size(parts)} | {fmt(per, 1)} |", flush=True)


def activation_range(spec, y_range):
    """R of the activation's output when its input spans +-y_range (the layer's own range)."""
    from mcugen.numerics import activation_fn
    y = np.linspace(-y_range, y_range, 100_001)
    return float(np.abs(activation_fn(spec)(y)).max())


def index_size(parts):
    """lut: its table's entries; pade: its index bits."""
    info = parts.extra_info
    return f"{info['encoder_entries']} entries" if "encoder_entries" in info else (
        f"F = {info['encoder_bits']}" if "encoder_bits" in info else "-")


def _spec(op, attrs):
    from types import SimpleNamespace
    from mcugen.ops.activation import activation_spec
    node = helper.make_node(op, ["h"], ["a"], **attrs)
    ctx = SimpleNamespace(attrs=lambda n: {a.name: helper.get_attribute_value(a) for a in n.attribute},
                          require_const=None, const=lambda name: None)
    return activation_spec(node, ctx)


# ---- (b) -----------------------------------------------------------------------------------

def section_b(root, models):
    print("\n(b) whole models, power W4A8, --weight-storage codes, rv32 (qemu)\n")
    print("| model | encoder | constants B (flash) | encoder tables B | instructions | vs threshold | encoding share |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for model in models:
        lo, hi = MODELS[model]
        threshold = None
        for name in ENCODERS:
            out = root / f"{model}_{name}"
            built = mcugen("build", MODELS_DIR / f"{model}.onnx", "--target", "rv32", "-o", out, "--force",
                           f"--input-range={lo}:{hi}", "--wbits", "4", "--abits", "8",
                           "--weight-storage", "codes", "--encoder", name, check=False)
            if built.returncode != 0:
                print(f"| {model} | {name} | {built.stderr.strip().splitlines()[-1]} | | | | |")
                continue
            mcugen("simulate", out, "--on", "qemu", "--n", "1")
            report = json.loads(mcugen("report", out, "--json").stdout)
            t = report["totals"]
            tables = sum(layer["table_bytes"] or 0 for layer in report["layers"]
                         if layer.get("encoder_max_code_error") is not None)
            threshold = t["instructions"] if name == "threshold" else threshold
            share = encoding_share(report)
            ratio = f"{t['instructions'] / threshold:.3f}" if threshold else "-"
            print(f"| {model} | {name} | {fmt(t['flash_bytes'])} | {fmt(tables)} | "
                  f"{fmt(t['instructions'])} | {ratio} | {share} |", flush=True)


def encoding_share(report):
    """Encoded elements x the encoder's instructions per element (layer ops estimate) / total."""
    total = report["totals"]["instructions"]
    spent = sum((layer.get("encoder_ops") or 0) * layer["ram_bytes"] for layer in report["layers"]
                if layer.get("encoder_max_code_error") is not None)
    return f"{spent / total:.1%} (est.)" if total else "-"


# ---- (c) -----------------------------------------------------------------------------------

def section_c(root):
    from mcugen.pipeline import build
    from mcugen.reference.interpreter import run
    from sklearn.datasets import load_digits
    model = REPO / "examples" / "act_digits.onnx"
    digits = load_digits()          # the example's split: the last 360 images are its test set
    x = (digits.images / 16.0).reshape(-1, 1, 8, 8)
    calib, test, test_labels = x[:200], x[-360:], digits.target[-360:]
    print(f"\n(c) examples/act_digits.onnx, calibrated on 200 training digits, top-1 on its "
          f"{len(test)} test digits (integer reference = the generated C, bit-exact)\n")
    print("| config | encoder | top-1 | agreement with float | encoder tables B | worst code error |")
    print("|---|---|---:|---:|---:|---:|")
    float_pred = None
    for wbits, abits in ((8, 8), (4, 8)):
        for name in ENCODERS:
            try:
                project = build(str(model), target="host", wbits=wbits, abits=abits, calib=calib,
                                encoder=name)
            except Exception as exc:           # an encoder that cannot realize an activation
                print(f"| W{wbits}A{abits} | {name} | n/a: {str(exc).split(': ', 1)[-1].split(' (')[0]} | | | |")
                continue
            if float_pred is None:
                float_pred = run_float(project.qgraph.graph, test)[project.qgraph.graph.output].reshape(len(test), -1).argmax(1)
                print(f"| float | - | {np.mean(float_pred == test_labels):.2%} | 100% | - | - |")
            pred = np.asarray(run(project.schedule, test)).reshape(len(test), -1).argmax(1)
            layers = [l for l in project.report["layers"] if l.get("encoder_max_code_error") is not None]
            print(f"| W{wbits}A{abits} | {name} | {np.mean(pred == test_labels):.2%} | "
                  f"{np.mean(pred == float_pred):.2%} | {fmt(sum(l['table_bytes'] for l in layers))} | "
                  f"{max(l['encoder_max_code_error'] for l in layers)} |", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", default="a,b,c")
    ap.add_argument("--models", default="resnet8,kws_dscnn")
    ap.add_argument("--keep", help="keep the generated projects under this directory")
    args = ap.parse_args(argv)
    require_rv32_tools()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="mcugen-enc"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        sections = args.sections.split(",")
        if "a" in sections:
            section_a(root)
        if "b" in sections:
            section_b(root, args.models.split(","))
        if "c" in sections:
            section_c(root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
