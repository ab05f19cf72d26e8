"""Attention one head at a time: the steps Q K^T (matmul), softmax and A V (matmul) over H
heads (and any recode of the scores between the first two) compute every head on its own, so
a target may run them head by head, the scores and the probabilities held for one head
([T, T] codes instead of [H, T, T]). The steps and the reference are unchanged (each head's
numbers are the same in either order); a loop only changes the memory plan (memory.py) and the
order a target calls the kernels in. A target that renders such loops (the C99 targets' and
GAP8's model_run) takes the ones that lower the arena's peak (plan_head_loops)."""
from __future__ import annotations

import numpy as np

from mcugen.lower.memory import plan_arena


def head_loop(schedule, i) -> dict | None:
    """The loop of steps i, i + 1, ...: Q K^T (matmul), any one-table recodes of the scores (a
    scale some exporters apply after the product, a per-element code-to-code table: the same
    for every head), softmax over the last axis, A V (matmul), whose scores and probabilities
    nothing else reads; or None."""
    steps = schedule.steps
    if steps[i].kind != "matmul":
        return None
    heads = steps[i].params["heads"]
    j = i + 1
    while j < len(steps) and one_table_per_head(steps[j], heads) is not None:
        j += 1
    if j + 2 > len(steps):
        return None
    a, recodes, b, c = steps[i], steps[i + 1:j], steps[j], steps[j + 1]
    if (b.kind, c.kind) != ("softmax", "matmul"):
        return None
    chain = [a] + recodes + [b]                  # each reads the one before it
    if heads < 2 or c.params["heads"] != heads or c.inputs[0] != b.output or \
            any(s.inputs != [prev.output] for prev, s in zip(chain, chain[1:])):
        return None
    if c.params["a_head"] == 0 or b.params["inner"] != 1 or b.params["outer"] % heads:
        return None
    if b.params.get("masked") and b.params["mask_rows"] > b.params["outer"] // heads:
        return None                    # a mask that differs between heads: rows count across them
    local = [s.output for s in chain]
    readers = {name: [s.name for s in steps if name in s.inputs] for name in local}
    if readers != {s.output: [n.name] for s, n in zip(chain, chain[1:] + [c])} or \
            schedule.output["buffer"] in local:
        return None
    return {"steps": [s.name for s in chain + [c]], "heads": heads, "local": local,
            # per step: each input's and the output's elements per head (0: the same for all)
            "in_strides": {a.name: [a.params["a_head"], a.params["b_head"]], b.name: [0],
                           **{r.name: [0] for r in recodes}, c.name: [0, c.params["b_head"]]},
            "out_strides": {a.name: 0, b.name: 0, **{r.name: 0 for r in recodes},
                            c.name: c.params["n"] * c.params["m"]},
            # the parameters a step runs one head with
            "per_head": {a.name: {"heads": 1}, b.name: {"outer": b.params["outer"] // heads},
                         **{r.name: one_table_per_head(r, heads) for r in recodes},
                         c.name: {"heads": 1}}}


def one_table_per_head(step, heads) -> dict | None:
    """The parameters a recode step runs one head with, when every head reads the same table:
    a single table (over H x T x T codes: one head's share), or one per head (its channels are
    the heads) all alike; None for any other step."""
    if step.kind != "recode":
        return None
    channels, tables = step.params["channels"], step.consts["lut"]
    if channels == 1 and step.params["plane"] % heads == 0:
        return {"plane": step.params["plane"] // heads}
    if channels == heads and np.all(tables == tables[:1]):
        return {"channels": 1}
    return None


def plan_head_loops(schedule) -> None:
    """Set the schedule's head loops to those that lower the arena's peak (each tried in turn
    on top of those kept), and plan the arena with them."""
    schedule.head_loops = []
    best = plan_arena(schedule)
    for i in range(len(schedule.steps)):
        loop = head_loop(schedule, i)
        if loop is None:
            continue
        schedule.head_loops.append(loop)
        size = plan_arena(schedule)
        if size < best:
            best = size
        else:
            schedule.head_loops.pop()
    schedule.arena_bytes = plan_arena(schedule)


def partial_outputs(schedule) -> set:
    """Steps whose output a head loop holds for one head only (no whole output to trace)."""
    return {name for loop in schedule.head_loops for name in loop["steps"][:-1]}


def step_calls(schedule) -> dict:
    """step name -> how model_run calls it: its arguments (each buffer, in a head loop offset by
    its elements per head: `h * stride`), the loop it opens (its head count, 0: none), whether
    it closes one, and whether its output is whole afterwards (traced)."""
    loops = {name: loop for loop in schedule.head_loops for name in loop["steps"]}
    partial = partial_outputs(schedule)
    calls = {}
    for step in schedule.steps:
        loop = loops.get(step.name)
        names = step.inputs + [step.output]
        strides = loop["in_strides"][step.name] + [loop["out_strides"][step.name]] if loop else [0] * len(names)
        args = [f"{name} + h * {stride}" if stride else name for name, stride in zip(names, strides)]
        calls[step.name] = {"args": ", ".join(args),
                            "open": loop["heads"] if loop and loop["steps"][0] == step.name else 0,
                            "close": bool(loop) and loop["steps"][-1] == step.name,
                            "trace": step.name not in partial}
    return calls
