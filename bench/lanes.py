"""Lanes benchmark (issue 25): what 8-bit lanes cost in accuracy on a SIMD board.

    python bench/lanes.py [--quick] [--models resnet8,mnist8] [--subsets N] [--out FILE]

Per model of bench/nupes.py (its data and evaluation inputs; --subsets calibration sets, see
calibration_subsets) and
configuration (power W4A8 and W4A4 with NUPES, power W4A8 with PowerQuant, uniform W8A8), two
builds for the cv32e40p board, the same but for `--lanes`:

    mcugen build M.onnx --target rv32 --board cv32e40p --lanes 16 --act-grid power CONFIG
    mcugen build M.onnx --target rv32 --board cv32e40p CONFIG          (defaults: lanes auto = 8)

"16-bit lanes" keeps the grids' levels as they are and the scheme's power grid on every
activation; the default rounds 4-bit weight levels and A4-A6 power levels to 8-bit integers and
chooses, per activation tensor, between the power grid in 16-bit lanes and the uniform one in
8-bit lanes (quant/lanes.py). Columns: agreement with the float model's argmax (and top-1 where
labels exist) of the bit-exact integer reference, mean over the subsets, for both builds and
their difference (the goal: at most 0.5 point lost), and the share of the model's MACs whose
operands both decode to 8 bits (the lowering's decode_bits per layer).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _markdown import emit, save, table  # noqa: E402
import _data  # noqa: E402
from nupes import MODELS, batched_argmax, digits_data, float_predictions, load, score  # noqa: E402

import mcugen  # noqa: E402

CONFIGS = {"power NUPES W4A8": dict(scheme="power", method="nupes", wbits=4, abits=8),
           "power NUPES W4A4": dict(scheme="power", method="nupes", wbits=4, abits=4),
           "power W4A8": dict(scheme="power", method="powerquant", wbits=4, abits=8),
           "uniform W8A8": dict(scheme="uniform", method="powerquant", wbits=8, abits=8)}
BUILDS = {"16-bit lanes": dict(lanes="16", act_grid="power"), "default": {}}


def calibration_subsets(data, count: int) -> list:
    """`count` calibration sets where bench/nupes.py has one and the evaluation inputs do not
    depend on its seed: kws_dscnn's synthetic features and the digits models' training
    images, each drawn with seeds 0..count-1 (seed 0: bench/nupes.py's own). A change of a
    point between two builds is a few inputs on these test sets: the mean over sets is the
    figure to read. resnet8 has its subsets already; mnist8's seed would move its test split."""
    if data.model == "kws_dscnn":
        return [_data.kws_data(1, len(data.calibs[0]), seed=k)[1] for k in range(count)]
    if data.model in ("digits_cnn", "act_digits"):
        return [digits_data(data.model, seed=k)[2] for k in range(count)]
    return data.calibs


def eight_bit_share(project) -> float:
    """The share of MACs in layers whose decoded operands are both 8-bit."""
    layers = [s.info for s in project.schedule.steps if s.info.get("macs")]
    total = sum(i["macs"] for i in layers)
    return sum(i["macs"] for i in layers if i.get("decode_bits") == 8) / total if total else 0.0


def point(data, calib, config, build, reference):
    p = mcugen.build(data.path, target="rv32", board="cv32e40p", calib=calib, seed=0,
                     **config, **build)
    ref = reference(p)
    top1, agree = score(batched_argmax(p.run, data.x), data, ref)
    return top1, agree, eight_bit_share(p)


def rows_for(data) -> list:
    reference_cache = {}

    def reference(p):
        if "pred" not in reference_cache:
            reference_cache["pred"] = float_predictions(p, data.x)
        return reference_cache["pred"]
    rows = []
    for label, config in CONFIGS.items():
        results = {name: [point(data, calib, config, build, reference) for calib in data.calibs]
                   for name, build in BUILDS.items()}
        mean = {name: np.mean([[np.nan if v is None else v for v in r] for r in res], axis=0)
                for name, res in results.items()}
        wide, default = mean["16-bit lanes"], mean["default"]
        top1 = "-" if data.y is None else \
            f"{100 * wide[0]:.2f} / {100 * default[0]:.2f} ({100 * (default[0] - wide[0]):+.2f})"
        rows.append([data.model, label, f"{100 * wide[1]:.2f}", f"{100 * default[1]:.2f}",
                     f"{100 * (default[1] - wide[1]):+.2f}", top1,
                     f"{100 * wide[2]:.0f} % / {100 * default[2]:.0f} %"])
        print(f"  {data.model} {label} done", file=sys.stderr, flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer inputs, one subset")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--subsets", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    for name in args.models.split(","):
        data = load(name, args.quick, 1 if args.quick else args.subsets)
        if not args.quick:
            data.calibs = calibration_subsets(data, args.subsets)
        rows += rows_for(data)
    emit("## 8-bit lanes against 16-bit lanes, board cv32e40p: agreement with float (%), "
         "mean over calibration subsets")
    emit()
    table(["model", "configuration", "agree, 16-bit lanes", "agree, default", "change",
           "top-1, 16-bit / default", "MACs in 8-bit lanes, 16-bit / default"], rows)
    save(args.out)


if __name__ == "__main__":
    main()
