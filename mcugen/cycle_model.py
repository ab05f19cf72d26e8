"""The GAP8 cycle estimate: a model built from the gap8 project's emulation run one core at a
time, and the board's stated constants (`[cycle_model]` in boards/gap8.toml). The counts are
either exact instructions (RV32IMC under qemu, taken at the model's CPI) or exact cycles (the
CV32E40P RTL with ideal memory, taken as they are); in both cases the fork, task and DMA costs
and their overlap are the model's, so the result is an estimate, labelled so wherever it is
shown; real cycles come from the board's own main.c (pi_perf_read).
"""
from __future__ import annotations

# what a profile's per-step counts are -> the report key that holds them per layer
COUNT_KEYS = {"instructions": "instructions", "cycles": "rtl_cycles"}


def model_constants(board: dict) -> dict | None:
    """What the report keeps of the board to estimate cycles later (None: no model)."""
    if "cycle_model" not in board:
        return None
    clocks = board.get("clock", {})
    return dict(board["cycle_model"], cores=int(board.get("cores", 8)),
                cluster_hz=int(clocks.get("cluster_hz", board.get("clock_hz", 0))),
                fc_hz=int(clocks.get("fc_hz", board.get("clock_hz", 0))))


def layer_cycles(layer: dict, counts: dict, measured: int, model: dict, unit="instructions") -> dict:
    """One step's estimate, in cluster cycles. `measured`: the step's whole count; `counts`: the
    emulation's per-step counters in the same unit: cores_longest / cores_total (inside team
    forks: the busiest core, all cores), emulation (the emulation layer's own), transfers,
    forks. `unit` "instructions" (qemu) are taken at the model's cpi, "cycles" (the RTL) as
    they are. A step run head by head (Schedule.head_loops) sends one cluster task per head
    (layer["tasks"]), each with its fixed cost."""
    per_count = model["cpi"] if unit == "instructions" else 1.0
    busiest = f"busiest_core_{unit}"
    own = measured - counts["emulation"]                # what the board would execute
    if layer.get("runs_on") != "cluster":
        fc = per_count * own * model["cluster_hz"] / model["fc_hz"]     # FC cycles in cluster cycles
        return {"est_cycles": round(fc), "bound": "fc", busiest: own}
    controller = own - counts["cores_total"]             # the cluster controller outside forks
    compute = (per_count * (controller + counts["cores_longest"])
               + model["fork_cycles"] * counts["forks"] + model["task_cycles"] * layer.get("tasks", 1))
    dma = layer["dma_bytes"] / model["dma_bytes_per_cycle"] + model["dma_setup_cycles"] * counts["transfers"]
    tiles = max(1, layer.get("tiles", 1))
    cycles = max(compute, dma) + min(compute, dma) / tiles if tiles > 1 else compute + dma
    record = {"est_cycles": round(cycles), "bound": "compute" if compute >= dma else "dma",
              busiest: controller + counts["cores_longest"],
              "core_balance": round(counts["cores_total"] / (model["cores"] * counts["cores_longest"]), 3)
              if counts["cores_longest"] else None}
    if layer.get("macs"):
        record["est_macs_per_cycle"] = round(layer["macs"] / cycles, 3)
    return record


def add_estimate(report: dict, gap8_counts: dict, unit="instructions") -> None:
    """Per layer and in total: estimated cycles, MAC/cycle and time at the cluster clock, from
    counts in `unit` (report["gap8_counts"] says which, for the labels)."""
    model = report["gap8_model"]
    key = COUNT_KEYS[unit]
    for layer in report["layers"]:
        counts = gap8_counts.get(layer["step"])
        if counts is None or layer.get(key) is None:
            continue
        layer.update(layer_cycles(layer, counts, layer[key], model, unit))
    estimated = [layer for layer in report["layers"] if "est_cycles" in layer]
    if not estimated:
        return
    report["gap8_counts"] = unit
    _add_l3_waits(estimated, report["totals"].get("l3_slots", 0), model)
    t = report["totals"]
    t["est_cycles"] = sum(layer["est_cycles"] for layer in estimated)
    t["est_time_ms"] = round(1e3 * t["est_cycles"] / model["cluster_hz"], 3)
    t["est_macs_per_cycle"] = round(t["macs"] / t["est_cycles"], 3) if t["est_cycles"] else None
    t["reference_macs_per_cycle"] = model["reference_macs_per_cycle"]


def _add_l3_waits(layers: list, slots: int, model: dict) -> None:
    """Layers whose weights come from L3 wait for the part of their HyperRAM read that is not
    hidden: with two staging slots it runs during the previous streamed layer; with one slot
    (and for the first streamed layer) it runs before the layer, in full."""
    streamed = [layer for layer in layers if layer.get("l3_bytes")]
    compute = [layer["est_cycles"] for layer in streamed]
    for k, layer in enumerate(streamed):
        read = layer["l3_bytes"] / model["l3_bytes_per_cycle"]
        hidden = compute[k - 1] if slots == 2 and k > 0 else 0
        layer["l3_wait_cycles"] = round(max(0.0, read - hidden))
        layer["est_cycles"] += layer["l3_wait_cycles"]
