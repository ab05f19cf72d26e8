"""Locate the data shipped with mcugen (templates/, boards/): inside the installed wheel, or at
the top of a source checkout."""
from __future__ import annotations

from importlib import resources
from pathlib import Path


def data_dir(name: str) -> Path:
    packaged = Path(str(resources.files("mcugen"))) / "_data" / name
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / name
