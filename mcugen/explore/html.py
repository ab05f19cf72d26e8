"""explore/index.html: the plots, the table of every point (the Pareto points first), and a
link to each point's project. Static, self-contained apart from the PNGs beside it."""
from __future__ import annotations

from html import escape

from mcugen.explore.plots import QUALITY_LABELS

EVALUATED = {"host": "the generated C run on the host, its first outputs checked against the "
                     "bit-exact Python reference",
             "reference": "the bit-exact Python integer reference"}
STYLE = ("body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;font-size:13px}"
         "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}td.l,th.l{text-align:left}"
         "tr.pareto{background:#fde8e8;font-weight:bold}tr.misfit{color:#b35900}"
         "tr.error{color:#888}img{max-width:100%;margin:0.5em 0}code{font-size:12px}")


def page(meta: dict, records: list[dict], pareto_ids: list[str], plots: list[str],
         commands: dict) -> str:
    rows = sorted(records, key=lambda r: r["id"] not in pareto_ids)     # stable: space order kept
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>mcugen explore: "
             f"{escape(meta['model'])}</title><style>{STYLE}</style></head><body>",
             f"<h1>mcugen explore: {escape(meta['model'])}</h1>", _summary(meta, records)]
    parts += [f"<p><img src='{escape(name)}' alt='{escape(name)}'></p>" for name in plots]
    parts += ["<h2>Points</h2>", _table(meta, rows, pareto_ids, commands), "</body></html>"]
    return "\n".join(parts)


def _summary(meta: dict, records: list[dict]) -> str:
    cost = meta["cost"]["label"] if meta["cost"] else "none measured"
    counts = {s: sum(r["status"] == s for r in records) for s in ("ok", "does not fit", "error")}
    return (f"<p>Target <b>{escape(meta['target'])}</b>, board <b>{escape(meta['board'])}</b>, "
            f"{meta['n_eval']} evaluation inputs, seed {meta['seed']}. Accuracy: "
            f"{escape(QUALITY_LABELS[meta['quality']])} of the integer model ({EVALUATED[meta['evaluated_on']]}). "
            f"Cost: {escape(cost)}. Points: {counts['ok']} ok, {counts['does not fit']} do not "
            f"fit the board, {counts['error']} failed. Pareto points (highlighted, first): no other "
            f"point that fits the board is as good on accuracy, flash and cost and better on one."
            f"</p>")


def _cell(value, left=False) -> str:
    text = "" if value is None else (f"{value:,}" if isinstance(value, int) and not isinstance(value, bool)
                                     else f"{value:.4g}" if isinstance(value, float) else str(value))
    return f"<td class='l'>{escape(text)}</td>" if left else f"<td>{escape(text)}</td>"


def _table(meta: dict, rows: list[dict], pareto_ids: list[str], commands: dict) -> str:
    quality = QUALITY_LABELS[meta["quality"]]
    cost = meta["cost"]["column"] if meta["cost"] else None
    head = ["point", "status", quality, "flash B", "RAM B"] + ([cost] if cost else []) + ["project"]
    lines = ["<table><tr>" + "".join(f"<th class='l'>{escape(h)}</th>" for h in head) + "</tr>"]
    for r in rows:
        kind = "pareto" if r["id"] in pareto_ids else {"does not fit": "misfit", "error": "error"}.get(r["status"], "")
        status = r["status"] + (f": {r.get('shortfall') or r.get('error')}" if r["status"] != "ok" else "")
        value = r.get(meta["quality"])
        shown = f"{100 * value:.2f}" if value is not None and meta["higher_is_better"] else value
        cells = [_cell(r["id"], True), _cell(status, True), _cell(shown),
                 _cell(r.get("flash_bytes")), _cell(r.get("ram_bytes"))]
        cells += [_cell(r.get("cost"))] if cost else []
        link = (f"<td class='l'><a href='{escape(r['project'])}/'>{escape(r['project'])}</a><br>"
                f"<code>{escape(commands[r['id']])}</code></td>" if r.get("project") else "<td></td>")
        lines.append(f"<tr class='{kind}'>" + "".join(cells) + link + "</tr>")
    return "\n".join(lines + ["</table>"])
