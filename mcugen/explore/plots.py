"""The sweep's PNG plots (matplotlib, drawn off-screen without pyplot, so no global state):
accuracy against flash and against the cost (instructions or cycles), the Pareto front
highlighted, and the best point's flash and cost per layer. An accuracy axis (a percentage)
never runs past 100 % nor below 0 %: matplotlib's margins would (one point at 99 % alone
gives 94-104); points on the clamped edge are drawn unclipped, so they stay whole."""
from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

QUALITY_LABELS = {"top1": "top-1 accuracy (%)", "float_agreement": "top-1 agreement with float (%)",
                  "output_error": "output error relative to float"}


def short_label(options: dict) -> str:
    fl = "fl8" if str(options["first_last_bits"]) == "8" else "flsame"
    return (f"{options['scheme']} W{options['wbits']}A{options['abits']} {fl} "
            f"{options['weight_storage']} {options['encoder']} {options['method']}")


def quality_value(record: dict, meta: dict) -> float:
    value = record[meta["quality"]]
    return 100 * value if meta["higher_is_better"] else value


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)


def tradeoff_plot(records: list[dict], meta: dict, x_key: str, x_label: str, scale: float,
                  front_ids: list[str], path: Path) -> Figure:
    """Quality against x_key/scale: every point, those that do not fit marked, the front
    joined and numbered, with the numbers' key beside the axes. Returns the saved figure."""
    fig = Figure(figsize=(12, 5.5))
    ax = fig.add_axes((0.07, 0.1, 0.55, 0.82))
    usable = [r for r in records if r.get(meta["quality"]) is not None and r.get(x_key) is not None]

    def xy(rs):
        return [r[x_key] / scale for r in rs], [quality_value(r, meta) for r in rs]
    fits = [r for r in usable if r["fits"] and r["id"] not in front_ids]
    ax.scatter(*xy(fits), c="0.6", s=22, label="point", clip_on=False)
    misfits = [r for r in usable if not r["fits"]]
    if misfits:
        ax.scatter(*xy(misfits), c="tab:orange", marker="x", s=30,
                   label=f"does not fit {meta['board']}", clip_on=False)
    front = sorted((r for r in usable if r["id"] in front_ids), key=lambda r: r[x_key])
    if front:
        ax.plot(*xy(front), c="tab:red", lw=1, drawstyle="steps-post")
        ax.scatter(*xy(front), c="tab:red", s=40, zorder=3, label="Pareto front", clip_on=False)
        _number_front(fig, ax, front, meta, x_key, scale)
    if meta.get("float_quality") is not None:
        ax.axhline(100 * meta["float_quality"], ls="--", c="tab:blue", lw=0.8, label="float model")
    if meta["higher_is_better"]:
        clamp_percent_axis(ax)
    ax.set_xlabel(x_label)
    ax.set_ylabel(QUALITY_LABELS[meta["quality"]])
    ax.set_title(f"{meta['model']} on {meta['board']} ({meta['target']}): {len(records)} points",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    _save(fig, path)
    return fig


def clamp_percent_axis(ax) -> None:
    """The y axis (a percentage) kept within 0-100 %: matplotlib's autoscaled limits (the data
    and a 5 % margin, or +-5 % of a single value) cut at the ends, so a point below 100 %
    keeps its margin under the top and a point at 100 % sits on the top edge."""
    bottom, top = ax.get_ylim()
    ax.set_ylim(max(bottom, 0.0), min(top, 100.0))


def _number_front(fig: Figure, ax, front: list[dict], meta: dict, x_key: str, scale: float) -> None:
    """Numbers beside the front's points (alternating sides, as neighbours crowd), and the key."""
    key = []
    for i, r in enumerate(front, 1):
        x, y = r[x_key] / scale, quality_value(r, meta)
        ax.annotate(str(i), (x, y), xytext=(6, 2) if i % 2 else (-13, 2), textcoords="offset points",
                    fontsize=8, color="tab:red", weight="bold", annotation_clip=False)
        key.append(f"{i:2d}  {short_label(r['options'])}  ({y:.4g}, {x:.4g})")
    fig.text(0.64, 0.92, "Pareto front (accuracy, x):\n" + "\n".join(key), va="top", fontsize=7.5,
             family="monospace")


def layers_plot(record: dict, meta: dict, path: Path) -> None:
    """The best point's flash and cost per layer, as horizontal bars."""
    layers = record["layers"]
    with_cost = meta["cost"] is not None and any(l["cost"] is not None for l in layers)
    fig = Figure(figsize=(10, 1.2 + 0.28 * len(layers)))
    axes = fig.subplots(1, 2 if with_cost else 1, sharey=True, squeeze=False)[0]
    names = [f"{layer['step'].split('_')[0]} {layer.get('op', '')}" for layer in layers][::-1]
    axes[0].barh(names, [layer["flash_bytes"] for layer in layers][::-1], color="tab:green")
    axes[0].set_xlabel("flash bytes (weights and tables)")
    if with_cost:
        axes[1].barh(names, [layer["cost"] or 0 for layer in layers][::-1], color="tab:purple")
        axes[1].set_xlabel(meta["cost"]["column"])
    for ax in axes:
        ax.tick_params(labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"best point: {short_label(record['options'])}", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
