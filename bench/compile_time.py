"""Compile-time benchmark: CPU seconds of `mcugen build` for every model on every target.

    python bench/compile_time.py [--models resnet8,ae_standin] [--targets host,gap8]
                                 [--configs w4a8,w8a8] [--top 12]

Models: every models/*.onnx and examples/*.onnx (identical files once), and two
synthetic stand-ins for models from issue 21 that we do not have, built here with the onnx
helper API (seeded random weights, Student-t with 2.5 degrees of freedom: trained weights have
heavier tails than a Gaussian, which pulls the data-free exponent down, to 0.47 and 0.56 here,
and made the encoders' search slow: 68 s and 125 s of CPU before issue 21's fix):
  ae_standin   the anomaly-detection autoencoder, a 640-128-128-128-8-128-128-128-640 MLP
               (Gemm + Relu, 264k weights), input range -3:3
  vww_standin  a visual-wake-words MobileNetV1 (alpha 0.25, 96x96x3, depthwise-separable
               Conv + Clip(0, 6), GlobalAveragePool, Gemm), input range 0:255
Configurations: w4a8 (power, --wbits 4 --abits 8) and w8a8 (power, the defaults). Targets:
host, rv32, gap8, hls (--board zcu104 --fit).

Each build is `mcugen.build(model, target=..., out=DIR, force=True)` (quantize, lower, report,
render and write the project) in this process after a warm-up build (imports excluded), with
the encoders' cache cleared first (lower.encoders.clear_cache), so every build pays for its
own encoders as a `mcugen build` run would. Time is CPU time, user + sys of every thread:
load from other processes inflates it less than wall time, but it does (BLAS threads spin
longer while they wait for a core). Phases are timed by wrapping
mcugen.pipeline's quantize, lower_for_board, build_report, realization_cost and _emit, and
the encoders (lowering's encoder_step_parts, inside lower); `other` is the rest (reading
the ONNX file, graph passes). The slowest build is then run again under cProfile.
"""
from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _data  # noqa: E402

import mcugen  # noqa: E402
import mcugen.lower.lowering as lowering  # noqa: E402
import mcugen.pipeline as pipeline  # noqa: E402
from mcugen.lower.encoders import clear_cache  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("host", "rv32", "gap8", "hls")
CONFIGS = {"w4a8": dict(wbits=4, abits=8), "w8a8": dict()}
EXAMPLE_RANGES = {"digits_cnn": (0.0, 1.0), "act_digits": (0.0, 1.0), "mnist8": (0.0, 255.0)}
GOAL_S, RESNET8_GOAL_S = 10.0, 2.0
T_DOF = 2.5             # the stand-ins' weight distribution (Student-t degrees of freedom)


# --- the stand-ins ------------------------------------------------------------------------

def _weights(rng, shape):
    """Heavy-tailed weights with He scaling: Student-t, normalized to variance 2 / fan-in."""
    w = rng.standard_t(T_DOF, shape)
    return w / np.sqrt(np.mean(w ** 2)) * np.sqrt(2.0 / np.prod(shape[1:]))


def _model(nodes, inits, x_shape, y_shape, name):
    tensors = [numpy_helper.from_array(np.asarray(v, dtype=np.float32), k) for k, v in inits]
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def autoencoder(seed=0):
    """640-128-128-128-8-128-128-128-640, Gemm + Relu (none after the last)."""
    rng = np.random.default_rng(seed)
    dims = [640, 128, 128, 128, 8, 128, 128, 128, 640]
    nodes, inits, x = [], [], "x"
    for i, (n_in, n_out) in enumerate(zip(dims[:-1], dims[1:])):
        inits += [(f"w{i}", _weights(rng, (n_out, n_in))), (f"b{i}", rng.normal(0, 0.05, n_out))]
        last = i == len(dims) - 2
        y = "y" if last else f"g{i}"
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [y], transB=1, name=f"fc{i}"))
        if not last:
            nodes.append(helper.make_node("Relu", [y], [f"r{i}"], name=f"relu{i}"))
            x = f"r{i}"
    return _model(nodes, inits, [1, 640], [1, 640], "ae_standin")


MOBILENET = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + \
    [(1024, 2), (1024, 1)]      # MobileNetV1's separable blocks (channels at alpha 1, stride)


