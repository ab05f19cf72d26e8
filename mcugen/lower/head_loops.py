"""Attention one head at a time: the steps Q K^T (matmul), softmax and A V (matmul) over H
heads compute every head on its own, so a target may run them head by head, the scores and
the probabilities held for one head ([T, T] codes instead of [H, T, T]). The steps and the
reference are unchanged (each head's numbers are the same in either order); a loop only
changes the memory plan (memory.py) and the order a target calls the kernels in. A target
that renders such loops (the C99 targets' model_run) takes the ones that lower the arena's
peak (plan_head_loops)."""
from __future__ import annotations

from mcugen.lower.memory import plan_arena


def head_loop(schedule, i) -> dict | None:
    """The loop of steps i, i + 1, i + 2, or None when they are not Q K^T -> softmax over
    its last axis -> A V whose scores and probabilities nothing else reads."""
    if i + 3 > len(schedule.steps):
        return None
    a, b, c = schedule.steps[i:i + 3]
    if (a.kind, b.kind, c.kind) != ("matmul", "softmax", "matmul"):
        return None
    heads = a.params["heads"]
    scores, probs = a.output, b.output
    if heads < 2 or c.params["heads"] != heads or b.inputs != [scores] or c.inputs[0] != probs:
        return None
    if c.params["a_head"] == 0 or b.params["inner"] != 1 or b.params["outer"] % heads:
        return None
    if b.params.get("masked") and b.params["mask_rows"] > b.params["outer"] // heads:
        return None                    # a mask that differs between heads: rows count across them
    readers = {name: [s.name for s in schedule.steps if name in s.inputs] for name in (scores, probs)}
    if readers != {scores: [b.name], probs: [c.name]} or schedule.output["buffer"] in (scores, probs):
        return None
    return {"steps": [a.name, b.name, c.name], "heads": heads, "local": [scores, probs],
            # per step: each input's and the output's elements per head (0: the same for all)
            "in_strides": {a.name: [a.params["a_head"], a.params["b_head"]], b.name: [0],
                           c.name: [0, c.params["b_head"]]},
            "out_strides": {a.name: 0, b.name: 0, c.name: c.params["n"] * c.params["m"]},
            # the parameters a step runs one head with
            "per_head": {a.name: {"heads": 1}, b.name: {"outer": b.params["outer"] // heads},
                         c.name: {"heads": 1}}}


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
