"""QGraph -> Schedule: each node's OpDef lowers it to a step (or to an alias), then the arena
is planned. Every number the reference and the templates need is computed here, once."""
from __future__ import annotations

import numpy as np

from mcugen.errors import MCUGenError
from mcugen.errors import display_name
from mcugen.ir.schedule import Buffer, Schedule, Step
from mcugen.lower.encoders import EXACT_ENCODERS, EncodeRequest, encoder_step_parts
from mcugen.lower.memory import plan_arena
from mcugen.lower.names import NameTable
from mcugen.ops import get_op
from mcugen.quant.qgraph import code_root, output_is_accumulator


class LowerContext:
    """What an OpDef.lower may ask, and where it hands its step back."""

    def __init__(self, qgraph, weight_storage="decoded", product_tables=True, encoder="auto",
                 max_code_error=1, decode_bits="wide", exact_encoders=EXACT_ENCODERS):
        self.qgraph = qgraph
        self.encoder = encoder                   # auto | an encoder's name (lower/encoders)
        self.exact_encoders = exact_encoders     # auto's exact encoders on coarse grids, by preference
        self.max_code_error = max_code_error     # the budget of the approximate encoders
        self.weight_storage = weight_storage     # "decoded" | "codes" (packed, decoded on the fly)
        self.product_tables = product_tables     # MAC layers on small grids may use lower/product.py
        self.decode_bits = decode_bits           # wide | auto | 8 | 16 (lower/decode_width.py)
        self.graph = qgraph.graph
        self.names = NameTable()
        self.buffers = {}          # tensor -> Buffer
        self.steps = []
        self.output_scales = None

    def fail(self, node, message):
        raise MCUGenError(f"node '{display_name(node.name)}' ({node.onnx_op or node.op}): {message}")

    def shape(self, tensor):
        return tuple(self.graph.shapes[tensor])

    def encoding(self, tensor):
        return self.qgraph.encodings[tensor]

    def qweights(self, node):
        return self.qgraph.weights[node.name]

    def grid_choice(self, tensor) -> dict:
        """What the quantizer chose for the grid of `tensor`'s codes, and the alternative it
        measured (quant/lanes.py), as report fields; {} when nothing was chosen."""
        choice = self.qgraph.grid_choices.get(code_root(self.graph, tensor))
        return choice.info() if choice is not None else {}

    def output_is_accumulator(self, node):
        return output_is_accumulator(self.graph) and code_root(self.graph, self.graph.output) == node.output

    def encoder_parts(self, node, activation, scale, bound):
        """(consts, params, info) of the encoder of `node`'s output: per row (scale[r]) from the
        accumulator (|acc| <= bound) to the output's codes."""
        request = EncodeRequest(self.encoding(node.output), activation, scale, bound,
                                self.max_code_error, int(np.prod(self.shape(node.output))))
        where = f"node '{display_name(node.name)}' ({node.onnx_op or node.op})"
        return encoder_step_parts(request, self.encoder, where, self.exact_encoders)

    def set_output_scales(self, scales):
        self.output_scales = np.asarray(scales, dtype=np.float64)

    def buffer(self, tensor, dtype=None) -> Buffer:
        if tensor not in self.buffers:
            shape = list(self.shape(tensor))[1:]
            if dtype is None:
                dtype = self.encoding(tensor).ctype
            self.buffers[tensor] = Buffer(self.names.make("buf", tensor), tensor, shape, dtype)
        return self.buffers[tensor]

    def root(self, tensor) -> Buffer:
        buffer = self.buffers[tensor]
        return self.buffers_by_name()[buffer.alias_of] if buffer.alias_of else buffer

    def alias(self, tensor, of_tensor):
        root = self.root(of_tensor)
        shape = list(self.shape(tensor))[1:]
        self.buffers[tensor] = Buffer(self.names.make("buf", tensor), tensor, shape, root.dtype,
                                      alias_of=root.name)

    def buffers_by_name(self):
        return {b.name: b for b in self.buffers.values()}

    def step(self, node, kind, params, consts, info):
        inputs = [self.root(t).name for t in node.inputs]
        if params.get("output_acc", 0):
            dtype = "int32"
        elif getattr(get_op(node.op), "preserves_codes", False):
            dtype = self.root(node.inputs[0]).dtype     # codes, or the last layer's accumulators
        else:
            dtype = None
        out = self.buffer(node.output, dtype)
        name = self.names.make(f"L{len(self.steps):02d}", node.name)
        params = dict(params, in_shapes=[list(self.shape(t))[1:] for t in node.inputs])
        step = Step(name=name, layer=node.name, kind=kind, onnx_op=node.onnx_op or node.op,
                    inputs=inputs, output=out.name, params=params, consts=consts, info=info)
        self.steps.append(step)
        return step


def lower(qgraph, progress=None, weight_storage="decoded", product_tables=True, encoder="auto",
          max_code_error=1, decode_bits="wide", exact_encoders=EXACT_ENCODERS) -> Schedule:
    """`exact_encoders`: the exact encoders `auto` takes on grids of fewer than 7 bits, the
    first that builds (Target.exact_encoders: what the target runs fastest)."""
    ctx = LowerContext(qgraph, weight_storage, product_tables, encoder, max_code_error,
                       decode_bits, exact_encoders)
    graph = qgraph.graph
    ctx.buffer(graph.input)
    for i, node in enumerate(graph.nodes):
        if get_op(node.op).lower(node, ctx) is None:
            ctx.alias(node.output, node.inputs[0])
        if progress:
            progress(i + 1, len(graph.nodes))
    by_name = ctx.buffers_by_name()
    out_root = ctx.root(graph.output)
    in_buffer = ctx.buffers[graph.input]
    in_enc = qgraph.encodings[graph.input]
    schedule = Schedule(
        steps=ctx.steps, buffers=by_name,
        input={"buffer": in_buffer.name, "shape": list(ctx.shape(graph.input)),
               "B": in_enc.B, "signed": in_enc.signed, "range": in_enc.range,
               "mul": in_enc.B / in_enc.range, "dtype": in_enc.ctype},
        output=_output_record(ctx, qgraph, out_root), output_transform=graph.output_transform)
    if not schedule.steps:
        raise MCUGenError("the model lowers to no computation")
    schedule.arena_bytes = plan_arena(schedule)
    return schedule


def _output_record(ctx, qgraph, out_root):
    graph = qgraph.graph
    record = {"buffer": out_root.name, "shape": list(ctx.shape(graph.output)), "dtype": out_root.dtype}
    if output_is_accumulator(graph):
        producer = graph.producer(code_root(graph, graph.output))
        record.update(kind="acc", scales=_output_scales(ctx, graph, producer),
                      activation=list(producer.attrs.get("activation") or []))
    else:
        enc = qgraph.encodings[graph.output]
        record.update(kind="codes", offset=enc.table_offset,
                      values=enc.decode(enc.codes()))
    return record


def _output_scales(ctx, graph, mac):
    """The real value of one unit of every output element: the last MAC layer's per-channel
    scales, moved through the ops between it and the output (pools, transposes, reshapes, pads)
    by running their float kernels on the scales themselves."""
    chain, tensor = [], graph.output
    while tensor != mac.output:
        node = graph.producer(tensor)
        chain.append(node)
        tensor = node.inputs[0]
    shape = ctx.shape(mac.output)
    scales = np.broadcast_to(ctx.output_scales.reshape((1, -1) + (1,) * (len(shape) - 2)), shape)
    for node in reversed(chain):
        scales = get_op(node.op).run_float(node, [np.array(scales)])
    return np.asarray(scales, dtype=np.float64).reshape(-1)
