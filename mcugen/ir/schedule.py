"""The lowered Schedule: integer steps, every constant, the buffers and their arena offsets.

It is the one source of truth: the reference interprets it and the templates render it; neither
recomputes a number. It saves to a directory (schedule.json + constants.npz) so simulate,
verify and report work from a generated project alone.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

CTYPES = {"uint8": "uint8_t", "int8": "int8_t", "uint16": "uint16_t", "int16": "int16_t",
          "int32": "int32_t"}
ITEMSIZE = {"uint8": 1, "int8": 1, "uint16": 2, "int16": 2, "int32": 4}


@dataclass
class Buffer:
    name: str                 # a C identifier
    tensor: str               # the IR tensor it holds
    shape: list               # without the batch dimension
    dtype: str                # a key of CTYPES
    offset: int = 0           # bytes into the arena
    alias_of: str | None = None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.size * ITEMSIZE[self.dtype]


@dataclass
class Step:
    name: str                 # a unique C identifier
    layer: str                # the ONNX node name, for messages and reports
    kind: str                 # step kind: a template per target renders it
    onnx_op: str
    inputs: list              # buffer names
    output: str
    params: dict = field(default_factory=dict)   # scalar ints (shapes, strides, ...)
    consts: dict = field(default_factory=dict)   # name -> integer numpy array
    info: dict = field(default_factory=dict)     # report-only figures (floats allowed)


@dataclass
class Schedule:
    steps: list
    buffers: dict             # name -> Buffer
    input: dict               # buffer, shape, B, signed, mul (float: host-side quantizer)
    output: dict              # buffer, shape, kind "acc" (scales) or "codes" (levels, range)
    arena_bytes: int = 0
    output_transform: str | None = None
    meta: dict = field(default_factory=dict)
    # steps a target runs head by head, their scores held for one head (lower/head_loops.py)
    head_loops: list = field(default_factory=list)

    def step_consts_bytes(self, step) -> int:
        return int(sum(a.nbytes for a in step.consts.values()))

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        arrays, steps = {}, []
        for i, step in enumerate(self.steps):
            record = asdict(step)
            record["consts"] = {}
            for key, value in step.consts.items():
                arrays[f"s{i}__{key}"] = value
                record["consts"][key] = f"s{i}__{key}"
            steps.append(record)
        io_arrays = {}
        for side in ("input", "output"):
            for key, value in getattr(self, side).items():
                if isinstance(value, np.ndarray):
                    arrays[f"{side}__{key}"] = value
                    io_arrays.setdefault(side, []).append(key)
        doc = {
            "steps": steps,
            "buffers": [asdict(b) for b in self.buffers.values()],
            "input": {k: v for k, v in self.input.items() if not isinstance(v, np.ndarray)},
            "output": {k: v for k, v in self.output.items() if not isinstance(v, np.ndarray)},
            "io_arrays": io_arrays,
            "arena_bytes": self.arena_bytes,
            "output_transform": self.output_transform,
            "meta": self.meta,
        }
        if self.head_loops:
            doc["head_loops"] = self.head_loops
        (directory / "schedule.json").write_text(json.dumps(doc, indent=1, default=_jsonable))
        np.savez_compressed(directory / "constants.npz", **arrays)

    @classmethod
    def load(cls, directory: Path) -> "Schedule":
        directory = Path(directory)
        doc = json.loads((directory / "schedule.json").read_text())
        with np.load(directory / "constants.npz") as npz:
            arrays = {k: npz[k] for k in npz.files}
        steps = []
        for record in doc["steps"]:
            record["consts"] = {k: arrays[v] for k, v in record["consts"].items()}
            steps.append(Step(**record))
        buffers = {b["name"]: Buffer(**b) for b in doc["buffers"]}
        sides = {}
        for side in ("input", "output"):
            sides[side] = dict(doc[side])
            for key in doc["io_arrays"].get(side, []):
                sides[side][key] = arrays[f"{side}__{key}"]
        return cls(steps=steps, buffers=buffers, input=sides["input"], output=sides["output"],
                   arena_bytes=doc["arena_bytes"], output_transform=doc["output_transform"],
                   meta=doc["meta"], head_loops=doc.get("head_loops", []))


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not serializable: {type(value)}")
