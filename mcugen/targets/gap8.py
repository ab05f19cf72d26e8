"""The GAP8 target: PMSIS C for the 8-core cluster, tiled L2 -> L1 (mcugen/codegen/gap8.py),
weights in L2 or streamed from L3, and builds of the same sources through a PMSIS emulation
layer for the host, RV32IMC under qemu (instructions per core) and the CV32E40P RTL (cycles per
core, one core at a time)."""
from __future__ import annotations

from mcugen.codegen.gap8 import plan_tiles, simd_plan, tile_plan
from mcugen.codegen.gap8_l3 import board_layout, kept_in_l2, staging_need
from mcugen.codegen.kernel_plan import mac_kernel_plan
from mcugen.cycle_model import model_constants
from mcugen.errors import MCUGenError
from mcugen.lower.head_loops import plan_head_loops
from mcugen.targets.base import Target
from mcugen.targets.rtl import RtlRuns
from mcugen.targets.simd_lines import simd_lines
from mcugen.text_table import fmt, table


class Gap8Target(RtlRuns, Target):
    name = "gap8"
    default_board = "gap8"
    description = "GreenWaves GAP8: PMSIS C for the cluster, GAP SDK Makefile"
    codegen = "gap8"
    runs_on = ("host", "qemu", "rtl")     # rtl: emu.mk's rtl goal on the CV32E40P RTL
    makefile = "emu.mk"          # the PMSIS emulation build (the Makefile is the GAP SDK's)
    product_tables = False       # the cluster kernels read decode tables only (so far)
    packed_weights = False       # they read decoded weights from L2

    def plan(self, schedule, board, options=None) -> dict:
        # The C kernels' stack buffers count against L2 (layers the fabric controller runs use
        # them), and so do the bytes the SIMD conv's weight layout adds. The cluster's tiles are
        # planned once, here: the fit check reads their L1 (a layer that fits no tiling sends
        # the lowering to its smaller-table fallbacks first), the render and the report the
        # tiles themselves. Attention's steps run head by head where that lowers the L2 arena's
        # peak (lower/head_loops.py): their tiles are then planned for one head's task.
        plan_head_loops(schedule)
        plan = {s.name: {**mac_kernel_plan(s), "layout_extra_bytes":
                         simd_plan(s, schedule, board or {}).get("layout_extra_bytes", 0)}
                for s in schedule.steps}
        if board:
            try:
                for name, tiles in plan_tiles(schedule, board).items():
                    plan[name]["tiles"] = tiles
            except MCUGenError as error:
                for step_plan in plan.values():
                    step_plan["l1_error"] = str(error)
        return plan

    def cost_spec(self, measure: str) -> dict | None:
        """A run on qemu or the RTL counts each core's share: the cost is the cluster's estimate."""
        if measure not in ("qemu", "rtl"):
            return None
        counts = "qemu instruction counts" if measure == "qemu" else "per-core RTL cycles"
        return {"column": "gap8_est_cycles", "label": f"GAP8 cluster cycles, estimated (a model on "
                f"{counts}, mcugen/cycle_model.py), one inference on the first evaluation input"}

    def shortfalls(self, schedule, board, plan, weights_in=None) -> list:
        short = super().shortfalls(schedule, board, plan, weights_in)
        errors = {p["l1_error"] for p in plan.values() if "l1_error" in p}
        return short + [("l1", error) for error in sorted(errors)]

    def needs(self, schedule, board, plan, weights_in) -> dict:
        if weights_in != "l3":
            return super().needs(schedule, board, plan, weights_in)
        needs = super().needs(schedule, board, plan, "flash")
        ram, holds = needs["ram"]
        needs["ram"] = (ram + kept_in_l2(schedule) + staging_need(schedule)[1],
                        holds + ", L2 tables and one layer's weights staged from L3")
        needs["l3"] = needs["flash"]
        return needs

    def weights_placement(self, schedule, board, plan) -> str:
        """Weights stream from L3 (HyperRAM) when they do not fit L2 and the board has L3."""
        if "l3" in board["memory"] and self.shortfalls(schedule, board, plan, "l2"):
            return "l3"
        return board.get("weights_in", "flash")

    def report_extras(self, report, schedule, board, plan) -> None:
        """Per layer, the L2->L1 tiles, L1 bytes and DMA bytes of the generated code."""
        super().report_extras(report, schedule, board, plan)
        plans = {name: p["tiles"] for name, p in plan.items()}
        for layer, tiles in zip(report["layers"], tile_plan(schedule, board, plans)):
            layer.update(tiles=tiles["tiles"], l1_bytes=tiles["l1_bytes"],
                         dma_bytes=tiles["dma_bytes"], runs_on=tiles["on"], tasks=tiles["tasks"])
            if board.get("simd") and layer["macs"]:
                layer["kernel"] = tiles["kernel"]        # the SIMD lanes of its conv kernel, or plain
        if board.get("simd"):
            report["simd"] = f"{board['name']} ({board['simd']})"
        totals = report["totals"]
        totals["dma_bytes"] = sum(layer["dma_bytes"] for layer in report["layers"])
        totals["l1_bytes_max"] = max(layer["l1_bytes"] for layer in report["layers"])
        report["gap8_model"] = model_constants(board)
        if schedule.meta["weights_in"] == "l3":
            layout = board_layout(schedule, board)
            for layer in report["layers"]:
                layer["l3_bytes"] = layout["steps"].get(layer["step"], {}).get("bytes", 0)
            totals.update(l3_bytes=layout["bytes"], l3_slots=layout["slots"],
                          l3_staging_bytes=layout["staging_bytes"])

    def report_lines(self, report) -> list:
        return gap8_lines(report) + simd_lines(report)


