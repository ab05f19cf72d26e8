"""Plain-text tables for the report: a leaf below the targets, which add their own tables to
it (Target.report_lines), and the report, which lays out the per-layer one."""
from __future__ import annotations


def fmt(value, kind="int") -> str:
    """One cell: '-' for a missing value, thousands separators for integers, 3 significant
    digits for kind 'float'."""
    if value is None:
        return "-"
    if kind == "float":
        return f"{value:.3g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def table(head, rows) -> list:
    """Aligned columns: the first two left, the rest right; a rule under the head."""
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths))) for r in [head] + rows]
    lines.insert(1, "-" * len(lines[0]))
    return lines
