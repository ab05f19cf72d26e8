"""ONNX names -> C identifiers: only [A-Za-z0-9_], a fixed prefix (no keyword, no leading digit,
no reserved `_X` name), bounded length, unique. Nothing of the original name can reach C as
code or as a comment."""
from __future__ import annotations

import re

MAX_LEN = 40


class NameTable:
    def __init__(self):
        self.used = set()

    def make(self, prefix: str, name: str) -> str:
        body = re.sub(r"[^A-Za-z0-9_]", "_", name)
        body = re.sub(r"_+", "_", body).strip("_")[:MAX_LEN] or "t"
        ident = f"{prefix}_{body}"
        unique, n = ident, 1
        while unique in self.used:
            n += 1
            unique = f"{ident}_{n}"
        self.used.add(unique)
        return unique
