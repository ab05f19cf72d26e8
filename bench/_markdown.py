"""What the benchmarks print: lines echoed as they come and kept for --out, and markdown tables."""
from __future__ import annotations

import sys

OUT: list[str] = []


def emit(line=""):
    print(line, flush=True)
    OUT.append(line)


def table(headers, rows):
    emit("| " + " | ".join(headers) + " |")
    emit("|" + "|".join("---" for _ in headers) + "|")
    for row in rows:
        emit("| " + " | ".join(str(v) for v in row) + " |")
    emit()


def emit_list(title, items):
    """A titled list under the tables (failures, say), when there is anything in it."""
    if items:
        emit()
        emit(title)
        for item in items:
            emit(f"- {item}")


def save(path):
    """Write every emitted line to `path` (--out), when given."""
    if path:
        path.write_text("\n".join(OUT) + "\n")
        print(f"wrote {path}", file=sys.stderr)
