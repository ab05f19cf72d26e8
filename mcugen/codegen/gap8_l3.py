"""GAP8 weights in L3 (HyperRAM) when they do not fit L2 beside the activations.

The constants of every cluster layer (weights, bias, encoder tables, decode tables) are written,
layer after layer, to `model_l3.bin`; the board program flashes it into HyperFlash's read-only
file system (READFS_FILES), copies it to HyperRAM at start-up, and before each such layer the
fabric controller reads that layer's constants from HyperRAM into an L2 staging slot, from
where the layer's cluster DMA tiles them into L1 as usual. With two slots, the next layer's
read runs while the cluster computes the current one. Layers on the fabric controller
(concat, transpose, recode) keep their small tables in L2.
"""
from __future__ import annotations

import numpy as np

# The step kinds the cluster runs (gap8.py tiles them L2 -> L1); their constants are what
# L3 holds. The rest run on the fabric controller and keep their small tables in L2.
BAND_KINDS = ("conv2d", "maxpool", "avgpool")     # tiled over (channel block, output row band)
TILED_KINDS = BAND_KINDS + ("dense", "add")      # tiled over output features or elements

ALIGN = 8                       # every array starts 8-byte aligned in the file and in L2
L3_FILE = "model_l3.bin"


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def streamed_steps(schedule) -> list:
    """The steps whose constants live in L3: cluster layers that have constants."""
    return [s for s in schedule.steps if s.kind in TILED_KINDS and s.consts]


def _blob_bytes(step) -> int:
    return sum(_align(value.nbytes) for value in step.consts.values())


def staging_need(schedule, l2_free: int | None = None) -> tuple[int, int]:
    """(slots, bytes per slot): two slots (prefetch) when they fit in `l2_free`, else one."""
    slot = max([_blob_bytes(s) for s in streamed_steps(schedule)] + [ALIGN])
    slots = 2 if l2_free is None or 2 * slot <= l2_free else 1
    return slots, slot


def kept_in_l2(schedule) -> int:
    """Bytes of the constants that stay in L2 (the fabric controller's layers)."""
    streamed = {s.name for s in streamed_steps(schedule)}
    return sum(schedule.step_consts_bytes(s) for s in schedule.steps if s.name not in streamed)


def l2_left(schedule, board) -> int:
    """L2 bytes left for staging: L2 minus the arena and the constants that stay in L2."""
    return board["memory"]["ram"]["bytes"] - schedule.arena_bytes - kept_in_l2(schedule)


def board_layout(schedule, board) -> dict:
    """The L3 layout for this board: two staging slots when L2 has room for them."""
    return l3_layout(schedule, *staging_need(schedule, l2_left(schedule, board)))


def l3_layout(schedule, slots: int, slot_bytes: int) -> dict:
    """Where every streamed constant sits: its offset in the L3 file and, for its layer's
    slot, in the staging buffer; and the reads model_run issues, in order."""
    steps, offset = {}, 0
    for k, step in enumerate(streamed_steps(schedule)):
        slot_base = (k % slots) * slot_bytes
        arrays, inner = {}, 0
        for key, value in step.consts.items():
            arrays[key] = slot_base + inner
            inner += _align(value.nbytes)
        steps[step.name] = {"l3_offset": offset, "bytes": inner, "staging": slot_base,
                            "arrays": arrays}
        offset += inner
    order = list(steps)
    for name, nxt in zip(order, order[1:] + [None]):
        steps[name]["next"] = steps[nxt] if nxt and slots == 2 else None
    return {"file": L3_FILE, "bytes": offset, "slots": slots, "slot_bytes": slot_bytes,
            "staging_bytes": slots * slot_bytes, "staging_words": slots * slot_bytes // 4, "steps": steps,
            "first": steps[order[0]] if order else None}


def l3_image(schedule) -> bytes:
    """The contents of model_l3.bin: every streamed layer's constants, little-endian, each
    array padded to ALIGN, in the order of l3_layout."""
    parts = []
    for step in streamed_steps(schedule):
        for value in step.consts.values():
            data = np.ascontiguousarray(value).astype(value.dtype.newbyteorder("<")).tobytes()
            parts.append(data + bytes(_align(len(data)) - len(data)))
    return b"".join(parts)
