"""What a finished sweep leaves for people: the plots, index.html, and the Pareto table with
the `mcugen build` command of each Pareto point (printed by the CLI)."""
from __future__ import annotations

from pathlib import Path

from mcugen.explore.html import page
from mcugen.explore.pareto import best
from mcugen.explore.plots import QUALITY_LABELS, layers_plot, short_label, tradeoff_plot
from mcugen.explore.space import build_command
from mcugen.explore.store import INDEX, PLOTS, write_atomic

FLASH_PLOT, COST_PLOT, LAYERS_PLOT = PLOTS


def commands(meta: dict, records: list[dict]) -> dict:
    """id -> the `mcugen build` command line that makes that point's project."""
    return {r["id"]: build_command(r["options"], meta["model_path"], meta["calib_path"],
                                   meta["target"], meta["board"], meta["seed"], r["id"])
            for r in records}


def write_outputs(out: Path, meta: dict, records: list[dict], fronts: dict) -> list[str]:
    """The PNGs (those that have something to show) and index.html; returns the PNG names."""
    written = []
    for stale in PLOTS:
        (out / stale).unlink(missing_ok=True)
    tradeoff_plot(records, meta, "flash_bytes", "flash (KiB: weights and tables)", 1024,
                  fronts["accuracy_vs_flash"], out / FLASH_PLOT)
    written.append(FLASH_PLOT)
    if meta["cost"]:
        tradeoff_plot(records, meta, "cost", f"{meta['cost']['column']} per inference (millions)",
                      1e6, fronts["accuracy_vs_cost"], out / COST_PLOT)
        written.append(COST_PLOT)
    top = best(records, (meta["quality"], meta["higher_is_better"]))
    if top is not None:
        layers_plot(top, meta, out / LAYERS_PLOT)
        written.append(LAYERS_PLOT)
    write_atomic(out / INDEX, page(meta, records, fronts["pareto"], written, commands(meta, records)))
    return written


def pareto_table(meta: dict, records: list[dict], pareto_ids: list[str]) -> str:
    """Markdown: the Pareto points (best quality first), then each one's build command."""
    chosen = [r for r in records if r["id"] in pareto_ids]
    chosen.sort(key=lambda r: -r[meta["quality"]] if meta["higher_is_better"] else r[meta["quality"]])
    cost = meta["cost"]["column"] if meta["cost"] else None
    head = ["point", QUALITY_LABELS[meta["quality"]], "flash B", "RAM B"] + ([cost] if cost else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in chosen:
        value = r[meta["quality"]]
        shown = f"{100 * value:.2f}" if meta["higher_is_better"] else f"{value:.4g}"
        cells = [short_label(r["options"]), shown, f"{r['flash_bytes']:,}", f"{r['ram_bytes']:,}"]
        cells += [f"{r['cost']:,}" if r.get("cost") is not None else "-"] if cost else []
        lines.append("| " + " | ".join(cells) + " |")
    made = commands(meta, chosen)
    lines += ["", "build commands:"] + [f"  {made[r['id']]}" for r in chosen]
    return "\n".join(lines)