def vww_mobilenet(seed=0, side=96, alpha=0.25):
    """MobileNetV1: Conv 3x3/2, 13 depthwise + pointwise blocks, Clip(0, 6) after every conv,
    GlobalAveragePool, Gemm to 2 classes."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], [("zero", np.array(0.0)), ("six", np.array(6.0))]

    def conv(x, cin, cout, k, stride, group, name):
        inits.extend([(name + "_w", _weights(rng, (cout, cin // group, k, k))),
                      (name + "_b", rng.normal(0, 0.05, cout))])
        nodes.append(helper.make_node("Conv", [x, name + "_w", name + "_b"], [name], name=name,
                                      kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4,
                                      group=group))
        nodes.append(helper.make_node("Clip", [name, "zero", "six"], [name + "_r"], name=name + "_relu6"))
        return name + "_r"
    width = max(8, int(32 * alpha))
    x = conv("x", 3, width, 3, 2, 1, "conv0")
    for i, (channels, stride) in enumerate(MOBILENET):
        x = conv(x, width, width, 3, stride, width, f"dw{i}")
        x = conv(x, width, max(8, int(channels * alpha)), 1, 1, 1, f"pw{i}")
        width = max(8, int(channels * alpha))
    inits += [("fc_w", _weights(rng, (2, width))), ("fc_b", np.zeros(2))]
    nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"),
              helper.make_node("Flatten", ["gap"], ["flat"], name="flat"),
              helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["y"], transB=1, name="fc")]
    return _model(nodes, inits, [1, 3, side, side], [1, 2], "vww_standin")


def models(directory: Path) -> dict:
    """name -> (path, input range): models/, examples/, the stand-ins."""
    found = {}
    seen = set()
    for path in sorted(Path(_data.MODELS).glob("*.onnx")) + sorted((ROOT / "examples").glob("*.onnx")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest in seen:                    # examples/mnist8.onnx is models/mnist8.onnx
            continue
        seen.add(digest)
        ranges = {**_data.INPUT_RANGES, **EXAMPLE_RANGES}
        found[path.stem] = (str(path), ranges.get(path.stem, (0.0, 1.0)))
    for name, make, rng in (("ae_standin", autoencoder, (-3.0, 3.0)),
                            ("vww_standin", vww_mobilenet, (0.0, 255.0))):
        path = directory / f"{name}.onnx"
        onnx.save(make(), str(path))
        found[name] = (str(path), rng)
    return found


# --- timing -------------------------------------------------------------------------------

class Phases:
    """CPU seconds spent in a few wrapped functions, per build."""
    WRAPPED = [(pipeline, "quantize"), (pipeline, "lower_for_board"), (lowering, "encoder_step_parts"),
               (pipeline, "build_report"), (pipeline, "realization_cost"), (pipeline, "_emit")]
    LABELS = {"lower_for_board": "lower", "encoder_step_parts": "encoders", "build_report": "report",
              "realization_cost": "cost", "_emit": "emit"}

    def __init__(self):
        self.spent = {}
        for module, name in self.WRAPPED:
            setattr(module, name, self._wrap(getattr(module, name), self.LABELS.get(name, name)))

    def _wrap(self, fn, label):
        def timed(*args, **kwargs):
            start = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent[label] = self.spent.get(label, 0.0) + time.process_time() - start
        return timed

    def build(self, path, target, rng, config, out):
        """(CPU s, phases, error or None) of one build from a cold encoder cache."""
        clear_cache()
        self.spent = {}
        start = time.process_time()
        error = None
        try:
            mcugen.build(path, target=target, out=out, force=True, input_range=rng,
                         **target_config(target, config))
        except Exception as exc:               # noqa: BLE001 - a build that fails is reported
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
        total = time.process_time() - start
        phases = dict(self.spent)
        phases["other"] = total - sum(v for k, v in phases.items() if k != "encoders")
        return total, phases, error


def target_config(target, config):
    """The build options: the hls target on the largest FPGA board known (zcu104) with --fit
    (reuse raised until the design fits): resnet8 and vww_standin fit no smaller board."""
    return dict(config, board="zcu104", target_options={"fit": True}) if target == "hls" else config


def describe(phases):
    """'lower 3.1 (encoders 2.0), quantize 0.9, ...': the phases, slowest first."""
    parts = []
    for label, seconds in sorted(phases.items(), key=lambda kv: -kv[1]):
        if label == "encoders" or seconds < 0.05:
            continue
        text = f"{label} {seconds:.1f}"
        if label == "lower" and "encoders" in phases:
            text += f" (encoders {phases['encoders']:.1f})"
        parts.append(text)
    return ", ".join(parts)


def profile(path, target, rng, config, out, top):
    """The top functions of one build by internal CPU time, as markdown rows."""
    clear_cache()
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    try:
        mcugen.build(path, target=target, out=out, force=True, input_range=rng,
                     **target_config(target, config))
    finally:
        profiler.disable()
    stats = pstats.Stats(profiler, stream=io.StringIO())
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:top]
    lines = ["| function | calls | own CPU s | with callees s |", "|---|---:|---:|---:|"]
    for (file, line, name), (_, calls, own, cumulative, _) in rows:
        where = f"{Path(file).parent.name}/{Path(file).name}:{line}" if line else "builtin"
        lines.append(f"| `{name}` ({where}) | {calls} | {own:.2f} | {cumulative:.2f} |")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="comma-separated names (default: all)")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--top", type=int, default=12,
                    help="functions listed from the slowest build's profile (0: no profile)")
    args = ap.parse_args(argv)
    targets, configs = args.targets.split(","), args.configs.split(",")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mcugen-bench-") as tmp:
        tmp = Path(tmp)
        catalog = models(tmp)
        names = args.models.split(",") if args.models else list(catalog)
        results = run_all(catalog, names, configs, targets, tmp / "p")
        report(results, names, configs, targets)
        done = [k for k in results if results[k][2] is None]
        if args.top and done:
            name, config, target = max(done, key=lambda k: results[k][0])
            print(f"\nSlowest build, {name} {config} {target}, under cProfile (CPU time; the "
                  f"profiler adds its own):\n")
            print("\n".join(profile(catalog[name][0], target, catalog[name][1], CONFIGS[config],
                                    tmp / "p", args.top)))
    print(f"\nBench run time: {time.perf_counter() - started:.0f} s wall; {os.cpu_count()} cores, "
          f"1-minute load average {os.getloadavg()[0]:.1f} at the end.")
    return 0


def run_all(catalog, names, configs, targets, out):
    """{(model, config, target): (CPU s, phases, error)}, after a warm-up build of sine."""
    phases = Phases()
    warm = catalog.get("sine", catalog[names[0]])
    phases.build(warm[0], "host", warm[1], {}, out)
    results = {}
    for name in names:
        path, rng = catalog[name]
        for config in configs:
            for target in targets:
                results[name, config, target] = phases.build(path, target, rng, CONFIGS[config], out)
                print(f"{name} {config} {target}: {results[name, config, target][0]:.2f} s",
                      file=sys.stderr, flush=True)
    return results


def report(results, names, configs, targets):
    print("## mcugen build: CPU seconds per build (power quantization)\n")
    print("| model | config | " + " | ".join(targets) + " | phases of the slowest (CPU s) |")
    print("|---|---|" + "---:|" * len(targets) + "---|")
    failures = []
    for name in names:
        for config in configs:
            cells = []
            for target in targets:
                seconds, _, error = results[name, config, target]
                cells.append(f"{seconds:.2f}" + (" (error)" if error else ""))
                if error:
                    print(f"{name} {config} {target}: {error}", file=sys.stderr)
            target = max(targets, key=lambda t: results[name, config, t][0])
            print(f"| {name} | {config} | " + " | ".join(cells) +
                  f" | {target}: {describe(results[name, config, target][1])} |")
    for (name, config, target), (seconds, _, _) in results.items():
        limit = RESNET8_GOAL_S if name == "resnet8" else GOAL_S
        if seconds >= limit:
            failures.append(f"{name} {config} {target} {seconds:.1f} s")
    worst = max(results.values(), key=lambda r: r[0])[0]
    verdict = "holds" if not failures else "does NOT hold: " + "; ".join(failures)
    print(f"\nGoal (every build < {GOAL_S:g} s CPU, resnet8 < {RESNET8_GOAL_S:g} s): {verdict} "
          f"(slowest build {worst:.2f} s, {len(results)} builds).")


if __name__ == "__main__":
    sys.exit(main())
