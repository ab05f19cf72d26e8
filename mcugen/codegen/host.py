"""The host / generic C99 target: model.c, model.h, a file-driven harness and a Makefile."""
from __future__ import annotations

import numpy as np

from mcugen import __version__
from mcugen.boards import get_board
from mcugen.codegen.render import render_all
from mcugen.ir.schedule import CTYPES

FILES = {"model.c": "model.c.j2", "model.h": "model.h.j2", "main.c": "main.c.j2",
         "Makefile": "Makefile.j2"}


def template_context(schedule, model_file: str) -> dict:
    roots = [b for b in schedule.buffers.values() if not b.alias_of]
    return {
        "version": __version__,
        "model_file": model_file,
        "schedule": schedule,
        "root_buffers": roots,
        "buffer_types": {b.name: CTYPES[b.dtype] for b in schedule.buffers.values()},
        "buffer_bytes": {b.name: b.nbytes for b in schedule.buffers.values()},
        "arena_words": max(1, (schedule.arena_bytes + 3) // 4),
        "input_size": int(np.prod(schedule.input["shape"])),
        "output_size": int(np.prod(schedule.output["shape"])),
        "input_lo": -schedule.input["B"] if schedule.input["signed"] else 0,
        "input_bits": 8,
        "rv_memory": qemu_memory(),
    }


def qemu_memory():
    """The rv32 rule always targets qemu's virt machine (its board file has the layout)."""
    memory = get_board("rv32imc-qemu")["memory"]
    return {"flash_origin": hex(memory["flash"]["origin"]), "flash_bytes": memory["flash"]["bytes"],
            "ram_origin": hex(memory["ram"]["origin"]), "ram_bytes": memory["ram"]["bytes"]}


def render(schedule, model_file: str, board: dict | None = None) -> dict:
    """The board does not change the host C (the rv32 rule always targets qemu's layout)."""
    return render_all("host", FILES, template_context(schedule, model_file))
