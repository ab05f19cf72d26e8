"""The op registry: one module per op family, each registering an OpDef with a decorator.

An OpDef carries an op's whole lifecycle: its ONNX mapping (frontend), shape inference, the
float kernel (float IR), the lowering to a Schedule step, and the integer reference kernel.
The C for a step kind lives in templates/<target>/ops/<kind>.c.j2.
"""
from __future__ import annotations

import importlib
import pkgutil

from mcugen.errors import MCUGenError

_BY_KIND: dict[str, "OpDef"] = {}
_BY_ONNX: dict[str, "OpDef"] = {}


class OpDef:
    kind: str = ""                 # the IR op name
    onnx_types: tuple = ()         # ONNX op types this definition imports
    step_kinds: tuple = ()         # Schedule step kinds it lowers to (each needs a template)

    def from_onnx(self, node, ctx):
        """ONNX NodeProto -> IR Node (or None when the node disappears)."""
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


def register(cls):
    op = cls()
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
