"""The hls target: a Vitis HLS project (firmware/, tb/, hls_config.cfg, build_prj.tcl) for an
FPGA board, C-simulated here with g++ against the ap_types headers of an installed package:
its run place is runners.RUN_PLACES["csim"], which `--on host` selects (a user asks to run here,
on this machine; for an hls project that is the C simulation).

Options (HlsTarget.options): `reuse` (products per multiplier per output, adjusted per layer),
`io` (parallel: arrays on ap_memory ports; stream: a dataflow of processes on pixel streams,
AXI-Stream ports: mcugen/codegen/hls_stream.py), `interval` or `fps` (stream: the cycles per
frame every layer is sized to meet), `fit` (raise reuse, or the interval, until the estimate
fits).
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from mcugen.codegen import hls_estimate as estimate
from mcugen.codegen import hls_stream
from mcugen.codegen.hls_plan import (MAC_KINDS, ap_type, buffer_ranges, mac_plan, product_rom_plan,
                                     readers, type_bits)
from mcugen.codegen.project import recording_new_files
from mcugen.errors import MCUGenError
from mcugen.reference.interpreter import quantize_input, run_codes
from mcugen.runners import HOST_TIMEOUT, RUN_PLACES, RunResult, find_compiler
from mcugen.targets.base import Target, TargetOption
from mcugen.text_table import fmt, table

RESOURCES = {"dsp": "DSP", "bram_18k": "BRAM_18K", "lut": "LUT", "lutram": "LUTRAM", "ff": "FF"}
IO_MODES = ("parallel", "stream")
MAX_REUSE = 1 << 20
AP_TYPES_HINT = ("install hls4ml (pip install hls4ml: its wheel ships the ap_types headers) "
                 "or set MCUGEN_AP_TYPES to a directory holding ap_int.h")


class HlsTarget(Target):
    name = "hls"
    default_board = "pynq-z2"
    description = "a Vitis HLS project (C++ with ap_int, pragmas, testbench) for an FPGA board"
    codegen = "hls"
    runs_on = ("csim",)              # C simulation with g++ (`--on host`)
    storage_first = "codes"          # weights as b-bit code ROMs plus a decode table
    exact_encoders = ("threshold",)  # a few comparators, where bracket's index is a DSP multiply
    options = (
        TargetOption("reuse", "products per multiplier per output (adjusted per layer, see the "
                     "report)", int, 16),
        TargetOption("io", "array ports (parallel) or AXI-Stream (stream)", str, "parallel",
                     IO_MODES),
        TargetOption("interval", "io stream: cycles per frame every layer is sized to meet (0: "
                     "from --reuse, or the fastest that fits with --fit)", int, 0),
        TargetOption("fps", "io stream: frames per second at the board's clock (instead of "
                     "--interval)", float, 0.0),
        TargetOption("fit", "raise the reuse factor (io stream: the interval) until the estimated "
                     "DSP, BRAM, LUT and FF fit the board (io stream: 80 % of it)",
                     default=False, is_flag=True),
    )

    def check_options(self, given: dict) -> dict:
        options = super().check_options(given)
        if not 1 <= options["reuse"] <= MAX_REUSE:
            raise MCUGenError(f"--reuse must be a whole number from 1 to {MAX_REUSE:,} "
                              f"(got {options['reuse']})")
        if options["interval"] < 0 or options["fps"] < 0:
            raise MCUGenError("--interval and --fps take a positive number")
        if (options["interval"] or options["fps"]) and options["io"] != "stream":
            raise MCUGenError("--interval and --fps size a dataflow: they need --io stream")
        return options

    # ---- plan and fit -----------------------------------------------------------------------
    def plan(self, schedule, board, options=None) -> dict:
        options = self.check_options(options or {})
        if options["io"] == "stream":
            return stream_plan(schedule, board, options)
        design = design_plan(schedule, board, options["reuse"], options["io"])
        while options["fit"] and self.shortfalls(schedule, board, design) and \
                any(m.lanes > 1 for m in design["macs"].values()):
            design = design_plan(schedule, board, design["reuse"] * 2, options["io"])
        return design

    def cost_spec(self, measure: str) -> dict | None:
        """Nothing runs the design: its cost is the estimate made before synthesis."""
        return {"column": "hls_est_cycles", "label": "latency cycles, HLS estimate (a model "
                "before synthesis)"} if measure == "none" else None

    def needs(self, schedule, board, plan, weights_in) -> dict:
        holds = {"dsp": "multipliers and encoders", "bram_18k": "ROMs and layer buffers",
                 "lut": "fabric multipliers, adders, encoders, small ROMs",
                 "lutram": "line buffers and FIFOs in LUTs", "ff": "pipeline registers"}
        return {key: (plan["totals"][key], holds[key]) for key in RESOURCES
                if key in plan["totals"] and board["fpga"].get(key)}

    def budget(self, board, resource) -> int:
        return int(board["fpga"][resource])

    def shortfalls(self, schedule, board, plan, weights_in=None) -> list:
        short = super().shortfalls(schedule, board, plan, weights_in)
        at = (f"at interval {plan['interval_target']:,}" if plan["io"] == "stream"
              else f"at reuse {plan['reuse']}")
        return [(what, f"{text} {at}") for what, text in short]

    def shortfall_phrase(self, what, need, have, holds) -> str:
        return f"{RESOURCES[what]} needs {need:,} of {have:,} ({holds})"

    def weights_placement(self, schedule, board, plan) -> str:
        return "rom"

    def fit_advice(self) -> str:
        return ("the estimate is before synthesis. Try --fit (raises the reuse factor until it "
                "fits), a larger --reuse, lower --wbits/--abits, or a bigger board (mcugen boards)")

    def report_extras(self, report, schedule, board, plan) -> None:
        for layer in report["layers"]:
            layer.update(plan["layers"][layer["step"]])
        report["hls"] = {"board": board["name"], "part": board["fpga"]["part"],
                         "clock_mhz": board["fpga"]["clock_mhz"], "reuse": plan["reuse"],
                         "io": plan["io"], **plan["totals"],
                         "budget": {k: int(board["fpga"][k]) for k in RESOURCES if k in board["fpga"]}}
        if plan["io"] == "stream":
            report["hls"].update(interval_target=plan["interval_target"],
                                 fifos=hls_stream.fifo_rows(plan))

    def report_lines(self, report) -> list:
        return hls_lines(report)

    # ---- build and run: C simulation ----------------------------------------------------------
    def build(self, project, variant="", sanitize=False, trace=False, on="host"):
        place = self.run_place(on)
        return build_csim(Path(project), variant or ("asan" if sanitize else place.name), sanitize,
                          place)

    def run(self, exe, schedule, x, on="host", timeout=None, trace_bytes=0):
        codes = quantize_input(schedule, x).reshape(len(x), -1)
        n_out = int(np.prod(schedule.output["shape"]))
        with tempfile.TemporaryDirectory(prefix="mcugen") as tmp:
            fin, fout = Path(tmp) / "inputs.txt", Path(tmp) / "outputs.txt"
            np.savetxt(fin, codes, fmt="%d")
            env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0", UBSAN_OPTIONS="print_stacktrace=1")
            try:
                done = subprocess.run([str(exe), str(fin), str(fout)], capture_output=True, text=True,
                                      timeout=timeout or HOST_TIMEOUT, env=env, stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                raise MCUGenError(f"the C simulation ran longer than {timeout or HOST_TIMEOUT} s") from None
            if done.returncode != 0:
                tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
                raise MCUGenError(f"the C simulation failed (exit {done.returncode}): {' | '.join(tail)}")
            out = np.loadtxt(fout, dtype=np.int64, ndmin=2).reshape(-1, n_out)
        if len(out) != len(x):
            raise MCUGenError(f"the C simulation wrote {len(out)} of {len(x)} outputs")
        return RunResult(out)

    def locate_mismatch(self, project, schedule, x1, index) -> str:
        got = self.run(self.build(project), schedule, x1).outputs.reshape(-1)
        want = run_codes(schedule, quantize_input(schedule, x1)).reshape(-1)
        e = int(np.nonzero(got != want)[0][0])
        return f"input {index}: output element {e}: expected {int(want[e])}, got {int(got[e])}"


def stream_plan(schedule, board, options) -> dict:
    """The dataflow design (hls_stream): the target interval from --interval, --fps, --fit or
    --reuse, every layer sized to meet it."""
    if options["interval"]:
        interval = options["interval"]
    elif options["fps"]:
        interval = max(1, int(board["fpga"]["clock_mhz"] * 1e6 / options["fps"]))
    elif options["fit"]:
        interval = hls_stream.fastest_interval(schedule)
    else:
        interval = hls_stream.reuse_interval(schedule, options["reuse"])
    design = hls_stream.plan_stream(schedule, board, interval, options["fit"])
    design.update(reuse=options["reuse"], io="stream", readers=readers(schedule),
                  layers=hls_stream.layer_rows(design))
    return design


def design_plan(schedule, board, reuse: int, io: str) -> dict:
    """The whole design at one reuse factor: types, MAC layers, fan-out copies, estimates."""
    ranges = buffer_ranges(schedule)
    types = {name: ap_type(*ranges[name]) for name in schedule.buffers}
    roots = {b.name: (b.alias_of or b.name) for b in schedule.buffers.values()}
    fpga = board["fpga"]
    macs = {s.name: layer_plan(s, reuse, ranges[s.inputs[0]], fpga)
            for s in schedule.steps if s.kind in MAC_KINDS}
    layers, costs = {}, []
    for step in schedule.steps:
        if step.name in macs:
            m = macs[step.name]
            cost = estimate.mac_cost(step, m, fpga)
            # a new output every `chunks` cycles (the chunk loop runs at II = 1)
            layers[step.name] = {"ii": m.chunks, "reuse": m.chunks, "lanes": m.lanes, "multiply": m.multiply,
                                 "acc_bits": m.acc_bits, "weight_bits": type_bits(m.weight_t)}
        else:
            cost = estimate.stream_cost(step, schedule)
            layers[step.name] = {"ii": 1}
        layers[step.name].update({k: int(cost.get(k, 0))
                                  for k in ("dsp", "mac_dsp", "lut", "ff", "bram_18k", "cycles")})
        costs.append(cost)
    fanout = readers(schedule)
    for name, buf in schedule.buffers.items():    # every kernel reads one element a cycle
        if not buf.alias_of:
            costs.append(estimate.buffer_cost(buf.size, type_bits(types[name]), 1,
                                              len(fanout.get(name, [])) or 1))
    totals = estimate.totals(costs)
    totals["latency_us"] = round(totals["latency_cycles"] / fpga["clock_mhz"], 2)
    return {"reuse": reuse, "io": io, "types": types, "ranges": ranges, "roots": roots,
            "macs": macs, "readers": fanout, "layers": layers, "totals": totals}


def layer_plan(step, reuse: int, x_range: tuple, fpga: dict):
    """A MAC layer's plan: its multiply (a fabric or DSP multiply of the decoded operands, or the
    lowering's product table), or a ROM of the decoded operands' products where the estimate
    finds that cheaper on this board (e.g. W4 x A4 on 16-bit tables on a part short of DSPs)."""
    plan = mac_plan(step, reuse, x_range)
    return estimate.cheaper(step, plan, product_rom_plan(plan, x_range), fpga)


def ap_types_dir() -> Path:
    """The ap_types headers: MCUGEN_AP_TYPES, else the installed hls4ml package's copy."""
    given = os.environ.get("MCUGEN_AP_TYPES")
    if given:
        path = Path(given)
    else:
        spec = importlib.util.find_spec("hls4ml")
        if spec is None or not spec.submodule_search_locations:
            raise MCUGenError(f"the ap_types headers were not found: {AP_TYPES_HINT}")
        path = Path(list(spec.submodule_search_locations)[0]) / "templates" / "vivado" / "ap_types"
    if not (path / "ap_int.h").is_file():
        raise MCUGenError(f"no ap_int.h in {path}: {AP_TYPES_HINT}")
    return path


