"""An embedding lookup: the model's integer input (token ids) indexes a constant table,
Gather(table [V, ...], ids) -> [1, T, ...]. No arithmetic: the table is stored in its output's
codes and each token's row is copied.

The ids reach the step as the input's codes: the input is an index input (the graph's
`input_rows`), uniform with one code per integer (8-bit codes for V <= 256, else 16-bit), so
the host's input quantizer rounds an id half away from zero and clamps it to [0, B]; the step
clamps it again to the table's last row. An id outside [0, V) (never written by a tokenizer;
ONNX would count a negative one from the end) thus reads the first or the last row, in the
float IR too, and is never undefined behaviour in C.
"""
from __future__ import annotations

import numpy as np

from mcugen.ir.graph import Node
from mcugen.numerics import round_half_away
from mcugen.ops import OpDef, register

MAX_ROWS = 1 << 16            # the ids' codes are uint16 at most
PAD_ATTR = "mcugen_positions_pad"   # a Gather of positions (frontend/positions.py sets it)


def position_rows(ids, pad: int) -> np.ndarray:
    """RoBERTa's position ids from integer ids (rows, tokens): pad + the count of non-padding
    ids so far for a token, pad for a padding id."""
    ids = np.asarray(ids, dtype=np.int64)
    real = ids != pad
    return np.where(real, pad + np.cumsum(real, axis=-1), pad)


def embedding_lookup(node, ctx):
    """The IR node of an ONNX Gather whose data is a constant (ops/slice.py sends it)."""
    table = np.asarray(ctx.const(node.input[0]), dtype=np.float64)
    ids = _ids_source(node.input[1], ctx)
    pad = ctx.attrs(node).get(PAD_ATTR)
    if ids != ctx.input_name or not ctx.input_is_integer:
        ctx.fail(node, "indexes a constant table by a computed tensor; supported: the model's "
                       "integer input (token ids) indexing an embedding table, directly or "
                       "through reshapes")
    axis = int(ctx.attrs(node).get("axis", 0))
    if table.ndim < 1 or axis % table.ndim != 0:
        ctx.fail(node, f"gathers along axis {axis} of a constant table; supported: rows (axis 0)")
    if not 1 <= table.shape[0] <= MAX_ROWS:
        ctx.fail(node, f"a table of {table.shape[0]} rows; supported: 1 to {MAX_ROWS} (16-bit ids)")
    if pad is None:               # position lookups read the ids but do not index by them
        ctx.input_rows = max(ctx.input_rows or 0, int(table.shape[0]))
    return Node(name=node.name, op="Embedding", inputs=[ids], output=node.output[0],
                attrs={"shape": list(ctx.shape(node.output[0])), "positions_pad": pad},
                params={"table": table.reshape(table.shape[0], -1)}, onnx_op="Gather")


SHAPE_ONLY = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity")


def _ids_source(name, ctx):
    """The tensor whose ids `name` holds: itself, or what a chain of shape-only nodes (GPT-2's
    `input_ids.view(-1, n)`) reshapes: the same ids in the same order."""
    producer = ctx.producer(name)
    while producer is not None and producer.op_type in SHAPE_ONLY:
        name = producer.input[0]
        producer = ctx.producer(name)
    return name


def token_rows(ids, rows):
    """Float ids -> the table rows they read: rounded half away from zero, clamped to [0, rows)."""
    return np.clip(round_half_away(np.asarray(ids, dtype=np.float64)), 0, rows - 1).astype(np.int64)


@register
class Embedding(OpDef):
    kind = "Embedding"
    step_kinds = ("embedding",)

    def output_nonnegative(self, node, inputs_nonnegative) -> bool:
        return bool(np.all(node.params["table"] >= 0))

    def value_bounds(self, node):
        """Whatever the ids, the output holds table values: (max |value|, min value)."""
        table = node.params["table"]
        return float(np.abs(table).max()), float(table.min())

    def step_value_range(self, step, input_ranges):
        table = step.consts["table"]
        return (int(table.min()), int(table.max()))

    def elements_read(self, step, schedule) -> int:
        return schedule.buffers[step.output].size       # one table element per output element

    def infer_shape(self, node, in_shapes):
        return tuple(node.attrs["shape"])

    def run_float(self, node, inputs):
        table = node.params["table"]
        rows = token_rows(inputs[0], table.shape[0])
        if node.attrs.get("positions_pad") is not None:
            shape = rows.shape
            rows = position_rows(rows.reshape(shape[0], -1), node.attrs["positions_pad"])
            rows = np.minimum(rows, table.shape[0] - 1).reshape(shape)
        return table[rows.reshape(rows.shape[0], -1)].reshape((rows.shape[0],) + tuple(node.attrs["shape"][1:]))

    def lower(self, node, ctx):
        y = ctx.encoding(node.output)
        table = node.params["table"]
        codes = y.encode(table).astype(y.ctype)
        tokens = int(np.prod(ctx.shape(node.inputs[0])[1:]))
        pad = node.attrs.get("positions_pad")
        # the ids' codes reach B (a position pad + tokens): the kernel clamps the row only when
        # the table is shorter
        top = int(ctx.encoding(node.inputs[0]).B) if pad is None else pad + tokens
        params = {"tokens": tokens, "rows": int(table.shape[0]), "last_row": int(table.shape[0]) - 1,
                  "width": int(table.shape[1]), "clamps": int(top >= table.shape[0]),
                  "positions": int(pad is not None), "pad": -1 if pad is None else int(pad)}
        return ctx.step(node, "embedding", params=params, consts={"table": codes},
                        info={"abits": y.bits})

    def run_int(self, step, inputs):
        ids = inputs[0].reshape(inputs[0].shape[0], -1)
        if step.params.get("positions"):
            ids = position_rows(ids, step.params["pad"])
        rows = np.minimum(ids, step.params["last_row"])
        return step.consts["table"].astype(np.int64)[rows].reshape(ids.shape[0], -1)
