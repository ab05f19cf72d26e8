"""Boards are data: boards/*.toml, shipped inside the package."""
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
