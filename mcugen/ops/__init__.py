"""The op registry: one module per op family, each registering an OpDef with a decorator.

An OpDef carries an op's whole lifecycle: its ONNX mapping (frontend), shape inference, the
float kernel (float IR), the lowering to a Schedule step, and the integer reference kernel.
The C for a step kind lives in templates/common/ops/<kind>.c.j2, or in a target's own
templates/<target>/ops/ where it has a kernel of its own (docs/adding-an-op.md).
"""
from __future__ import annotations

import importlib
import pkgutil

from mcugen.errors import MCUGenError
from mcugen.numerics import activation_is_nonnegative

_BY_KIND: dict[str, "OpDef"] = {}
_BY_ONNX: dict[str, "OpDef"] = {}


class OpDef:
    kind: str = ""                 # the IR op name
    onnx_types: tuple = ()         # ONNX op types this definition imports
    step_kinds: tuple = ()         # Schedule step kinds it lowers to (each needs a template)
    is_mac = False                 # multiply-accumulates weights (quantized per output channel)
    preserves_codes = False        # moves codes without changing them (shares its input's encoding)
    applies_activation = False     # applies its `activation` attribute to its output
    # which Activation nodes fuse into it as its output encoder: "" none, "elementwise" the
    # same function on every element, "per_channel" also those with a parameter per channel
    # (PRelu: the encoder's rows must be the output channels)
    fuses_activation = ""
    # without an activation, its output is >= 0 whenever its inputs are (a product, a mean)
    sign_follows_inputs = False

    def output_nonnegative(self, node, inputs_nonnegative) -> bool:
        """Whether every value of the node's output is >= 0, given the same of its inputs (an
        iterable, evaluated on demand; the quantizer gives such a tensor unsigned codes)."""
        activation = node.attrs.get("activation")
        if self.applies_activation and not (activation is None and self.sign_follows_inputs):
            return activation_is_nonnegative(activation)
        return all(inputs_nonnegative)

    def keeps_channel_scales(self, node) -> bool:
        """For an op that moves codes: every output value stays in its input's channel, so the
        last layer's int32 accumulators (a scale per channel) may pass through it."""
        return True

    def value_bounds(self, node):
        """(max |x|, min x) of every value the node's output can hold whatever its inputs, when
        the op knows them (a table lookup); None: calibration measures them."""
        return None

    def step_value_range(self, step, input_ranges: list):
        """(lo, hi) of the values a step of this op writes, when it knows them better than its
        output type does (an FPGA sizes its buffers from it); None: the whole type."""
        return None

    def elements_read(self, step, schedule) -> int:
        """Input elements one run of the step reads (a streaming kernel reads one a cycle)."""
        return sum(schedule.buffers[name].size for name in step.inputs)

    def from_onnx(self, node, ctx):
        """ONNX NodeProto -> IR Node, a list of them (in order, each intermediate tensor's
        shape put in ctx.shapes), or None when the node disappears."""
        raise NotImplementedError

    def infer_shape(self, node, in_shapes):
        raise NotImplementedError

    def run_float(self, node, inputs):
        raise NotImplementedError

    def lower(self, node, ctx):
        """IR Node -> a Schedule Step, or None when the node is free (an alias)."""
        raise NotImplementedError

    def run_int(self, step, inputs):
        """The bit-exact integer reference of the step, on a batch."""
        raise NotImplementedError


def value_span(ranges) -> tuple | None:
    """The (lo, hi) that covers every (lo, hi) of `ranges`; None for none."""
    ranges = list(ranges)
    return (min(lo for lo, _ in ranges), max(hi for _, hi in ranges)) if ranges else None


def register(cls):
    """Add an op family to the registry. An IR kind, ONNX op type or step kind has one owner:
    a second registration is a programming error, raised when the op modules are imported."""
    op = cls()
    taken = [f"kind {op.kind}"] if op.kind in _BY_KIND else []
    taken += [f"ONNX op {t} ({_BY_ONNX[t].kind})" for t in op.onnx_types if t in _BY_ONNX]
    taken += [f"step kind {k} ({owner.kind})" for owner in _BY_KIND.values() for k in op.step_kinds
              if k in owner.step_kinds]
    if taken:
        raise RuntimeError(f"op {cls.__name__} registers what another op owns: {', '.join(taken)}")
    _BY_KIND[op.kind] = op
    for t in op.onnx_types:
        _BY_ONNX[t] = op
    return cls


_LOADED = []


def _load_all():
    if _LOADED:
        return
    _LOADED.append(True)
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")


def get_op(kind: str) -> OpDef:
    _load_all()
    return _BY_KIND[kind]


def onnx_op(op_type: str) -> OpDef | None:
    _load_all()
    return _BY_ONNX.get(op_type)


def supported_onnx_ops() -> list[str]:
    _load_all()
    return sorted(_BY_ONNX)


def all_ops() -> dict[str, OpDef]:
    _load_all()
    return dict(_BY_KIND)


def step_op(step_kind: str) -> OpDef:
    _load_all()
    for op in _BY_KIND.values():
        if step_kind in op.step_kinds:
            return op
    raise MCUGenError(f"no op lowers to step kind '{step_kind}'")