def csim_command(cxx: str, project: Path, exe: Path, sanitize: bool) -> list:
    # HLS pragmas are unknown to g++, and loop labels exist for the HLS reports only. GCC's
    # flow analysis, inlined into the vendor's ap_private (whose default constructor leaves the
    # value unset, as hardware registers), flags copies inside those headers as uninitialised:
    # false alarms there, so those two warnings are off (ASan/UBSan and the bit-exact
    # comparison check the values).
    flags = ["-std=c++20", "-O1" if sanitize else "-O2", "-Wall", "-Wextra", "-Werror",
             "-Wno-unknown-pragmas", "-Wno-unused-label", "-Wno-uninitialized",
             "-Wno-maybe-uninitialized", "-isystem", str(ap_types_dir()), "-I", str(project / "firmware")]
    if sanitize:
        flags += ["-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
    return [cxx, *flags, str(project / "firmware" / "model.cpp"), str(project / "tb" / "tb_model.cpp"),
            "-o", str(exe)]


def build_csim(project: Path, variant: str, sanitize: bool, place=RUN_PLACES["csim"]) -> Path:
    """The place's compiler (the host's C++) on the firmware and the testbench, into
    build/<variant>/<the place's program>."""
    exe = project / "build" / variant / place.program
    command = csim_command(find_compiler(place.compiler), project, exe, sanitize)
    with recording_new_files(project):
        exe.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        errors = [line for line in lines if "error" in line] or lines or ["g++ failed"]
        raise MCUGenError(f"the generated HLS C++ did not compile: {errors[0]}")
    return exe


def hls_lines(report) -> list:
    """FPGA per layer: how its products are realized, lanes and reuse, II (cycles between two
    outputs in steady state), the estimate of DSP, BRAM_18K, LUT, FF and cycles
    (mcugen/codegen/hls_estimate.py: a model, not synthesis)."""
    h = report["hls"]
    head = ("HLS step", "multiply", "lanes", "reuse", "II", "acc bits", "DSP", "BRAM_18K", "LUT",
            "LUTRAM", "FF", "cycles")
    rows = [(layer["step"][:34], layer.get("multiply") or "-", fmt(layer.get("lanes")),
             fmt(layer.get("reuse")), fmt(layer.get("ii")), fmt(layer.get("acc_bits")), fmt(layer.get("dsp")),
             fmt(layer.get("bram_18k")), fmt(layer.get("lut")), fmt(layer.get("lutram")),
             fmt(layer.get("ff")), fmt(layer.get("cycles"))) for layer in report["layers"]]
    rows.append(("total (with layer buffers)", "", "", "", "", "",
                 *(used_of(h, k) for k in ("dsp", "bram_18k", "lut", "lutram", "ff")),
                 fmt(h["latency_cycles"])))
    lines = [""] + table(head, rows)
    if h["io"] == "stream":
        return lines + stream_lines(h)
    lines.append(f"HLS estimate (a MODEL before synthesis, docs/hls.md) for {h['board']} ({h['part']}) at "
                 f"{h['clock_mhz']} MHz, reuse {h['reuse']}, io {h['io']}: latency "
                 f"{h['latency_cycles']:,} cycles = {h['latency_us']:,} us, a new input every "
                 f"{h['interval_cycles']:,} cycles (DATAFLOW)")
    return lines


def used_of(h, key) -> str:
    """`used/budget` of one resource in the totals row (`-` where the design does not count it)."""
    if key not in h:
        return "-"
    budget = h["budget"].get(key)
    return f"{h[key]:,}/{budget:,}" if budget else f"{h[key]:,}"


def stream_lines(h) -> list:
    """The FIFOs, then the estimate beside the cycle simulation (build time, and `mcugen verify`'s
    run when there was one)."""
    rows = [(f["name"][:48], fmt(f["beats"]), fmt(f["beat_bits"]), fmt(f["depth"]), f["impl"],
             fmt(f["bram_18k"]), fmt(f["lut"]), fmt(f.get("lutram"))) for f in h["fifos"]]
    lines = [""] + table(("FIFO", "beats/frame", "beat bits", "depth", "storage", "BRAM_18K",
                          "LUT", "LUTRAM"), rows)
    mhz = h["clock_mhz"]
    lines.append(f"HLS estimate (a MODEL before synthesis, docs/hls.md) for {h['board']} ({h['part']}) at "
                 f"{mhz} MHz, io stream (dataflow), target interval {h['interval_target']:,} cycles: "
                 f"latency {h['latency_cycles']:,} cycles = {h['latency_us']:,} us, interval "
                 f"{h['interval_cycles']:,} cycles = {round(h['interval_cycles'] / mhz, 2):,} us")
    sim = h.get("verified") or {"interval": h["sim_interval_cycles"], "latency": h["sim_latency_cycles"],
                                "deadlock": h["sim_deadlock"], "when": "build"}
    lines.append(f"cycle simulation ({sim['when']}, hls_sim.py: the planned processes and FIFO depths): "
                 + ("DEADLOCK" if sim["deadlock"] else
                    f"no deadlock, latency {sim['latency']:,} cycles, interval {sim['interval']:,} cycles"))
    return lines
