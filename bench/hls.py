"""FPGA benchmark: mcugen's hls target at uniform W8A8, power W4A8 and power W4A4, per model:
the estimate (DSP, BRAM_18K, LUT, latency), the C simulation's build time and its bit-exact
check, and the accuracy of the integer code; then, per layer of the resnet8-like models, DSP,
LUT and BRAM_18K with 16-bit decode tables ("before") and `--decode-bits auto` ("after"); then
hls4ml 1.3.0 on the same models and inputs (bench/_hls4ml_peer.py: its ONNX conversion and csim).

    python bench/hls.py [--board zcu104] [--reuse 16] [--no-peer] [--out bench/hls.md]
    python bench/hls.py --per-layer [--decode-bits 16,auto,8]   # the per-layer tables alone (~1 min)
    python bench/hls.py --dataflow [--board pynq-z2]   # --io stream --fit beside MLPerf Tiny (~30 s)
    python bench/hls.py --dataflow --per-layer         # and each design's processes and FIFOs

The resource and latency figures are mcugen's estimate before synthesis (docs/hls.md), not
synthesis results: there are no Xilinx tools here.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


sys.path.insert(0, str(Path(__file__).resolve().parent))
import _data  # noqa: E402
from _hls4ml_peer import accuracy_text, benchmark_inputs, hls4ml_result, score, table_row  # noqa: E402
from _markdown import emit, save, table  # noqa: E402
from nupes import digits_data  # noqa: E402

import mcugen  # noqa: E402
from mcugen.targets import get_target  # noqa: E402
from mcugen.verify import compare, verify_inputs  # noqa: E402

CONFIGS = {"uniform W8A8": dict(scheme="uniform", wbits=8, abits=8),
           "power W4A8": dict(scheme="power", wbits=4, abits=8),
           "power W4A4": dict(scheme="power", wbits=4, abits=4, first_last_bits="same")}
CALIBRATION = {"digits_cnn": lambda: digits_data("digits_cnn")[2],
               "act_digits": lambda: digits_data("act_digits")[2]}
CSIM_RUNS = 3
# the per-layer tables: residual CNNs, where every inner layer multiplies 4-bit weights by
# activations (8-bit under W4A8) and the decode tables' width decides fabric or DSP
LAYER_MODELS = ("resnet8",)
DECODES = "16,auto"          # before, after
NAME_CHARS = 24


def calibration_for(name):
    return CALIBRATION[name]() if name in CALIBRATION else _data.calibration(name)


def csim_build_seconds(out: Path) -> float:
    """Median wall time of the g++ C simulation build (firmware + testbench), from scratch."""
    target = get_target("hls")
    times = []
    for run in range(CSIM_RUNS):
        start = time.perf_counter()
        target.build(out, variant=f"bench{run}")
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def mac_dsp(report) -> int:
    """DSPs of the multipliers of the MAC layers whose weights and inputs are both at most 4
    bits (their encoders' requantizing multiplies not counted)."""
    return sum(layer["mac_dsp"] for layer in report["layers"]
               if layer.get("multiply") and layer["wbits"] <= 4 and layer["abits"] <= 4)


def measure(name, path, x, labels, label, config, board, reuse):
    x = np.ascontiguousarray(x, dtype=np.float32)     # onnxruntime's float model takes float32
    with tempfile.TemporaryDirectory(prefix="mcugen_hls_") as tmp:
        out = Path(tmp) / "p"
        project = mcugen.build(str(path), target="hls", board=board, out=out,
                               calib=calibration_for(name),
                               target_options={"reuse": reuse, "fit": True}, **config)
        check = compare(out, project.schedule, verify_inputs(project.schedule, 48, seed=3))
        build_s = csim_build_seconds(out)
    outputs = project.run(x).reshape(len(x), -1)
    h = project.report["hls"]
    scores = score(str(path), x, labels, outputs)
    return [name, label, h["reuse"],
            f"{h['dsp']:,}", mac_dsp(project.report), f"{h['bram_18k']:,}", f"{h['lut']:,}",
            f"{h['latency_cycles']:,}", f"{h['latency_us']:,}", f"{build_s:.1f}",
            f"{check.mismatches}/{check.n}", accuracy_text(scores)]


def layer_report(name, path, config, board, reuse, decode):
    project = mcugen.build(str(path), target="hls", board=board, calib=calibration_for(name),
                           target_options={"reuse": reuse, "fit": True}, decode_bits=decode,
                           **config)
    for layer in project.report["layers"]:
        plan = project.plan["macs"].get(layer["step"])
        if plan is not None:          # how it multiplies, and the decoded operands' widths
            layer["how"] = f"{plan.multiply} {'x'.join(map(str, plan.operand_bits))}"
    return project.report


def layer_rows(reports: dict) -> list:
    """One row per MAC layer, then the other layers, the layer buffers and the total: for each
    decode width, how the layer multiplies and its DSP, LUT and BRAM_18K."""
    keys = ("dsp", "lut", "bram_18k")
    first = next(iter(reports.values()))
    macs = [layer["step"] for layer in first["layers"] if layer.get("multiply")]
    rows = []
    for step in macs:
        row = [step[:NAME_CHARS]]
        for report in reports.values():
            layer = report["layers"][[x["step"] for x in report["layers"]].index(step)]
            row += [layer["how"]] + [f"{layer[k]:,}" for k in keys]
        rows.append(row)
    for label in ("other layers", "layer buffers", "total"):
        row = [f"**{label}**" if label == "total" else label]
        for report in reports.values():
            row += [""] + [f"{resource_of(report, label, k):,}" for k in keys]
        rows.append(row)
    return rows


def resource_of(report, label, key) -> int:
    """A resource of the layers that do not multiply, of the buffers between layers (the
    total's remainder), or the total."""
    layers = report["layers"]
    if label == "other layers":
        return sum(layer.get(key, 0) for layer in layers if not layer.get("multiply"))
    if label == "layer buffers":
        return report["hls"][key] - sum(layer.get(key, 0) for layer in layers)
    return report["hls"][key]


def per_layer_tables(inputs, board, reuse, decodes):
    emit(f"## DSP, LUT and BRAM_18K per layer: --decode-bits {' vs '.join(decodes)} "
         f"(--board {board}, reuse {reuse}, raised by --fit where needed)")
    emit()
    emit("`how`: the layer's multiply (rom, fabric or dsp) and its decoded operands' widths "
         "(weight x input); DSP includes the encoders' (4 per index encoder).")
    emit()
    for name, path, _, _ in inputs:
        for label, config in CONFIGS.items():
            reports = {d: layer_report(name, path, config, board, reuse, d) for d in decodes}
            emit(f"### {name}, {label}: reuse " + ", ".join(
                f"{r['hls']['reuse']} ({d})" for d, r in reports.items()))
            emit()
            head = ["layer"]
            for d in decodes:
                head += [f"how ({d})", f"DSP ({d})", f"LUT ({d})", f"BRAM_18K ({d})"]
            table(head, layer_rows(reports))
            print(f"{name} {label} done", file=sys.stderr, flush=True)


# MLPerf Tiny results MEASURED ON HARDWARE by their submitters (v1.0/v1.1 closed division and
# the submitters' papers): (design, model, board, latency ms)
MLPERF_TINY = (("hls4ml, 8-bit, io_stream", "ResNet (IC)", "Pynq-Z2", 7.64),
               ("FINN", "CNV (IC)", "Pynq-Z2", 1.51),
               ("fpgaConvNet, INT8", "IC", "ZedBoard (XC7Z020)", 0.41),
               ("fpgaConvNet, INT8", "KWS", "ZedBoard (XC7Z020)", 0.32))
DATAFLOW = (("resnet8", "power W4A4"), ("resnet8", "uniform W8A8"), ("kws_dscnn", "power W4A4"),
            ("mnist8", "power W4A4"))
PART_KEYS = (("dsp", "DSP"), ("bram_18k", "BRAM_18K"), ("lut", "LUT"), ("lutram", "LUTRAM"))


def dataflow_projects(inputs, board) -> list:
    """(model, config, project) of mcugen's --io stream --fit designs."""
    out = []
    for name, label in DATAFLOW:
        path = next(item[1] for item in inputs if item[0] == name)
        out.append((name, label, mcugen.build(str(path), target="hls", board=board,
                                              calib=calibration_for(name),
                                              target_options={"io": "stream", "fit": True},
                                              **CONFIGS[label])))
        print(name, label, "built", file=sys.stderr, flush=True)
    return out


def share(h, key) -> str:
    """Used, and its share of the part."""
    return f"{h[key]:,} ({100 * h[key] / h['budget'][key]:.0f} %)"


def dataflow_rows(projects, board) -> list:
    """mcugen's designs: the estimate, the cycle simulation beside it; then MLPerf Tiny's."""
    rows = []
    for name, label, project in projects:
        h = project.report["hls"]
        mhz = h["clock_mhz"]
        rows.append([f"mcugen {label}", name, board,
                     f"{h['latency_cycles']:,} cycles = {h['latency_cycles'] / mhz / 1000:.3f} ms "
                     f"(sim {h['sim_latency_cycles']:,})",
                     f"{h['interval_cycles']:,} cycles = {h['interval_cycles'] / mhz / 1000:.3f} ms "
                     f"(sim {h['sim_interval_cycles']:,})",
                     *(share(h, key) for key, _ in PART_KEYS), "estimate (a model, no synthesis)"])
    for design, model, where, ms in MLPERF_TINY:
        rows.append([design, model, where, f"{ms} ms", "", "", "", "", "", "measured on hardware (MLPerf Tiny)"])
    return rows


def dataflow_table(projects, board):
    emit(f"## --io stream --fit on {board} beside MLPerf Tiny")
    emit()
    emit("mcugen's rows are estimates of docs/hls.md's model (the cycle simulation of the same "
         "plan in brackets), each resource with its share of the part (--fit keeps every one "
         "within 80 %); MLPerf Tiny's were measured on boards.")
    emit()
    table(["design", "model", "board", "latency", "interval", *(label for _, label in PART_KEYS),
           "source"], dataflow_rows(projects, board))


def dataflow_layers(projects):
    """Per process of each design: its kind, lanes, cycles per frame and resources; then its
    FIFOs (depth, storage, resources)."""
    keys = ("dsp", "bram_18k", "lut", "lutram", "ff")
    for name, label, project in projects:
        emit(f"### {name}, {label}: per layer")
        emit()
        rows = [[layer["step"][:NAME_CHARS], layer.get("process", ""), layer.get("multiply") or "-",
                 f"{layer.get('lanes', '-')}", f"{layer.get('cycles', 0):,}",
                 *(f"{layer.get(k, 0):,}" for k in keys)] for layer in project.report["layers"]]
        h = project.report["hls"]
        rows.append(["**total**", "", "", "", f"{h['interval_cycles']:,}", *(f"{h[k]:,}" for k in keys)])
        table(["layer", "process", "multiply", "lanes", "cycles", "DSP", "BRAM_18K", "LUT", "LUTRAM",
               "FF"], rows)
        fifos = [[f["name"][:2 * NAME_CHARS], f"{f['depth']:,}", f"{f['beat_bits']:,}", f["impl"],
                  f"{f['bram_18k']:,}", f"{f['lut']:,}", f"{f['lutram']:,}"] for f in h["fifos"]]
        table(["FIFO", "depth", "beat bits", "storage", "BRAM_18K", "LUT", "LUTRAM"], fifos)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--board", default="zcu104")
    parser.add_argument("--reuse", type=int, default=16)
    parser.add_argument("--no-peer", action="store_true", help="skip hls4ml")
    parser.add_argument("--models", help="comma-separated subset")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--per-layer", action="store_true",
                        help="only the per-layer tables (estimates: no csim, no peer)")
    parser.add_argument("--dataflow", action="store_true",
                        help="only the --io stream --fit table beside MLPerf Tiny (default board "
                             "pynq-z2); with --per-layer, each design's processes and FIFOs")
    parser.add_argument("--decode-bits", default=DECODES,
                        help=f"the per-layer tables' columns (default {DECODES})")
    args = parser.parse_args()
    chosen = set(args.models.split(",")) if args.models else None
    inputs = [item for item in benchmark_inputs() if not chosen or item[0] in chosen]
    layered = [item for item in inputs if chosen or item[0] in LAYER_MODELS]
    decodes = args.decode_bits.split(",")
    if args.dataflow:
        board = "pynq-z2" if args.board == "zcu104" else args.board
        projects = dataflow_projects(benchmark_inputs(), board)
        dataflow_table(projects, board)
        if args.per_layer:
            dataflow_layers(projects)
        save(args.out)
        return
    if args.per_layer:
        per_layer_tables(layered, args.board, args.reuse, decodes)
        save(args.out)
        return
    emit(f"## mcugen --target hls --board {args.board} (reuse {args.reuse}, raised by --fit "
         f"where needed)")
    emit()
    rows = []
    for name, path, x, labels in inputs:
        for label, config in CONFIGS.items():
            rows.append(measure(name, path, x, labels, label, config, args.board, args.reuse))
            print(rows[-1], file=sys.stderr, flush=True)
    table(["model", "config", "reuse", "DSP", "DSP in 4-bit MACs' multipliers", "BRAM_18K", "LUT", "latency cycles",
           "latency us", f"csim build s (median of {CSIM_RUNS})", "bit-exact (mismatches/inputs)",
           "accuracy of the integer code"], rows)
    per_layer_tables(layered, args.board, args.reuse, decodes)
    if not args.no_peer:
        emit("## hls4ml 1.3.0 on the same models and inputs (bench/_hls4ml_peer.py)")
        emit()
        peer = []
        for name, path, x, labels in inputs:
            result = hls4ml_result(path, x, labels)
            peer.append(table_row(name, len(x), result))
            print(peer[-1], file=sys.stderr, flush=True)
        table(["model", "n", "converts (route or failure)", "csim build s", "accuracy", "wall s"], peer)
    save(args.out)


if __name__ == "__main__":
    main()
