"""Pareto fronts: the points no other point beats on every objective at once.

Only points that built and fit the board compete (a point that does not fit is no choice);
a point whose objective is missing (no cost measured) is left out of that front.
"""
from __future__ import annotations


def dominates(a: tuple, b: tuple) -> bool:
    """a, b: objective values, every one oriented so that lower is better."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def front(records: list[dict], objectives: list[tuple[str, bool]]) -> list[str]:
    """Ids of the non-dominated records, in the records' order. objectives: (key, higher is
    better) pairs; keys whose value is None in every record are dropped."""
    objectives = [(key, up) for key, up in objectives
                  if any(r.get(key) is not None for r in records)]
    eligible = [r for r in records if r.get("fits")
                and all(r.get(key) is not None for key, _ in objectives)]
    if not objectives:
        return []
    values = {r["id"]: tuple(-r[key] if up else r[key] for key, up in objectives) for r in eligible}
    return [r["id"] for r in eligible
            if not any(dominates(other, values[r["id"]]) for other in values.values())]


def best(records: list[dict], quality: tuple[str, bool]) -> dict | None:
    """The fitting record with the best quality; ties go to less flash, then lower cost."""
    key, up = quality
    eligible = [r for r in records if r.get("fits") and r.get(key) is not None]
    if not eligible:
        return None
    inf = float("inf")
    return min(eligible, key=lambda r: (-r[key] if up else r[key], r["flash_bytes"],
                                        inf if r.get("cost") is None else r["cost"]))
