"""A cycle-level simulation of the `--io stream` dataflow, from the numbers the generator
planned (hls_stream.py): each process runs its loops as its template writes them, step by step
(`program`: which beats a step reads and writes, its initiation interval and latency), and each
FIFO holds `depth` beats with blocking reads and writes.

Timing rules (max-plus, exact for this model): a step starts when its process is free (the
previous step's start plus its II), every beat it reads has arrived, and every FIFO it writes
will have room when it writes (the beat `depth` places earlier has been read); its beats
arrive `latency` cycles after its start. The input port delivers one code a cycle. Frames
follow each other without gaps, as under ap_ctrl_chain: the interval is the distance between
the last output beats of the last two frames, the latency that of the first frame.

Steps are resolved whenever their inputs are known, in any order; when no process can take
its next step and some have steps left, the design deadlocks (a circular wait through full and
empty FIFOs), and the simulation names the full FIFOs.

`fifo_depths` sizes every FIFO from the simulation: first the most beats it holds with unbounded
FIFOs and the input paced at the design's interval (a process that emits in bursts, such as a
strided convolution, or a branch that must hold what the other delays, as a residual Add's skip
path); then, with the input port as fast as it goes, the FIFOs that deadlock (full ones) or the
most stalled one double until the interval and latency are within 0.5 % of unbounded FIFOs.

`fluid` is the estimate the report prints beside it: each process run alone on one frame, in
DATAFLOW order, each input beat arriving when its producer's run emitted it (FIFOs unbounded: no
back-pressure, no other frame). The simulation differs from it only by what the planned FIFO
depths and overlapping frames cost, which `fifo_depths` sizes them to keep within 0.5 %.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from mcugen.errors import MCUGenError

SIM_FRAMES = 3
SEARCH_FRAMES = 2
MAX_DEPTH = 1 << 16
MAX_ROUNDS = 40
WINDOWED = ("conv", "pool", "window_pool")    # an input pixel, then the outputs it completes


@dataclass
class SimResult:
    interval: int
    latency: int
    deadlock: bool = False
    full: list = field(default_factory=list)      # FIFOs full at a deadlock
    stalls: dict = field(default_factory=dict)    # FIFO -> cycles its writer waited for room
    occupancy: dict = field(default_factory=dict)  # FIFO -> most beats it held
    done: list = field(default_factory=list)      # each frame's last output beat


def program(proc, streams) -> list:
    """One frame of `proc`'s steps: (reads, writes, ii, latency), reads and writes lists of
    (stream, beat index)."""
    t, kind = proc.t, proc.kind
    ins, outs = proc.ins, proc.outs
    if kind == "read_input":
        c = t["channels"]
        return [((), ((outs[0], b),), c, c) for b in range(t["beats"])]
    if kind == "write_output":
        c = t["channels"]
        return [(((ins[0], b),), (), c, c) for b in range(t["beats"])]
    if kind == "fork":
        return [(((ins[0], b),), tuple((o, b) for o in outs), 1, 1) for b in range(t["beats"])]
    if kind == "add":
        ii, lat = t["citers"], t["citers"] + t["depth"]
        return [(((ins[0], b), (ins[1], b)), ((outs[0], b),), ii, lat) for b in range(t["pixels"])]
    if kind == "concat":
        return [(tuple((s, b) for s in ins), ((outs[0], b),), 1, t["depth"]) for b in range(t["pixels"])]
    if kind in WINDOWED:
        return windowed(ins[0], outs[0], t["emit"], t["per_out"], t["per_in"])
    if kind == "dense":
        steps = [(((ins[0], b),), (), 1, 1) for b in range(t["in_beats"])]
        return steps + [((), ((outs[0], 0),), t["compute"], t["compute"])]
    if kind == "whole":
        steps = [(((s, b),), (), 1, 1) for s in ins for b in range(streams[s].beats)]
        steps.append(((), (), t["compute"], t["compute"]))
        return steps + [((), ((outs[0], b),), 1, 1) for b in range(streams[outs[0]].beats)]
    raise ValueError(kind)


def windowed(src, dst, emit, per_out, per_in) -> list:
    """A line-buffer or row-accumulator process: each input pixel `per_in` cycles, then the
    outputs it completes, each `per_out` cycles (a sequential loop: its II is its length)."""
    steps, o = [], 0
    for i, n in enumerate(emit):
        steps.append((((src, i),), (), per_in, per_in))
        for _ in range(int(n)):
            steps.append(((), ((dst, o),), per_out, per_out))
            o += 1
    return steps


def simulate(design, depths: dict | None = None, frames: int = SIM_FRAMES, pace: int = 0) -> SimResult:
    """`pace`: cycles per beat of the input port (0: one code a cycle)."""
    procs, streams = design["processes"], design["streams"]
    depth = {name: (depths or {}).get(name, s.depth) for name, s in streams.items()}
    beats = {name: s.beats for name, s in streams.items()}
    progs = [program(p, streams) for p in procs]
    if pace:
        progs[0] = [(rd, wr, max(ii, pace), lat) for rd, wr, ii, lat in progs[0]]
    avail = {name: [] for name in streams}
    reads = {name: [] for name in streams}
    stalls = {name: 0 for name in streams}
    state = [[0, 0, 0] for _ in procs]      # frame, step, next free cycle
    done = []
    sink = next(i for i, p in enumerate(procs) if p.kind == "write_output")
    while True:
        moved = False
        for i, prog in enumerate(progs):
            moved |= advance(prog, state[i], frames, avail, reads, beats, depth, stalls,
                             done if i == sink else None)
        if all(s[0] >= frames for s in state):
            break
        if not moved:
            full = [n for n in streams if len(avail[n]) - len(reads[n]) >= depth[n]]
            return SimResult(0, 0, True, full, stalls)
    occupancy = {n: peak(avail[n], reads[n]) for n in streams}
    interval = done[-1] - done[-2] if len(done) > 1 else done[-1]
    return SimResult(interval, done[0], False, [], stalls, occupancy, done)


def advance(prog, st, frames, avail, reads, beats, depth, stalls, done) -> bool:
    """Take as many steps of one process as are resolved; True if it took any."""
    moved = False
    while st[0] < frames:
        rd, wr, ii, lat = prog[st[1]]
        start = st[2]
        for s, b in rd:
            k = st[0] * beats[s] + b
            if k >= len(avail[s]):
                return moved
            start = max(start, avail[s][k])
        room = start
        for s, b in wr:
            k = st[0] * beats[s] + b - depth[s]
            if k >= 0:
                if k >= len(reads[s]):
                    return moved
                room = max(room, reads[s][k] + 1 - lat)
        for s, _ in wr:
            stalls[s] += room - start
        start = room
        for s, _ in rd:
            reads[s].append(start)
        for s, _ in wr:
            avail[s].append(start + lat)
        if done is not None and st[1] == len(prog) - 1:
            done.append(start + lat)
        st[2] = start + ii
        st[1] += 1
        if st[1] == len(prog):
            st[0], st[1] = st[0] + 1, 0
        moved = True
    return moved


def peak(arrive: list, leave: list) -> int:
    """Most beats a FIFO held: arrivals up to a time minus departures before it."""
    events = sorted([(t, 1) for t in arrive] + [(t, -1) for t in leave])
    level = best = 0
    for _, step in events:
        level += step
        best = max(best, level)
    return best


def fifo_depths(design) -> dict:
    streams = design["streams"]
    source = next(p for p in design["processes"] if p.kind == "read_input")
    pace = max(source.t["channels"], fluid(design)["interval"] // max(1, source.t["beats"]))
    unbounded = {n: MAX_DEPTH for n in streams}
    paced = simulate(design, unbounded, SEARCH_FRAMES, pace)
    free = simulate(design, unbounded, SEARCH_FRAMES)
    depths = {n: min(max(s.depth, paced.occupancy[n] + 1), MAX_DEPTH) for n, s in streams.items()}
    grown = [n for n in streams if n not in source.outs]     # the port's FIFO never helps
    for _ in range(MAX_ROUNDS):
        run = simulate(design, depths, SEARCH_FRAMES)
        if run.deadlock:
            grow = [n for n in run.full if n in grown] or grown
        elif run.interval > free.interval * 1.005 or run.latency > free.latency * 1.005:
            grow = [max(grown, key=lambda n: run.stalls[n])]
        else:
            break
        if all(depths[n] >= MAX_DEPTH for n in grow):
            break
        for n in grow:
            depths[n] = min(MAX_DEPTH, depths[n] * 2)
    return depths


def fluid(design) -> dict:
    """The estimate: per process, in DATAFLOW order, its program run alone on one frame with each
    input beat arriving when its producer's run emitted it; returns the latency (the output's
    last beat) and the interval (the busiest process's cycles per frame).

    Each beat's own time, not a stream's first and last with the rest spread evenly between: a
    process waiting on its input emits in bursts at its own rate (a conv's bottom-padded rows
    after the last input row, a pool's row per k_h input rows), and spreading mnist8's conv tail
    over the frame put its last pool output, hence the dense, 1,240 cycles early."""
    streams = design["streams"]
    arrive = {s: [] for s in streams}
    latency = 0
    for proc in design["processes"]:
        free = 0
        for rd, wr, ii, lat in program(proc, streams):
            start = max([free] + [arrive[s][b] for s, b in rd])
            for s, _ in wr:          # every program writes a stream's beats in order
                arrive[s].append(start + lat)
            free = start + ii
        if proc.kind == "write_output":
            latency = free
    busy = max(sum(step[2] for step in program(p, streams)) for p in design["processes"])
    return {"latency": latency, "interval": busy}


def dump(design) -> str:
    """dataflow.json: what the simulation needs, as the generator planned it."""
    def plain(value):
        return value.tolist() if isinstance(value, np.ndarray) else value
    procs = [{"name": p.name, "kind": p.kind, "ins": p.ins, "outs": p.outs,
              "t": {k: plain(v) for k, v in p.t.items()}} for p in design["processes"]]
    streams = [{"name": s.name, "producer": s.producer, "consumer": s.consumer,
                "beats": s.beats, "depth": s.depth} for s in design["streams"].values()]
    return json.dumps({"processes": procs, "streams": streams}, indent=1)


def load(path: Path) -> dict:
    data = json.loads(Path(path).read_text())
    procs = [SimpleNamespace(**p) for p in data["processes"]]
    return {"processes": procs, "streams": {s["name"]: SimpleNamespace(**s) for s in data["streams"]},
            "kinds": {p.name: p.kind for p in procs}}


def check_project(project: Path) -> dict | None:
    """`mcugen verify` on a stream project: simulate dataflow.json, fail on a deadlock, record the
    measured interval and latency in report.json (the report shows them beside the estimate)."""
    path = Path(project) / "dataflow.json"
    if not path.is_file():
        return None
    run = simulate(load(path))
    if run.deadlock:
        raise MCUGenError(f"the dataflow deadlocks with the planned FIFO depths (full: "
                          f"{', '.join(run.full) or 'none'})")
    found = {"interval": int(run.interval), "latency": int(run.latency), "deadlock": False,
             "when": "mcugen verify"}
    report = Path(project) / "report.json"
    if report.is_file():
        data = json.loads(report.read_text())
        data.setdefault("hls", {})["verified"] = found
        report.write_text(json.dumps(data, indent=1))
    return found
