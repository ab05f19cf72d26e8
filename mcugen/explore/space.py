"""The space a sweep covers: named spaces (default, full) and space files (TOML), expanded
into an ordered list of points. A point is the `mcugen.build` options that differ between
points; its id names it (and its project directory) and its command line rebuilds it.

Space file format (every combination of a [grid]'s lists is a point; [[grid]] tables give
several grids; [fixed] options go to every point; each [[point]] table adds one point):

    [grid]
    scheme = ["uniform", "power"]
    bits = ["W8A8", "W4A8"]          # shorthand for wbits/abits pairs
    first_last_bits = [8, "same"]
    [fixed]
    encoder = "auto"
    [[point]]
    scheme = "power"
    wbits = 3
    abits = 3

Points that make the same build are kept once: at W8A8 first_last_bits is moot (every layer
has 8 bits already), so it is 8 there.
"""
from __future__ import annotations

import itertools
import re
import tomllib
from pathlib import Path

from mcugen.errors import MCUGenError

# the axes every point names, with the value `mcugen build` takes when a space omits one
AXES = {"scheme": "power", "wbits": 8, "abits": 8, "first_last_bits": 8,
        "weight_storage": "auto", "encoder": "auto", "method": "powerquant"}
# further build options a space file may set (a point shows them only when set)
EXTRA_OPTIONS = ("exponent", "objective", "percentile", "mac_tables", "decode_bits",
                 "max_code_error")
KNOWN = tuple(AXES) + EXTRA_OPTIONS + ("bits",)

BITS = ("W8A8", "W4A8", "W4A4")
# Uniform weights are stored as their 8-bit codes whatever --weight-storage says (the identity
# decode table is elided), so uniform points try decoded only. Measured on resnet8 (800
# evaluation inputs, docs/explore.md): these 30 points take about N minutes on 2 cores.
DEFAULT_GRIDS = [{"scheme": [scheme], "bits": list(BITS), "first_last_bits": [8, "same"],
                  "weight_storage": storage, "method": ["powerquant", "nupes"]}
                 for scheme, storage in (("uniform", ["decoded"]), ("power", ["decoded", "codes"]))]
FULL_GRIDS = [dict(grid, encoder=["auto", "threshold", "lut", "pade"]) for grid in DEFAULT_GRIDS]
NAMED = {"default": DEFAULT_GRIDS, "full": FULL_GRIDS}


def load_space(space: str) -> list[dict]:
    """'default', 'full' or a TOML file -> the ordered, duplicate-free list of points."""
    if space in NAMED:
        return expand(NAMED[space], {}, [], space)
    path = Path(space)
    if not path.is_file():
        raise MCUGenError(f"--space takes default, full or a .toml file; '{space}' is neither")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise MCUGenError(f"space file '{space}' is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"grid", "fixed", "point"})
    if unknown:
        raise MCUGenError(f"space file '{space}': unknown table '{unknown[0]}' "
                          f"(a space has [grid], [fixed] and [[point]])")
    grids = data.get("grid", [])
    return expand(grids if isinstance(grids, list) else [grids], data.get("fixed", {}),
                  data.get("point", []), space)


def expand(grids: list, fixed: dict, extra_points: list, where: str) -> list[dict]:
    for table in grids + [fixed] + list(extra_points):
        _check_keys(table, where)
    combos = [combo for grid in grids for combo in _combinations(grid, where)]
    if not combos and not extra_points:
        raise MCUGenError(f"space '{where}' has no point: give a [grid] or [[point]] tables")
    points, seen = [], set()
    for raw in combos + list(extra_points):
        point = normalize(dict(fixed, **raw), where)
        if point_id(point) not in seen:
            seen.add(point_id(point))
            points.append(point)
    return points


def _combinations(grid: dict, where: str) -> list[dict]:
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise MCUGenError(f"space '{where}': [grid] {key} must be a non-empty list")
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())] if grid else []


def _check_keys(table, where):
    if not isinstance(table, dict):
        raise MCUGenError(f"space '{where}': a point must be a table of options")
    for key in table:
        if key not in KNOWN:
            raise MCUGenError(f"space '{where}': unknown option '{key}' (known: {', '.join(KNOWN)})")


def normalize(raw: dict, where: str) -> dict:
    """Axes filled in, `bits` split into wbits/abits, first_last_bits as build takes it."""
    raw = dict(raw)
    if "bits" in raw:
        match = re.fullmatch(r"W(\d+)A(\d+)", str(raw.pop("bits")).upper())
        if not match:
            raise MCUGenError(f"space '{where}': bits takes values like \"W4A8\"")
        raw["wbits"], raw["abits"] = int(match.group(1)), int(match.group(2))
    point = {key: raw.pop(key, default) for key, default in AXES.items()}
    for key in ("wbits", "abits"):
        if not isinstance(point[key], int) or isinstance(point[key], bool):
            raise MCUGenError(f"space '{where}': {key} must be an integer, got {point[key]!r}")
    moot = point["wbits"] == 8 and point["abits"] == 8
    point["first_last_bits"] = 8 if moot or str(point["first_last_bits"]) == "8" else point["first_last_bits"]
    point.update(sorted(raw.items()))
    return point


def point_id(point: dict) -> str:
    """A readable name, unique within a space, safe as a directory name."""
    fl = point["first_last_bits"]
    parts = [point["scheme"], f"w{point['wbits']}a{point['abits']}", f"fl{fl}",
             point["weight_storage"], point["encoder"], point["method"]]
    parts += [f"{key}{point[key]}" for key in EXTRA_OPTIONS if key in point]
    return re.sub(r"[^A-Za-z0-9.]+", "_", "-".join(str(p) for p in parts))


def build_command(point: dict, model, calib, target, board, seed, out) -> str:
    """The `mcugen build` command line that makes this point's project."""
    args = ["mcugen", "build", str(model), "--target", target, "--board", board,
            "--calib", str(calib) if calib else "CALIB.npy"]
    for key, value in point.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    args += ["--seed", str(seed), "-o", str(out)]
    return " ".join(_quote(a) for a in args)


def _quote(arg: str) -> str:
    return arg if re.fullmatch(r"[A-Za-z0-9_./:=+-]+", arg) else "'" + arg.replace("'", "'\\''") + "'"