def gap8_lines(report) -> list:
    """GAP8 per layer: where it runs, tiles, L1 and DMA bytes, and (after `simulate --on qemu`
    or `--on rtl`) the cycle estimate of the model in mcugen/cycle_model.py."""
    t = report["totals"]
    unit = report.get("gap8_counts", "instructions")
    busiest = f"busiest_core_{unit}"
    head = ("GAP8 step", "on", "tiles", "L1 B", "DMA B",
            "busiest core " + ("cycles" if unit == "cycles" else "instr"), "est. cycles", "bound",
            "est. MAC/cycle")
    rows = [(layer["step"][:34], layer.get("runs_on", "-"), fmt(layer.get("tiles")), fmt(layer.get("l1_bytes")),
             fmt(layer.get("dma_bytes")), fmt(layer.get(busiest)),
             fmt(layer.get("est_cycles")), layer.get("bound", "-"), fmt(layer.get("est_macs_per_cycle"), "float"))
            for layer in report["layers"]]
    lines = [""] + table(head, rows)
    lines.append(f"GAP8: L1 up to {t['l1_bytes_max']:,} B per layer, {t['dma_bytes']:,} B moved by DMA per inference")
    if "l3_bytes" in t:
        lines.append(f"GAP8: weights in L3 (HyperRAM, {t['l3_bytes']:,} B, read once per inference), staged "
                     f"through {t['l3_slots']} L2 slot(s) ({t['l3_staging_bytes']:,} B)"
                     + (", the next layer's read during the current one" if t["l3_slots"] == 2 else ""))
    if "est_cycles" in t:
        model = report["gap8_model"]
        lines.append(f"GAP8 estimate {estimate_basis(unit, model)}: {t['est_cycles']:,} cycles = "
                     f"{t['est_time_ms']} ms at {model['cluster_hz'] / 1e6:g} MHz, "
                     f"{t['est_macs_per_cycle']} MAC/cycle; reference: {model['reference']}: "
                     f"{model['reference_macs_per_cycle']} MAC/cycle")
    else:
        lines.append("GAP8 cycle estimate: run `mcugen simulate OUT --on qemu` (instructions) or "
                     "`--on rtl` (cycles) first")
    return lines


def estimate_basis(unit, model) -> str:
    """What the GAP8 estimate is built from, said plainly."""
    dma = f"DMA {model['dma_bytes_per_cycle']} B/cycle"
    if unit == "cycles":
        return ("from per-core cycles measured on the CV32E40P RTL (one core at a time, ideal memory) "
                "+ the model's fork, task and DMA costs: a MODEL for the cluster (no TCDM contention; "
                f"{dma})")
    return (f"(a MODEL, not a measurement: instructions from qemu on plain RV32IMC, "
            f"{model['cpi']} cycle each, {dma})")
