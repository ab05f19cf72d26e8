"""Boards are data: boards/*.toml, shipped inside the package.

Optional fields read through a helper here, with their defaults:
- `narrow_decode` (false): `--decode-bits auto` takes 8-bit decode tables per layer where
  they are exact or within budget (lower/decode_width.py), as on a board with `simd`, while the
  lowering may still build product tables. The FPGA boards set it: operands of 8 bits are LUTs
  there, the 10-15-bit ones of 16-bit tables take DSP slices (pipeline.lower_for_board).
"""
from __future__ import annotations

import tomllib

from mcugen.errors import MCUGenError
from mcugen.resources import data_dir


def all_boards() -> dict:
    boards = {}
    for path in sorted(data_dir("boards").glob("*.toml")):
        with open(path, "rb") as f:
            board = tomllib.load(f)
        boards[board["name"]] = board
    return boards


def get_board(name: str) -> dict:
    boards = all_boards()
    if name not in boards:
        raise MCUGenError(f"unknown board '{name}'; known: {', '.join(boards)} (see `mcugen boards`)")
    return boards[name]


def narrow_decode(board: dict) -> bool:
    """Whether `--decode-bits auto` prefers 8-bit decode tables on this board (see above)."""
    return bool(board.get("narrow_decode", False))
