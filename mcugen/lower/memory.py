"""The activation arena: buffers placed by liveness, first fit, aligned to 4 bytes, so buffers
whose lifetimes do not overlap share memory. A step's output never overlaps its inputs. Steps
run head by head (the schedule's head_loops) keep every buffer they touch live through the
whole loop, and hold their loop-local buffers for one head only."""
from __future__ import annotations

ALIGN = 4


def _align(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


def lifetimes(schedule):
    """buffer -> (first step that writes it, last step that reads it); the model input is
    live from step -1, the output until the end."""
    live = {}
    end = len(schedule.steps)
    live[schedule.input["buffer"]] = [-1, -1]
    for i, step in enumerate(schedule.steps):
        live.setdefault(step.output, [i, i])
        for name in step.inputs:
            live[name][1] = max(live[name][1], i)
    live[schedule.output["buffer"]][1] = end
    index = {step.name: i for i, step in enumerate(schedule.steps)}
    for loop in schedule.head_loops:
        first, last = index[loop["steps"][0]], index[loop["steps"][-1]]
        for step in schedule.steps[first:last + 1]:
            for name in step.inputs + [step.output]:
                live[name] = [min(live[name][0], first), max(live[name][1], last)]
    return live


def arena_nbytes(schedule, name) -> int:
    """The bytes a root buffer takes in the arena: a head loop's local buffer, one head's."""
    heads = next((loop["heads"] for loop in schedule.head_loops if name in loop["local"]), 1)
    return schedule.buffers[name].nbytes // heads


def plan_arena(schedule) -> int:
    """Assign offsets to every root buffer; returns the arena size in bytes."""
    live = lifetimes(schedule)
    placed = []                  # (offset, size, first, last)
    order = sorted(live, key=lambda b: (-arena_nbytes(schedule, b), live[b][0]))
    for name in order:
        size = _align(arena_nbytes(schedule, name))
        first, last = live[name]
        clashes = sorted((o, s) for o, s, f, l in placed if not (last < f or l < first))
        offset = 0
        for o, s in clashes:
            if offset + size <= o:
                break
            offset = max(offset, o + s)
        schedule.buffers[name].offset = offset
        placed.append((offset, size, first, last))
    for buffer in schedule.buffers.values():
        if buffer.alias_of:
            buffer.offset = schedule.buffers[buffer.alias_of].offset
    return max((o + s for o, s, _, _ in placed), default=0)
